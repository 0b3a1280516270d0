"""Test helpers shared by the provisioning tests: events, a Lambda context, fault injection."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class FakeLambdaContext:
    """A Lambda context whose remaining time really counts down."""

    function_version = "$LATEST"
    log_stream_name = "2026/01/01/[$LATEST]0"

    def __init__(
        self,
        timeout_seconds: float = 25.0,
        function_name: str = "ProvisioningFunction",
        memory_limit_in_mb: int = 512,
    ) -> None:
        self.function_name = function_name
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def spend(self, seconds: float) -> None:
        """Use up time without waiting for it: a test's stand-in for ``time.sleep``."""
        self._deadline -= seconds


@dataclass
class Device:
    """A device's X25519 half, as the firmware would hold it."""

    dsn: str
    key: x25519.X25519PrivateKey = field(default_factory=x25519.X25519PrivateKey.generate)

    @property
    def public_key_b64(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def body(self) -> str:
        return json.dumps({"DSN": self.dsn, "publicKey": self.public_key_b64})


def unique_dsn(prefix: str = "SN") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def api_event(
    body: str | None,
    sub: str,
    groups: str = "Members",
    method: str = "POST",
    path: str = "/certificate",
) -> dict[str, Any]:
    """The REST proxy event API Gateway sends after the Cognito authorizer accepted a token.

    `path` is the concrete path; for /devices/<dsn>[/certificate] the resource template and
    path parameters are filled in as API Gateway does.
    """
    event: dict[str, Any] = copy.deepcopy(
        json.loads((FIXTURES / "events" / "post_certificate.json").read_text())
    )
    event["body"] = body
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    parts = path.strip("/").split("/")
    if parts[0] == "devices" and len(parts) >= 2:
        resource = "/devices/{dsn}" + ("/certificate" if len(parts) == 3 else "")
        event["resource"] = event["requestContext"]["resourcePath"] = resource
        event["pathParameters"] = {"dsn": parts[1]}
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    claims = event["requestContext"]["authorizer"]["claims"]
    claims["sub"] = sub
    claims["cognito:username"] = sub
    if groups:
        claims["cognito:groups"] = groups
    else:
        del claims["cognito:groups"]
    return event


def error_response(code: str, status: int = 500, message: str = "injected") -> AWSResponse:
    payload = json.dumps({"__type": code, "message": message, "code": code}).encode()

    class _Raw:
        def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
            yield payload

    return AWSResponse(
        "https://injected.invalid",
        status,
        {"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.1"},
        _Raw(),
    )


@dataclass
class Fault:
    """Counts calls of one operation and answers some of them with an AWS error."""

    operation: str
    code: str
    status: int
    times: int | None  # None: every call
    skip: int = 0  # let this many calls through first
    calls: int = 0
    failed: int = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.calls += 1
        if self.calls <= self.skip:
            return None
        if self.times is None or self.failed < self.times:
            self.failed += 1
            # The request must not reach AWS: moto's own before-send handler runs after this
            # one and would carry it out unless the URL points nowhere it knows.
            request.url = "https://fault-injected.invalid/"
            return error_response(self.code, self.status)
        return None


@contextmanager
def fault(
    client: Any,
    operation: str,
    code: str = "InternalFailure",
    status: int = 500,
    times: int | None = None,
    skip: int = 0,
) -> Iterator[Fault]:
    """Inject through botocore's before-send hook, so retries see it like a real error."""
    injected = Fault(operation, code, status, times, skip)
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    client.meta.events.register(event, injected)
    try:
        yield injected
    finally:
        client.meta.events.unregister(event, injected)


@contextmanager
def recording(client: Any, operation: str) -> Iterator[list[dict[str, Any]]]:
    """Record the parameters of every call of one operation."""
    seen: list[dict[str, Any]] = []
    event = f"provide-client-params.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def hook(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    client.meta.events.register(event, hook)
    try:
        yield seen
    finally:
        client.meta.events.unregister(event, hook)


@contextmanager
def delaying(client: Any, operation: str, seconds: float) -> Iterator[None]:
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def hook(**_: Any) -> None:
        time.sleep(seconds)

    client.meta.events.register(event, hook)
    try:
        yield
    finally:
        client.meta.events.unregister(event, hook)


Invoke = Callable[..., dict[str, Any]]
