"""A local stand-in for API Gateway (REST, Lambda proxy integration) in front of real handlers.

Built from the routes the SAM translator produced for the template's API. For each request it
does what API Gateway does before the Lambda runs:

1. route by stage and resource path (unknown route: MISSING_AUTHENTICATION_TOKEN, 403), then
   the stage's throttling when the gateway has one (devstack.apigateway.throttle: a token bucket per
   method from the template's MethodSettings; THROTTLED, 429, with the template's Retry-After);
2. the Cognito authorizer: a token in the Authorization header (raw or "Bearer <token>"),
   RS256 signature against the user pool's JWKS (served by moto), ``iss`` equal to the pool's
   issuer, ``exp`` in the future, ``token_use`` "id" (no OAuth scopes are configured, so an
   access token is refused, as API Gateway does) and ``aud`` one of the pool's app clients;
   failures are UNAUTHORIZED (401; an expired token too);
3. request validation of the body against the route's model (JSON Schema draft 4), for the
   content types the model is mapped to only (a body of another type reaches the Lambda
   unvalidated, as in API Gateway): BAD_REQUEST_BODY (400), with the validator's message in
   ``$context.error.validationErrorString`` (devstack.apigateway.validation);
4. the proxy event, with the token's claims as strings at requestContext.authorizer.claims,
   handed to an ``Invoker`` (devstack.awslambda.runtime): worker processes in the offline stack. A
   function error or a malformed proxy result is INTEGRATION_FAILURE (502), and so is an
   invocation Lambda throttles because the function's reserved concurrency is busy (500 by
   API Gateway's default; the template's StatusCode applies to both); no answer within
   the integration timeout (29 s) is INTEGRATION_TIMEOUT (504), and the invocation runs on
   until the function's own Timeout, as in AWS.

A method with a mock integration (the CORS preflight the template's ``Cors`` declares: OPTIONS
on each resource, no authorizer) is answered after steps 1 and 2 from its integration's default
response: its status, its static headers (Access-Control-Allow-Origin naming the template's
AppOrigin, whatever the request's Origin, as in AWS: a page of another origin is refused by
its browser) and its body.

Every error of the gateway itself is rendered from the template's GatewayResponses
(devstack.apigateway.gateway_responses), falling back to API Gateway's defaults for types the
template does not define; their static headers (the template's Access-Control-Allow-Origin
among them) come with each.

The HTTP side serves requests concurrently, one thread each, and never waits on a client for
ever: a socket read timeout (10 s: 408, then the connection is closed), a Content-Length that
is not one non-negative number (400), a body over 10 MB (413, unread), a chunked body (read,
within the same limits), a body shorter than its Content-Length (the connection is closed).

Not emulated: authorizer result caching, account-level throttling, resource policies, usage
plans, request mapping templates.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import jwt

from devstack.apigateway.api_model import MockRoute
from devstack.apigateway.gateway_responses import GatewayResponses
from devstack.apigateway.throttle import StageThrottle
from devstack.apigateway.validation import body_errors
from devstack.awslambda.runtime import FunctionError, FunctionSpec, Invoker
from devstack.cloudformation.deployer import ApiSpec, CognitoAuthorizer, Deployment, Route
from devstack.errors import DevstackError
from devstack.http_limits import (
    CONTENT_LENGTH,
    MAX_CONNECTIONS,
    READ_TIMEOUT,
    REQUEST_READ_LIMIT,
    BoundedHTTPServer,
    BoundedRequestHandler,
)

JwksLoader = Callable[[str], dict[str, Any]]

_MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT = 29.0  # seconds API Gateway waits for a Lambda integration


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class AuthError(Exception):
    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


class _IntegrationTimeout(Exception):
    pass


def _aws_date(epoch: Any) -> str:
    """The way the REST API's Cognito authorizer renders exp/iat/auth_time claims."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def claims_as_strings(claims: dict[str, Any]) -> dict[str, str]:
    """Claims as API Gateway passes them to a REST proxy integration: all strings."""
    result: dict[str, str] = {}
    for key, value in claims.items():
        if key in ("exp", "iat", "auth_time") and isinstance(value, int | float):
            result[key] = _aws_date(value)
        elif isinstance(value, list):
            result[key] = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        else:
            result[key] = str(value)
    return result


