"""The one place that owns the Powertools logger, tracer and metrics.

Settings (service name, namespace, log level) come from the template's Globals; the one thing
set here is which Powertools warning is not worth a line in the log. Never log events, tokens
or key material: log with keys.
"""

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# A read, or a request refused with a 4xx, has no metric to publish: that is the design, not a
# fault, yet Powertools prints a UserWarning for it into the function's log. The filter names
# that one message (the way Powertools' metrics docs suggest), so every other warning shows.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
