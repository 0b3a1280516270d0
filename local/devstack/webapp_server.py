"""The phone app's static files, served offline beside the stack (``devstack up``).

``AppServer`` serves a folder (webapp/ by default) at ``http://127.0.0.1:<port>/``; 127.0.0.1
is a secure context, so a browser allows Web Bluetooth there as it does on HTTPS. It answers:

- ``GET /config.json`` from the running stack (``app_config``: the API URL, the region, the
  user pool and its app client, and the emulator's Cognito endpoint), never from a file: the
  folder is only read, nothing is written into it;
- ``GET``/``HEAD`` of a file in the folder, ``/`` and folders by their ``index.html``, with the
  Content-Type of its extension (``text/javascript`` for modules, ``application/manifest+json``
  for the web manifest; unknown extensions are ``application/octet-stream``);
- 404 for anything else: a missing file, a dot-file, a path that leaves the folder; 405 for
  other methods.

Every answer carries the security headers the app is built for (``security_headers``): a
Content-Security-Policy with no inline script and a ``connect-src`` naming exactly the API's
and Cognito's origins, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
and no caching of config.json. The port is bound at construction, so the stack can deploy the
template with ``AppOrigin`` = this server's origin before the API exists; ``configure`` then
gives it the stack's endpoints.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devstack.errors import DevstackError
from devstack.http_limits import BoundedHTTPServer, BoundedRequestHandler

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
    ".map": "application/json",
}
_MAX_FILE = 20 * 1024 * 1024  # no file of the app is anywhere near this


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what CORS and a CSP source name."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an absolute URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def app_config(
    *,
    api_url: str,
    region: str,
    user_pool_id: str,
    client_id: str,
    cognito_endpoint: str | None = None,
) -> dict[str, str]:
    """The app's config.json: where its API and its user pool are. ``cognito_endpoint`` only
    where Cognito is not AWS's own (the offline stack's emulator)."""
    config = {
        "apiUrl": api_url.rstrip("/"),
        "region": region,
        "userPoolId": user_pool_id,
        "clientId": client_id,
    }
    if cognito_endpoint:
        config["cognitoEndpoint"] = cognito_endpoint.rstrip("/")
    return config


def cognito_origin(config: dict[str, str]) -> str:
    """The origin the app sends InitiateAuth to for this config."""
    endpoint = config.get("cognitoEndpoint")
    if endpoint:
        return origin_of(endpoint)
    return f"https://cognito-idp.{config['region']}.amazonaws.com"


def content_security_policy(connect_origins: list[str]) -> str:
    """Scripts, styles, the manifest and the service worker from the app's own origin only;
    fetches to the app's origin and exactly ``connect_origins``."""
    connect = " ".join(["'self'", *dict.fromkeys(connect_origins)])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "manifest-src 'self'",
            "worker-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(config: dict[str, str] | None) -> dict[str, str]:
    """The headers every answer of the app's origin carries (also the ones hosting in AWS
    should send: README.md, "The phone app")."""
    origins = [] if config is None else [origin_of(config["apiUrl"]), cognito_origin(config)]
    return {
        "Content-Security-Policy": content_security_policy(origins),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


class _Handler(BoundedRequestHandler):
    server: AppServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.request_read()
        self._close_if_body()
        path = unquote(urlsplit(self.path).path)
        if path == "/config.json":
            config = self.server.config
            if config is None:
                self._answer(
                    HTTPStatus.SERVICE_UNAVAILABLE, b"the stack is starting\n", "text/plain"
                )
                return
            body = json.dumps(config, indent=2).encode() + b"\n"
            self._answer(HTTPStatus.OK, body, "application/json", {"Cache-Control": "no-store"})
            return
        found = self.server.resolve(path)
        if found is None:
            self._answer(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        body = found.read_bytes()
        kind = CONTENT_TYPES.get(found.suffix.lower(), "application/octet-stream")
        self._answer(HTTPStatus.OK, body, kind, {"Cache-Control": "no-cache"})

    do_HEAD = do_GET

    def _close_if_body(self) -> None:
        """A request with a body (which no answer here reads) ends the connection after its
        answer: the unread body must never be taken for the next request."""
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a method it has no handler for, a bad request line, a
        request line or headers too long) in plain text with the security headers, like every
        other answer, and the connection closed."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line it could not read: no browser's
            self.request_version = "HTTP/1.0"  # a status line and headers all the same
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        body = f"{code} {phrase}\n".encode()
        self._answer(code, body, "text/plain; charset=utf-8", {"Connection": "close"})

    def _refuse(self) -> None:
        self.request_read()
        self._close_if_body()
        self._answer(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"method not allowed\n",
            "text/plain; charset=utf-8",
            {"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _answer(
        self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            headers = {
                **security_headers(self.server.config),
                "Content-Type": kind,
                **(extra or {}),
            }
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True


class AppServer(BoundedHTTPServer):
    """``start()``, ``url`` (its origin, no trailing slash), ``configure(config)``, ``stop()``."""

    thread_name = "webapp"

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise DevstackError(
                f"cannot serve the app on {host}:{port}: {exc.strerror}; "
                "pick another port with --app-port"
            ) from exc
        self.root = Path(root).resolve()
        self.config: dict[str, str] | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def configure(self, config: dict[str, str]) -> None:
        """What ``/config.json`` answers, and the origins the CSP lets the app connect to."""
        self.config = dict(config)

    def resolve(self, path: str) -> Path | None:
        """The file a URL path names inside the root, or None (missing, hidden, outside)."""
        parts = [part for part in path.split("/") if part]
        if any(part.startswith(".") or "\\" in part or "\0" in part for part in parts):
            return None
        candidate = self.root.joinpath(*parts)
        try:
            if candidate.is_dir():
                candidate = candidate / "index.html"
            resolved = candidate.resolve()
            if not resolved.is_relative_to(self.root) or not resolved.is_file():
                return None
            if resolved.stat().st_size > _MAX_FILE:
                return None
        except OSError:
            return None
        return resolved