def moto_jwks_loader(endpoint_url: str) -> JwksLoader:
    """Fetch a pool's JWKS where moto serves it: <endpoint>/<pool id>/.well-known/jwks.json."""

    def load(pool_id: str) -> dict[str, Any]:
        url = f"{endpoint_url.rstrip('/')}/{pool_id}/.well-known/jwks.json"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our moto URL
            document: dict[str, Any] = json.loads(response.read())
        return document

    return load


class CognitoVerifier:
    """What a COGNITO_USER_POOLS authorizer checks, minus its result cache."""

    def __init__(
        self,
        authorizer: CognitoAuthorizer,
        *,
        region: str,
        jwks_loader: JwksLoader,
        clock: Callable[[], float] = time.time,
        leeway: float = 0.0,
    ) -> None:
        self._authorizer = authorizer
        self._jwks_loader = jwks_loader
        self._clock = clock
        self._leeway = leeway
        self._issuers = {
            f"https://cognito-idp.{region}.amazonaws.com/{pool}": pool
            for pool in authorizer.user_pool_ids
        }
        self._keys: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _key(self, pool_id: str, kid: str) -> Any:
        with self._lock:
            if pool_id not in self._keys:
                try:
                    self._keys[pool_id] = self._jwks_loader(pool_id)
                except (OSError, ValueError) as exc:
                    raise AuthError() from exc
            jwks = self._keys[pool_id]
        for key in jwks.get("keys", []):
            if key.get("kid") == kid:
                return jwt.PyJWK.from_dict(key).key
        raise AuthError()

    def verify(self, header_value: str | None) -> dict[str, Any]:
        token = (header_value or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise AuthError()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError() from exc
        pool_id = self._issuers.get(str(unverified.get("iss")))
        if pool_id is None or header.get("alg") != "RS256":
            raise AuthError()
        key = self._key(pool_id, str(header.get("kid")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                # Expiry is checked below against the injectable clock; aud by hand since an
                # authorizer accepts any app client of its pools.
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthError() from exc
        if claims.get("token_use") != "id":
            # No OAuth scopes on the method: API Gateway wants an ID token and refuses access
            # tokens with 401.
            raise AuthError()
        if claims.get("aud") not in self._authorizer.client_ids:
            raise AuthError()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + self._leeway <= self._clock():
            raise AuthError("The incoming token has expired")
        return claims


def _route_regex(path: str) -> re.Pattern[str]:
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            pattern += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            pattern += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            pattern += re.escape(part)
    return re.compile(pattern + "$")


class LocalApi:
    """The request pipeline, independent of the HTTP server (tests can drive it directly)."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        endpoint_url: str | None,
        jwks_loader: JwksLoader | None = None,
        clock: Callable[[], float] = time.time,
        leeway: float = 0.0,
        api: ApiSpec | None = None,
        invoker: Invoker,
        integration_timeout: float = INTEGRATION_TIMEOUT,
        throttle: StageThrottle | None = None,
    ) -> None:
        self.deployment = deployment
        self.api = api or deployment.api
        self.endpoint_url = endpoint_url
        if jwks_loader is None:
            if endpoint_url is None:
                raise DevstackError("the gateway needs endpoint_url or a jwks_loader")
            jwks_loader = moto_jwks_loader(endpoint_url)
        self._verifiers: dict[str, CognitoVerifier] = {}
        authorizers = [r.authorizer for r in self.api.routes]
        authorizers += [mock.authorizer for mock in self.api.mock_routes]
        for authorizer in authorizers:
            if authorizer and authorizer.name not in self._verifiers:
                self._verifiers[authorizer.name] = CognitoVerifier(
                    authorizer,
                    region=deployment.region,
                    jwks_loader=jwks_loader,
                    clock=clock,
                    leeway=leeway,
                )
        self._routes = [(route, _route_regex(route.path)) for route in self.api.routes]
        self._mock_routes = [(mock, _route_regex(mock.path)) for mock in self.api.mock_routes]
        self._validators = {
            route.path + route.method: jsonschema.Draft4Validator(route.schema)
            for route in self.api.routes
            if route.validate_body and route.schema is not None
        }
        self._invoker = invoker
        self.integration_timeout = integration_timeout
        self.throttle = throttle

    @property
    def gateway_responses(self) -> GatewayResponses:
        return self.api.gateway_responses

    def error(
        self,
        response_type: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str = "",
        validation_error: str = "",
    ) -> GatewayResponse:
        """API Gateway's own answer, as the template's GatewayResponses shape it."""
        rendered = self.gateway_responses.render(
            response_type,
            message,
            status=status,
            request_id=request_id,
            validation_error=validation_error,
        )
        headers = dict(rendered.headers)
        if request_id:
            headers["x-amzn-RequestId"] = request_id
        return GatewayResponse(rendered.status, headers, rendered.body)

    def _integrate(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        """The invoker's result, or _IntegrationTimeout after ``integration_timeout``."""
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(self._invoker(function, event))
            except BaseException as exc:  # handed to the waiting request thread
                future.set_exception(exc)

        threading.Thread(target=run, name=f"integration-{function.logical_id}", daemon=True).start()
        try:
            return future.result(timeout=self.integration_timeout)
        except TimeoutError:
            if future.done():  # the function itself raised a TimeoutError
                raise
            raise _IntegrationTimeout from None

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route, regex in self._routes:
            found = regex.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _match_mock(self, method: str, path: str) -> MockRoute | None:
        for mock, regex in self._mock_routes:
            if regex.match(path) and mock.method in (method, "ANY"):
                return mock
        return None

    def _mock(
        self, mock: MockRoute, header_map: dict[str, str], request_id: str
    ) -> GatewayResponse:
        """A mock integration's answer: the same for every caller and every Origin."""
        if mock.authorizer is not None:
            try:
                self._verifiers[mock.authorizer.name].verify(
                    header_map.get(mock.authorizer.header.lower())
                )
            except AuthError as exc:
                return self.error("UNAUTHORIZED", exc.message, request_id=request_id)
        headers = {
            "Content-Type": "application/json",
            **mock.headers,
            "x-amzn-RequestId": request_id,
        }
        return GatewayResponse(mock.status, headers, mock.body.encode())

    def handle(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> GatewayResponse:
        request_id = str(uuid.uuid4())
        split = urlsplit(raw_path)
        stage_prefix = f"/{self.api.stage}"
        path = split.path
        no_route = ("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
        if not (path == stage_prefix or path.startswith(stage_prefix + "/")):
            return self.error(*no_route, request_id=request_id)
        resource_path = path[len(stage_prefix) :] or "/"
        matched = self._match(method, resource_path)
        if matched is None:
            mock = self._match_mock(method, resource_path)
            if mock is None:
                return self.error(*no_route, request_id=request_id)
            if self.throttle is not None and not self.throttle.admit(mock.path, method):
                return self.error("THROTTLED", "Too Many Requests", request_id=request_id)
            header_map = {name.lower(): value for name, value in headers}
            return self._mock(mock, header_map, request_id)
        route, path_parameters = matched
        if self.throttle is not None and not self.throttle.admit(route.path, method):
            return self.error("THROTTLED", "Too Many Requests", request_id=request_id)
        header_map = {name.lower(): value for name, value in headers}

        claims: dict[str, Any] | None = None
        if route.authorizer is not None:
            verifier = self._verifiers[route.authorizer.name]
            try:
                claims = verifier.verify(header_map.get(route.authorizer.header.lower()))
            except AuthError as exc:
                return self.error("UNAUTHORIZED", exc.message, request_id=request_id)

        validator = self._validators.get(route.path + route.method)
        if validator is not None and _model_applies(route, header_map.get("content-type")):
            problems = body_errors(validator, body)
            if problems is not None:
                return self.error(
                    "BAD_REQUEST_BODY",
                    "Invalid request body",
                    request_id=request_id,
                    validation_error=problems,
                )

        event = self._event(
            route, method, split.query, resource_path, path_parameters, headers, body, claims
        )
        event["requestContext"]["requestId"] = request_id
        event["requestContext"]["identity"]["sourceIp"] = source_ip
        function = self.deployment.functions[route.function]
        failed = ("INTEGRATION_FAILURE", "Internal server error")
        try:
            result = self._integrate(function, event)
        except _IntegrationTimeout:
            return self.error(
                "INTEGRATION_TIMEOUT", "Endpoint request timed out", request_id=request_id
            )
        except FunctionError as exc:
            # Lambda throttled the invocation (the function's reservation is busy): API Gateway
            # answers 500 under INTEGRATION_FAILURE; a function that ran and failed is a 502
            throttled = exc.error_type == "TooManyRequestsException"
            status = HTTPStatus.INTERNAL_SERVER_ERROR if throttled else HTTPStatus.BAD_GATEWAY
            return self.error(*failed, status=status, request_id=request_id)
        except Exception:  # the Lambda failed: API Gateway hides why
            return self.error(*failed, status=HTTPStatus.BAD_GATEWAY, request_id=request_id)
        response = _proxy_response(result)
        if response is None:  # a malformed proxy result
            return self.error(*failed, status=HTTPStatus.BAD_GATEWAY, request_id=request_id)
        response.headers.setdefault("x-amzn-RequestId", request_id)
        return response

    def _event(
        self,
        route: Route,
        method: str,
        query: str,
        resource_path: str,
        path_parameters: dict[str, str],
        headers: list[tuple[str, str]],
        body: bytes,
        claims: dict[str, Any] | None,
    ) -> dict[str, Any]:
        multi_headers: dict[str, list[str]] = {}
        for name, value in headers:
            multi_headers.setdefault(name, []).append(value)
        multi_query = {k: v for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            text, is_base64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(body).decode(), True
        now = datetime.now(tz=UTC)
        request_context: dict[str, Any] = {
            "accountId": self.deployment.account_id,
            "apiId": self.api.api_id,
            "stage": self.api.stage,
            "resourceId": route.path,
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{self.api.stage}{resource_path}",
            "protocol": "HTTP/1.1",
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": "127.0.0.1",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": _first(multi_headers, "user-agent")},
        }
        if claims is not None:
            request_context["authorizer"] = {"claims": claims_as_strings(claims)}
        return {
            "resource": route.path,
            "path": resource_path,
            "httpMethod": method,
            "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": request_context,
            "body": text if body else None,
            "isBase64Encoded": is_base64,
        }


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    for key, values in headers.items():
        if key.lower() == name:
            return values[0]
    return None


def _model_applies(route: Route, content_type: str | None) -> bool:
    """Whether API Gateway validates this request's body against the route's model.

    Only for the content types the model is mapped to (``$default``: every type); a request
    without a Content-Type is taken as application/json.
    """
    media_type = (content_type or "application/json").split(";", 1)[0].strip().lower()
    mapped = {kind.lower() for kind in route.body_content_types}
    return media_type in mapped or "$default" in mapped


def _proxy_response(result: Any) -> GatewayResponse | None:
    """Map a Lambda proxy result; None when it is malformed (a 502 in API Gateway)."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return None
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    body = result.get("body") or ""
    if not isinstance(body, str):
        return None
    try:
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    except ValueError:
        return None
    headers.setdefault("Content-Type", "application/json")
    return GatewayResponse(result["statusCode"], headers, raw)


class _Refused(Exception):
    """A request the gateway answers without reading on: the connection is closed after."""

    def __init__(self, response_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.response_type = response_type
        self.message = message
        self.status = status


class _ClientGone(Exception):
    """The client closed the connection before sending the whole body."""


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")


class _Handler(BoundedRequestHandler):
    server: GatewayServer
    raw_requestline: bytes  # set by handle_one_request before parse_request
    protocol_version = "HTTP/1.1"
    # http.server's own refusals (a malformed request line, too many or too long headers, an
    # unknown method) answered as the API's other errors are, never as an HTML page.
    _REFUSALS: ClassVar[dict[int, tuple[str, str]]] = {
        HTTPStatus.REQUEST_URI_TOO_LONG: ("REQUEST_TOO_LARGE", "Request Too Long"),
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ("REQUEST_TOO_LARGE", "Request Too Long"),
        HTTPStatus.NOT_IMPLEMENTED: (
            "MISSING_AUTHENTICATION_TOKEN",
            "Missing Authentication Token",
        ),
    }

    def parse_request(self) -> bool:
        if len(self.raw_requestline.split()) == 2:  # no version: HTTP/0.9, which API Gateway
            self.command, self.request_version = "", "HTTP/1.1"  # refuses; its headers never
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")  # come
            self.send_error(HTTPStatus.BAD_REQUEST)
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # parsing failed early: answer in HTTP/1.1 anyway
            self.request_version = "HTTP/1.1"
        response_type, text = self._REFUSALS.get(code, ("DEFAULT_4XX", "Bad Request"))
        status = HTTPStatus.BAD_REQUEST if code >= 500 and code != 501 else code
        if response_type == "MISSING_AUTHENTICATION_TOKEN":
            response = self.server.api.error(response_type, text)
        else:
            response = self.server.api.error(response_type, text, status=int(status))
        self._answer(response)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _ClientGone
        return data

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise _ClientGone
            size_text = size_line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise _Refused("DEFAULT_4XX", "Bad Request", 400)
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > _MAX_BODY:
                raise _Refused("REQUEST_TOO_LARGE", "Request Too Long")
            body += self._read_exactly(size)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _Refused("DEFAULT_4XX", "Bad Request", 400)
        for _ in range(100):  # trailers, up to the blank line
            if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                break
        return bytes(body)

    def _read_body(self) -> bytes:
        lengths = self.headers.get_all("Content-Length") or []
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding:
            if encoding != "chunked" or lengths:
                raise _Refused("DEFAULT_4XX", "Bad Request", 400)
            return self._read_chunked()
        if not lengths:
            return b""
        values = {value.strip() for value in lengths}
        text = values.pop()
        if values or not CONTENT_LENGTH.fullmatch(text):
            raise _Refused("DEFAULT_4XX", "Bad Request", 400)
        length = int(text)
        if length > _MAX_BODY:
            raise _Refused("REQUEST_TOO_LARGE", "Request Too Long")
        return self._read_exactly(length)

    def _serve(self) -> None:
        api = self.server.api
        try:
            body = self._read_body()
        except _ClientGone:
            self.close_connection = True
            return
        except TimeoutError:
            self.close_connection = True
            response = api.error("DEFAULT_4XX", "Request Timeout", status=408)
        except _Refused as refused:
            self.close_connection = True
            response = api.error(refused.response_type, refused.message, status=refused.status)
        else:
            self.request_read()  # the request is in; the integration may take its 29 s
            response = api.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            for observer in self.server.observers:  # an access log for whoever wants one
                observer(self.command, self.path, response)
        self._answer(response)

    def _answer(self, response: GatewayResponse) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:  # the client went away; nobody left to answer
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log is not None:
            self.server.log(f"gateway: {self.address_string()} {format % args}")


class GatewayServer(BoundedHTTPServer):
    """The HTTP side: ``start()``, ``api_url`` (stage included), ``stop()``."""

    thread_name = "gateway"

    def __init__(
        self,
        api: LocalApi,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
        read_timeout: float = READ_TIMEOUT,
        request_read_limit: float = REQUEST_READ_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        # StreamRequestHandler applies ``timeout`` to each connection's socket.
        handler = type("_TimedHandler", (_Handler,), {"timeout": read_timeout})
        try:
            super().__init__(
                (host, port),
                handler,
                request_read_limit=request_read_limit,
                max_connections=max_connections,
            )
        except OSError as exc:
            raise DevstackError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        self.api = api
        self.log = log
        self.read_timeout = read_timeout
        # Called with (method, path, response) for every request the pipeline answered.
        self.observers: list[Callable[[str, str, GatewayResponse], None]] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/{self.api.api.stage}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed mid-request: noted in the log, not dumped on stderr."""
        if self.log is not None:
            self.log(f"gateway: connection from {client_address[0]} failed")
