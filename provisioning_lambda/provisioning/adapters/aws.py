"""boto3 clients with a bounded retry and time budget, and AWS errors mapped to domain ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries import standard

from ..errors import DependencyFailed, Throttled

# Three attempts of at most 2 s to connect and 4 s to read: a single call can never
# outlast API Gateway's 29 s window, and the handler also checks the remaining time.
# Adaptive mode is standard mode plus a client-side rate limiter: once a quota throttles us,
# a warm container slows its own calls down instead of hammering the API.
MAX_ATTEMPTS = 3
CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS},
    connect_timeout=2,
    read_timeout=4,
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


def make_client(service: str, session: boto3.session.Session | None = None) -> Any:
    """A client resolved the standard way (region, credentials, AWS_ENDPOINT_URL)."""
    client = (session or boto3.session.Session()).client(service, config=CLIENT_CONFIG)
    if service == "acm-pca":
        _do_not_retry_quota(client)
    return client


def _do_not_retry_quota(client: Any) -> None:
    """ACM PCA's LimitExceededException is a lifetime quota, not a throttle: fail at once.

    botocore's standard (and adaptive) mode counts it as throttling and would retry it, so the
    registered retry handler is wrapped to pass that one code through.
    """
    name = client.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{name}", f"retry-config-{name}"
    client.meta.events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, MAX_ATTEMPTS)
    client.meta.events.unregister(event, unique_id=unique_id)

    def needs_retry(**kwargs: Any) -> Any:
        response = kwargs.get("response")
        if response is not None and _code_of(response[1]) == "LimitExceededException":
            return None
        return handler.needs_retry(**kwargs)

    client.meta.events.register(event, needs_retry, unique_id=unique_id)


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
        raise DependencyFailed(step) from error
    except BotoCoreError as error:
        raise DependencyFailed(step) from error


def call(step: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    with aws_step(step):
        return fn(**kwargs)
