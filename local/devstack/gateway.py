"""A local stand-in for API Gateway (REST, Lambda proxy integration) in front of real handlers.

Built from the routes the SAM translator produced for the template's API. For each request it
does what API Gateway does before the Lambda runs:

1. route by stage and resource path (unknown route: 403 "Missing Authentication Token");
2. the Cognito authorizer: a token in the Authorization header (raw or "Bearer <token>"),
   RS256 signature against the user pool's JWKS (served by moto), ``iss`` equal to the pool's
   issuer, ``exp`` in the future, ``token_use`` "id" (no OAuth scopes are configured, so an
   access token is refused, as API Gateway does) and ``aud`` one of the pool's app clients;
   failures answer 401 {"message": "Unauthorized"} (expiry: "The incoming token has expired");
3. request validation of the body against the route's model (JSON Schema draft 4): 400
   {"message": "Invalid request body"};
4. the proxy event, with the token's claims as strings at requestContext.authorizer.claims,
   and the real handler invoked in-process (devstack.runtime) with the function's environment
   plus AWS_ENDPOINT_URL, so the unchanged Lambda code talks to the moto server.

Not emulated: authorizer result caching, throttling and quotas, resource policies, usage
plans, mapping templates, the 29 s integration timeout (a slow handler is not cut off).
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
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import jwt

from devstack.deployer import ApiSpec, CognitoAuthorizer, Deployment, Route
from devstack.errors import DevstackError
from devstack.runtime import FunctionSpec, LambdaContext, invoke

JwksLoader = Callable[[str], dict[str, Any]]
Invoker = Callable[[FunctionSpec, dict[str, Any], LambdaContext], Any]

_MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class AuthError(Exception):
    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


def _json_response(status: int, payload: dict[str, Any]) -> GatewayResponse:
    body = json.dumps(payload).encode()
    return GatewayResponse(status, {"Content-Type": "application/json"}, body)


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
        invoker: Invoker | None = None,
    ) -> None:
        self.deployment = deployment
        self.api = api or deployment.api
        self.endpoint_url = endpoint_url
        if jwks_loader is None:
            if endpoint_url is None:
                raise DevstackError("the gateway needs endpoint_url or a jwks_loader")
            jwks_loader = moto_jwks_loader(endpoint_url)
        self._verifiers: dict[str, CognitoVerifier] = {}
        for route in self.api.routes:
            if route.authorizer and route.authorizer.name not in self._verifiers:
                self._verifiers[route.authorizer.name] = CognitoVerifier(
                    route.authorizer,
                    region=deployment.region,
                    jwks_loader=jwks_loader,
                    clock=clock,
                    leeway=leeway,
                )
        self._routes = [(route, _route_regex(route.path)) for route in self.api.routes]
        self._validators = {
            route.path + route.method: jsonschema.Draft4Validator(route.schema)
            for route in self.api.routes
            if route.validate_body and route.schema is not None
        }
        self._invoker = invoker or self._invoke

    def _invoke(self, function: FunctionSpec, event: dict[str, Any], ctx: LambdaContext) -> Any:
        return invoke(
            function,
            event,
            region=self.deployment.region,
            endpoint_url=self.endpoint_url,
            context=ctx,
        )

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route, regex in self._routes:
            found = regex.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

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
        if not (path == stage_prefix or path.startswith(stage_prefix + "/")):
            return _json_response(HTTPStatus.FORBIDDEN, {"message": "Missing Authentication Token"})
        resource_path = path[len(stage_prefix) :] or "/"
        matched = self._match(method, resource_path)
        if matched is None:
            return _json_response(HTTPStatus.FORBIDDEN, {"message": "Missing Authentication Token"})
        route, path_parameters = matched
        header_map = {name.lower(): value for name, value in headers}

        claims: dict[str, Any] | None = None
        if route.authorizer is not None:
            verifier = self._verifiers[route.authorizer.name]
            try:
                claims = verifier.verify(header_map.get(route.authorizer.header.lower()))
            except AuthError as exc:
                return _json_response(HTTPStatus.UNAUTHORIZED, {"message": exc.message})

        validator = self._validators.get(route.path + route.method)
        if validator is not None:
            try:
                document = json.loads(body) if body else None
            except ValueError:
                document = None
                valid = False
            else:
                valid = document is not None and validator.is_valid(document)
            if not valid:
                return _json_response(HTTPStatus.BAD_REQUEST, {"message": "Invalid request body"})

        event = self._event(
            route, method, split.query, resource_path, path_parameters, headers, body, claims
        )
        event["requestContext"]["requestId"] = request_id
        event["requestContext"]["identity"]["sourceIp"] = source_ip
        function = self.deployment.functions[route.function]
        try:
            result = self._invoker(function, event, LambdaContext(function))
        except Exception:  # the Lambda failed: API Gateway hides why
            return _json_response(HTTPStatus.BAD_GATEWAY, {"message": "Internal server error"})
        response = _proxy_response(result)
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


def _proxy_response(result: Any) -> GatewayResponse:
    """Map a Lambda proxy result; anything malformed is a 502, as in API Gateway."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return _json_response(HTTPStatus.BAD_GATEWAY, {"message": "Internal server error"})
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    body = result.get("body") or ""
    if not isinstance(body, str):
        return _json_response(HTTPStatus.BAD_GATEWAY, {"message": "Internal server error"})
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers.setdefault("Content-Type", "application/json")
    return GatewayResponse(result["statusCode"], headers, raw)


class _Handler(BaseHTTPRequestHandler):
    server: GatewayServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            response = _json_response(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "Request Too Long"}
            )
        else:
            body = self.rfile.read(length) if length else b""
            response = self.server.api.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log is not None:
            self.server.log(f"gateway: {self.address_string()} {format % args}")


class GatewayServer(ThreadingHTTPServer):
    """The HTTP side: ``start()``, ``api_url`` (stage included), ``stop()``."""

    daemon_threads = True

    def __init__(
        self,
        api: LocalApi,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise DevstackError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        self.api = api
        self.log = log
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/{self.api.api.stage}"

    def start(self) -> GatewayServer:
        self._thread = threading.Thread(target=self.serve_forever, name="gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
