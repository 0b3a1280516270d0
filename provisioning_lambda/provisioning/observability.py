"""The one place that owns the Powertools logger, tracer and metrics.

Settings (service name, namespace, log level) come from the template's Globals, so nothing
here is configured in code. Never log events, tokens or key material: log with keys.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
