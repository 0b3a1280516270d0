"""The one place that owns the Powertools logger and tracer (settings come from the template)."""

from aws_lambda_powertools import Logger, Tracer

logger = Logger(service="ca-registration")
tracer = Tracer(service="ca-registration")
