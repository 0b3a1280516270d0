"""boto3 clients with a bounded retry and time budget, and AWS errors mapped to domain ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries import standard

from provisioning.domain.budget import ATTEMPT_SECONDS, Budget
from provisioning.domain.errors import DependencyFailed, OutOfTime, Throttled

# At most three attempts of at most 1 s to connect and 3 s to read (budget.ATTEMPT_SECONDS),
# and never an attempt or a retry that could not end before the request's hard stop: a call
# then fails with OutOfTime instead of outliving the function.
# Adaptive mode is standard mode plus a client-side rate limiter: once a quota throttles us,
# a warm container slows its own calls down instead of hammering the API.
MAX_ATTEMPTS = 3
CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS},
    connect_timeout=1,
    read_timeout=ATTEMPT_SECONDS - 1,
    max_pool_connections=16,
)

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottledException",
    }
)

BudgetSource = Callable[[], Budget | None]


class NoTimeForAttempt(Exception):
    """Raised before sending when the request's budget cannot hold one more attempt."""


def make_client(
    service: str,
    session: boto3.session.Session | None = None,
    budget: BudgetSource = lambda: None,
    endpoint_url: str | None = None,
) -> Any:
    """A client resolved the standard way (region, credentials, AWS_ENDPOINT_URL), whose
    attempts and retries stay within the budget of the request in progress. ``endpoint_url``
    only for a service whose endpoint is looked up at run time (iot-data)."""
    client = (session or boto3.session.Session()).client(
        service, config=CLIENT_CONFIG, endpoint_url=endpoint_url
    )
    _bound_retries(client, budget)
    return client


def _bound_retries(client: Any, budget: BudgetSource) -> None:
    """Wrap botocore's retry handler: no retry past the budget, and for ACM PCA none of
    LimitExceededException, a lifetime quota (standard mode counts it as throttling)."""
    name = client.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{name}", f"retry-config-{name}"
    client.meta.events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, MAX_ATTEMPTS)
    client.meta.events.unregister(event, unique_id=unique_id)

    def needs_retry(**kwargs: Any) -> Any:
        response = kwargs.get("response")
        if isinstance(kwargs.get("caught_exception"), NoTimeForAttempt):
            return None
        if (
            name == "acm-pca"
            and response is not None
            and _code_of(response[1]) == "LimitExceededException"
        ):
            return None
        delay = handler.needs_retry(**kwargs)
        left = budget()
        if delay is not None and left is not None and not left.allows(delay + ATTEMPT_SECONDS):
            return None
        return delay

    def before_send(**_: Any) -> None:
        left = budget()
        if left is not None and not left.allows(ATTEMPT_SECONDS):
            raise NoTimeForAttempt()

    client.meta.events.register(event, needs_retry, unique_id=unique_id)
    # First, so that nothing (moto's in-process mock included) sees a request we refuse.
    client.meta.events.register_first(f"before-send.{name}", before_send)


def _code_of(parsed: Any) -> str:
    if isinstance(parsed, dict):
        return str(parsed.get("Error", {}).get("Code", ""))
    return ""


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_step(step: str) -> Iterator[None]:
    """Turn whatever an AWS call raises into a domain error naming the step."""
    try:
        yield
    except ClientError as error:
        if error_code(error) in THROTTLING_CODES:
            raise Throttled(step) from error
        raise DependencyFailed(
            step, operation=error.operation_name, aws_error=error_code(error)
        ) from error
    except NoTimeForAttempt as error:
        raise OutOfTime(step) from error
    except BotoCoreError as error:
        # No answer (a timeout, a closed connection): its class is the error; the operation,
        # where botocore names it
        operation = str(getattr(error, "kwargs", {}).get("operation_name", ""))
        raise DependencyFailed(step, operation=operation, aws_error=type(error).__name__) from error


def call(step: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    with aws_step(step):
        return fn(**kwargs)
