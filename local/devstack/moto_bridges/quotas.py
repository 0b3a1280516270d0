"""AWS API request-rate quotas on the emulated services (``devstack up --quotas``).

moto answers every call at once; AWS throttles each API operation at a per-account rate. With
quotas applied, the moto server of the offline stack gets a WSGI middleware in front of its
app: each request is named by service and operation (the service from the SigV4 credential
scope, the operation from ``X-Amz-Target`` for JSON-protocol services such as ACM PCA, or from
the method and path against botocore's model of the REST API for IoT; the RPC v2 CBOR path
too), and a token bucket per
(service, operation) admits it or answers what AWS answers when a quota throttles a call:
HTTP 400 with ``ThrottlingException`` (body ``__type`` and the ``x-amzn-ErrorType`` header).
botocore counts that code as throttling, so the Lambda's adaptive retry mode slows its own
calls down, as it would in AWS.

Why a middleware and not patches of moto's ``*Response`` classes: it touches only this stack's
server (nothing process-wide, nothing to undo), sees requests exactly as they arrive over HTTP,
and needs no knowledge of moto's dispatch. It needs one thing from moto: the WSGI server
``ThreadedMotoServer`` keeps in ``_server``, whose ``app`` is wrapped before any request.

The rates are AWS's default quotas per account and Region (docs/cost.md). A bucket holds one
second of its rate (AWS publishes rates, not burst sizes) and starts full. DynamoDB on demand
needs none at this scale; operations not in the table are never throttled.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
from botocore.exceptions import UnknownServiceError

from devstack.apigateway.throttle import Clock, TokenBucket
from devstack.errors import DevstackError

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Quota:
    """An operation's default request rate (calls per second, per account and Region)."""

    service: str  # the SigV4 signing name: acm-pca, iot
    operation: str  # the API operation, e.g. IssueCertificate
    rate: float
    source: str  # where the figure comes from

    @property
    def burst(self) -> float:
        return max(1.0, self.rate)


