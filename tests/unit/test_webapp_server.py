"""The offline server of the phone app: its files, its config.json and its security headers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.errors import DevstackError
from devstack.webapp_server import AppServer, app_config, content_security_policy, origin_of

CONFIG = app_config(
    api_url="http://127.0.0.1:4100/prod/",
    region="us-east-1",
    user_pool_id="us-east-1_abc",
    client_id="client123",
    cognito_endpoint="http://127.0.0.1:4200",
)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("served")
    root = tmp_path / "webapp"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>app</title>", encoding="utf-8")
    (root / "js" / "app.js").write_text("export const x = 1;\n", encoding="utf-8")
    (root / "manifest.webmanifest").write_text('{"name": "app"}', encoding="utf-8")
    (root / "styles.css").write_text("body {}\n", encoding="utf-8")
    (root / ".env").write_text("SECRET=1\n", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("not the app's\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def server(app_dir: Path) -> Iterator[AppServer]:
    app = AppServer(app_dir)
    app.configure(CONFIG)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - a local test server
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_config_json_is_the_stacks_and_no_file_is_written(server: AppServer, app_dir: Path) -> None:
    status, headers, body = fetch(server.url + "/config.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {
        "apiUrl": "http://127.0.0.1:4100/prod",  # no trailing slash
        "region": "us-east-1",
        "userPoolId": "us-east-1_abc",
        "clientId": "client123",
        "cognitoEndpoint": "http://127.0.0.1:4200",
    }
    assert not (app_dir / "config.json").exists()


def test_config_without_an_emulator_has_no_cognito_endpoint() -> None:
    config = app_config(
        api_url="https://x.execute-api.eu-west-1.amazonaws.com/prod",
        region="eu-west-1",
        user_pool_id="eu-west-1_x",
        client_id="c",
    )
    assert "cognitoEndpoint" not in config


@pytest.mark.parametrize(
    ("path", "content_type", "starts"),
    [
        ("/", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/index.html", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/js/app.js", "text/javascript; charset=utf-8", b"export"),
        ("/manifest.webmanifest", "application/manifest+json", b"{"),
        ("/styles.css", "text/css; charset=utf-8", b"body"),
    ],
)
def test_files_have_the_content_type_a_browser_needs(
    server: AppServer, path: str, content_type: str, starts: bytes
) -> None:
    status, headers, body = fetch(server.url + path)
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert body.startswith(starts)


def test_every_answer_carries_the_security_headers(server: AppServer) -> None:
    for path in ("/", "/config.json", "/missing.js"):
        _status, headers, _body = fetch(server.url + path)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        csp = dict(
            part.partition(" ")[::2] for part in headers["Content-Security-Policy"].split("; ")
        )
        assert csp["script-src"] == "'self'"  # no inline script, no other origin
        assert csp["connect-src"] == "'self' http://127.0.0.1:4100 http://127.0.0.1:4200"
        assert csp["default-src"] == "'none'"


def test_aws_cognito_is_named_when_there_is_no_emulator() -> None:
    csp = content_security_policy(
        [origin_of("https://a.execute-api.eu-west-1.amazonaws.com/prod"), "https://x"]
    )
    assert "connect-src 'self' https://a.execute-api.eu-west-1.amazonaws.com https://x" in csp
    assert "unsafe-inline" not in csp


@pytest.mark.parametrize(
    "path",
    ["/.env", "/../outside.txt", "/%2e%2e/outside.txt", "/js/../../outside.txt", "/nothing.js"],
)
def test_hidden_missing_and_outside_files_are_not_found(server: AppServer, path: str) -> None:
    status, _headers, body = fetch(server.url + path)
    assert status == 404
    assert b"SECRET" not in body and b"not the app's" not in body


def test_only_reads_are_allowed(server: AppServer) -> None:
    status, headers, _body = fetch(server.url + "/index.html", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = fetch(server.url + "/index.html", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_a_taken_port_is_one_clear_error(server: AppServer, app_dir: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(DevstackError, match="--app-port"):
        AppServer(app_dir, port=port)


def _raw(server: AppServer, data: bytes) -> bytes:
    """What the server sends back for ``data`` on one connection, until it closes it."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_a_body_is_never_taken_for_the_next_request(server: AppServer) -> None:
    # GIVEN a request whose body is itself a request (a smuggling attempt)
    hidden = b"GET /styles.css HTTP/1.1\r\nHost: x\r\n\r\n"
    sent = (
        b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(hidden)).encode()
        + b"\r\n\r\n"
        + hidden
    )
    # WHEN it is sent, THEN the one answer is the refusal, and the connection ends after it
    received = _raw(server, sent)
    assert received.startswith(b"HTTP/1.1 405")
    assert received.count(b"HTTP/1.1 ") == 1, received
    assert b"body {}" not in received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", b"501"),
        (b"garbage\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    ],
)
def test_http_servers_own_refusals_carry_the_security_headers(
    server: AppServer, request_bytes: bytes, status: bytes
) -> None:
    received = _raw(server, request_bytes)
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 " + status.decode()), head
    assert "Content-Security-Policy: " in head and "X-Content-Type-Options: nosniff" in head
    assert "Content-Type: text/plain" in head and "text/html" not in head