# From docs/cost.md. CreateThing and AttachThingPrincipal are documented there as "15-100/s":
# the lower end is used.
DEFAULT_QUOTAS: tuple[Quota, ...] = (
    Quota("acm-pca", "IssueCertificate", 25, "docs/cost.md"),
    Quota("acm-pca", "GetCertificate", 75, "docs/cost.md"),
    Quota("acm-pca", "RevokeCertificate", 20, "docs/cost.md"),
    Quota("acm-pca", "GetCertificateAuthorityCertificate", 20, "docs/cost.md"),
    Quota("iot", "RegisterCertificate", 10, "docs/cost.md"),
    Quota("iot", "RegisterCertificateWithoutCA", 10, "as RegisterCertificate"),
    Quota("iot", "AttachPolicy", 15, "docs/cost.md"),
    Quota("iot", "CreateThing", 15, "docs/cost.md (15-100/s: the lower end)"),
    Quota("iot", "AttachThingPrincipal", 15, "docs/cost.md (15-100/s: the lower end)"),
    Quota("iot", "CreatePolicy", 10, "docs/cost.md"),
    Quota("iot", "UpdateCertificate", 10, "assumed: not confirmed against AWS's table"),
)

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/[0-9]{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
_THROTTLING_CODE = "ThrottlingException"
_RPC_V2_PATH = re.compile(r"/service/[^/]+/operation/([^/]+)$")


def signing_service(authorization: str | None) -> str | None:
    """The service a SigV4-signed request is for, from its credential scope."""
    found = _CREDENTIAL_SCOPE.search(authorization or "")
    return found.group(1) if found else None


@dataclass(frozen=True)
class _RestOperation:
    name: str
    method: str
    pattern: re.Pattern[str]
    literal_length: int  # more literal characters: a more specific match


def _uri_pattern(request_uri: str) -> tuple[re.Pattern[str], int]:
    path = request_uri.split("?", 1)[0]
    regex, literal = "", 0
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            regex += ".+"
        elif part.startswith("{"):
            regex += "[^/]+"
        else:
            regex += re.escape(part)
            literal += len(part)
    return re.compile(regex + "/?$"), literal


class OperationResolver:
    """Names the operation of a request to one service, from botocore's model of its API."""

    def __init__(self, service: str) -> None:
        model = _service_model(service)
        self._names = set(model.operation_names)
        self._target_prefix = str(model.metadata.get("targetPrefix", ""))
        self._operations: list[_RestOperation] = []
        for name in model.operation_names:
            http = model.operation_model(name).http
            pattern, literal = _uri_pattern(str(http.get("requestUri", "/")))
            self._operations.append(
                _RestOperation(name, str(http.get("method", "POST")).upper(), pattern, literal)
            )

    def resolve(self, method: str, path: str, target: str | None = None) -> str | None:
        """The operation: from ``X-Amz-Target`` (JSON protocol), the RPC v2 path
        (``/service/<name>/operation/<Operation>``), else the REST method and path."""
        if target:
            prefix, _, operation = target.rpartition(".")
            return operation if prefix == self._target_prefix else None
        rpc = _RPC_V2_PATH.match(path)
        if rpc:
            return rpc.group(1) if rpc.group(1) in self._names else None
        matches = [
            operation
            for operation in self._operations
            if operation.method == method.upper() and operation.pattern.match(path)
        ]
        best = max(matches, key=lambda operation: operation.literal_length, default=None)
        return best.name if best else None


@cache
def _service_model(service: str) -> Any:
    """botocore's model of a service whose signing name is also its model name (acm-pca, iot)."""
    try:
        model = botocore.session.get_session().get_service_model(service)
    except UnknownServiceError as exc:
        raise DevstackError(f"botocore has no model of the service {service!r}") from exc
    if model.signing_name != service:
        raise DevstackError(f"the service {service!r} signs as {model.signing_name!r}")
    return model


class QuotaLimiter:
    """A token bucket per (service, operation) of the quota table, and what each admitted."""

    def __init__(self, quotas: Iterable[Quota] = DEFAULT_QUOTAS, *, clock: Clock = time.monotonic):
        self.quotas = {(quota.service, quota.operation): quota for quota in quotas}
        self._clock = clock
        self._buckets = {
            key: TokenBucket(quota.rate, quota.burst, clock=clock)
            for key, quota in self.quotas.items()
        }
        self.admitted: Counter[tuple[str, str]] = Counter()
        self.throttled: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[str] = Counter()  # every request seen, by service
        self._lock = threading.Lock()

    @property
    def services(self) -> set[str]:
        return {service for service, _ in self.quotas}

    def scaled(self, factor: float) -> QuotaLimiter:
        """The same table with every rate multiplied by ``factor`` (a fresh limiter)."""
        return QuotaLimiter(
            [
                dataclasses.replace(quota, rate=quota.rate * factor)
                for quota in self.quotas.values()
            ],
            clock=self._clock,
        )

    def count(self, service: str) -> None:
        with self._lock:
            self.calls[service] += 1

    def admit(self, service: str, operation: str) -> bool:
        """Whether the call may proceed; calls outside the table always may."""
        bucket = self._buckets.get((service, operation))
        allowed = bucket is None or bucket.try_take()
        if bucket is not None:
            with self._lock:
                (self.admitted if allowed else self.throttled)[(service, operation)] += 1
        return allowed


class QuotaMiddleware:
    """WSGI middleware: a call over its operation's quota is answered ThrottlingException."""

    def __init__(self, app: WsgiApp, limiter: QuotaLimiter) -> None:
        self.app = app
        self.limiter = limiter
        self._resolvers = {service: OperationResolver(service) for service in limiter.services}

    def operation_of(self, environ: Mapping[str, Any]) -> tuple[str, str] | None:
        service = signing_service(environ.get("HTTP_AUTHORIZATION"))
        if service is not None:
            self.limiter.count(service)
        resolver = self._resolvers.get(service or "")
        if service is None or resolver is None:
            return None
        operation = resolver.resolve(
            str(environ.get("REQUEST_METHOD", "GET")),
            str(environ.get("PATH_INFO", "/")),
            environ.get("HTTP_X_AMZ_TARGET"),
        )
        return (service, operation) if operation else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        called = self.operation_of(environ)
        if called is None or self.limiter.admit(*called):
            return self.app(environ, start_response)
        return self._throttled(environ, start_response)

    def _throttled(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        _drain(environ)
        error = {"__type": _THROTTLING_CODE, "message": "Rate exceeded"}
        headers = [("x-amzn-ErrorType", _THROTTLING_CODE), ("x-amzn-RequestId", str(uuid.uuid4()))]
        if environ.get("HTTP_SMITHY_PROTOCOL") == "rpc-v2-cbor":
            body = _cbor_text_map(error)
            headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
        elif environ.get("HTTP_X_AMZ_TARGET"):
            body = json.dumps(error).encode()
            headers.append(("Content-Type", "application/x-amz-json-1.1"))
        else:
            body = json.dumps(error).encode()
            headers.append(("Content-Type", "application/json"))
        start_response("400 Bad Request", [*headers, ("Content-Length", str(len(body)))])
        yield body


def _cbor_text_map(values: Mapping[str, str]) -> bytes:
    """A CBOR map of short text strings (the error body of the RPC v2 CBOR protocol)."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        if length < 256:
            return bytes([major << 5 | 24, length])
        return bytes([major << 5 | 25]) + length.to_bytes(2, "big")

    out = bytearray(head(5, len(values)))
    for key, value in values.items():
        for text in (key.encode(), value.encode()):
            out += head(3, len(text)) + text
    return bytes(out)


def _drain(environ: Mapping[str, Any]) -> None:
    """Read the unread body, so the connection can carry the client's next request."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    if stream is not None and length > 0:
        stream.read(length)


def apply_quotas(moto_server: Any, limiter: QuotaLimiter | None = None) -> QuotaLimiter:
    """Put the quota middleware in front of a started ``ThreadedMotoServer``'s app."""
    limiter = limiter or QuotaLimiter()
    server = getattr(moto_server, "_server", None)
    if server is None or not hasattr(server, "app"):
        raise DevstackError(
            "cannot apply quotas: this moto's ThreadedMotoServer keeps no WSGI server in _server "
            "(start it first; a newer moto may have moved it)"
        )
    server.app = QuotaMiddleware(server.app, limiter)
    return limiter
