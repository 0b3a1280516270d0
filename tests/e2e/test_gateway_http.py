"""The local gateway as an HTTP server and as API Gateway's error source.

A gateway on the session's deployment whose integration is a recording stand-in, so the tests
see exactly which requests reach the Lambda; raw sockets play clients that lie or stall.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from devstack.apigateway.gateway import GatewayServer, LocalApi
from devstack.awslambda.runtime import FunctionError, FunctionSpec
from devstack.stack import RunningStack
from tests.support.offline import device_key, gateway_error, new_member, unique_dsn

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 1.0
REQUEST_READ_LIMIT = 3.0


@dataclass
class Recorder:
    """An invoker that records each event; ``behaviour`` says how it answers."""

    events: list[dict[str, Any]] = field(default_factory=list)
    behaviour: str = "ok"  # ok | fail | malformed | hang
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        self.events.append(event)
        if self.behaviour == "fail":
            raise FunctionError("Runtime.ImportModuleError", "Unable to import module")
        if self.behaviour == "malformed":
            return {"body": "no statusCode"}
        if self.behaviour == "hang":
            self.release.wait(timeout=30)
        return {"statusCode": 200, "body": json.dumps({"ok": True})}


@dataclass
class Gateway:
    server: GatewayServer
    recorder: Recorder
    token: str

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def stage(self) -> str:
        return self.server.api.api.stage


@pytest.fixture
def gateway(offline_stack: RunningStack) -> Iterator[Gateway]:
    recorder = Recorder()
    api = LocalApi(
        offline_stack.deployment,
        endpoint_url=offline_stack.endpoint_url,
        invoker=recorder,
        integration_timeout=1.0,
    )
    server = GatewayServer(
        api, read_timeout=READ_TIMEOUT, request_read_limit=REQUEST_READ_LIMIT
    ).start()
    try:
        yield Gateway(server, recorder, new_member(offline_stack).id_token)
    finally:
        recorder.release.set()
        server.stop()


def exchange(port: int, data: bytes, *, pause_after: bytes | None = None) -> bytes:
    """Send ``data`` (stalling after ``pause_after`` was sent); all the server says until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        if pause_after is not None:
            client.sendall(pause_after)
        client.sendall(data)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return received


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def request(gateway: Gateway, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"POST /{gateway.stage}{path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def valid_body() -> bytes:
    return json.dumps({"DSN": unique_dsn(), "publicKey": device_key()[1]}).encode()


def answers_normally(gateway: Gateway) -> bool:
    """The server still answers a well-formed request on a new connection."""
    raw = exchange(gateway.port, request(gateway, "/nowhere", "Connection: close"))
    return status_of(raw) == 403


# -- API Gateway's own errors: {"msg", "code"} from the template ------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "response_type", "status", "code"),
    [
        ((), b"{}", "UNAUTHORIZED", 401, "UNAUTHORIZED"),
        (("Authorization: not-a-token",), b"{}", "UNAUTHORIZED", 401, "UNAUTHORIZED"),
        (("Authorization: {token}",), b'{"DSN": "bad dsn"}', "BAD_REQUEST_BODY", 400, None),
        (("Authorization: {token}",), b"not json", "BAD_REQUEST_BODY", 400, None),
    ],
)
def test_gateway_errors_have_the_apis_shape(
    gateway: Gateway,
    headers: tuple[str, ...],
    body: bytes,
    response_type: str,
    status: int,
    code: str | None,
) -> None:
    sent = [h.format(token=gateway.token) for h in headers]
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            *sent,
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            body=body,
        ),
    )
    answer = body_of(raw)
    assert status_of(raw) == status
    assert set(answer) == {"msg", "code"}
    assert answer == gateway_error(response_type)
    assert answer["code"] == (code or response_type)
    assert gateway.recorder.events == []  # nothing reached the Lambda


def test_an_unknown_route_is_route_not_found(gateway: Gateway) -> None:
    raw = exchange(gateway.port, request(gateway, "/nothing-here", "Connection: close"))
    assert status_of(raw) == 403
    assert body_of(raw) == gateway_error("MISSING_AUTHENTICATION_TOKEN")
    assert body_of(raw)["code"] == "ROUTE_NOT_FOUND"


@pytest.mark.parametrize(
    ("behaviour", "status", "response_type"),
    [
        ("fail", 502, "INTEGRATION_FAILURE"),
        ("malformed", 502, "INTEGRATION_FAILURE"),
        ("hang", 504, "INTEGRATION_TIMEOUT"),
    ],
)
def test_a_failed_or_silent_integration_is_answered_from_the_template(
    gateway: Gateway, behaviour: str, status: int, response_type: str
) -> None:
    # GIVEN a Lambda that fails, answers nonsense, or does not answer within the limit
    gateway.recorder.behaviour = behaviour
    body = valid_body()

    # WHEN a valid, authorized request reaches it
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            body=body,
        ),
    )

    # THEN the gateway answers with the template's response for that failure
    assert len(gateway.recorder.events) == 1
    assert status_of(raw) == status
    assert body_of(raw) == gateway_error(response_type)
    assert body_of(raw)["code"] == response_type


# -- content types: the model applies to the types it maps -----------------------------------


@pytest.mark.parametrize(
    ("content_type", "validated"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        (None, True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
    ],
)
def test_the_body_is_validated_only_for_the_models_content_types(
    gateway: Gateway, content_type: str | None, validated: bool
) -> None:
    body = b'{"DSN": "not valid!"}'
    headers = [f"Authorization: {gateway.token}", f"Content-Length: {len(body)}"]
    if content_type is not None:
        headers.append(f"Content-Type: {content_type}")

    raw = exchange(
        gateway.port, request(gateway, "/certificate", *headers, "Connection: close", body=body)
    )

    if validated:
        assert (status_of(raw), body_of(raw)) == (400, gateway_error("BAD_REQUEST_BODY"))
        assert gateway.recorder.events == []
    else:  # as in API Gateway, the Lambda gets it unvalidated and must answer it
        assert status_of(raw) == 200
        assert [event["body"] for event in gateway.recorder.events] == [body.decode()]


def csr_like(size: int) -> str:
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * size + "\n"


# Bodies the model refuses (docs/architecture.md, "Error codes"): with application/json API
# Gateway answers BAD_REQUEST_BODY and the function never sees them; with another content type
# they reach the function, which answers with its own code (tests/unit, tests/integration).
MODEL_REFUSES = {
    "both-key-fields": {"publicKey": device_key()[1], "csr": csr_like(100)},
    "csr-with-encryption": {"csr": csr_like(100), "encryption": "fernet-x25519"},
    "null-csr": {"csr": None},
    "empty-csr": {"csr": ""},
    "csr-not-pem": {"csr": "x" * 100},
    "csr-too-large": {"csr": csr_like(6144)},
    "dsn-too-long": {"DSN": "A" * 200, "publicKey": device_key()[1]},
    "dsn-invalid": {"DSN": "bad dsn", "publicKey": device_key()[1]},
}


@pytest.mark.parametrize("case", sorted(MODEL_REFUSES))
@pytest.mark.parametrize(
    ("content_type", "validated"), [("application/json", True), ("text/plain", False)]
)
def test_which_layer_answers_a_body_the_model_refuses(
    gateway: Gateway, case: str, content_type: str, validated: bool
) -> None:
    body = json.dumps({"DSN": unique_dsn()} | MODEL_REFUSES[case]).encode()
    headers = [f"Authorization: {gateway.token}", f"Content-Type: {content_type}"]
    headers.append(f"Content-Length: {len(body)}")
    raw = exchange(
        gateway.port, request(gateway, "/certificate", *headers, "Connection: close", body=body)
    )
    if validated:
        assert (status_of(raw), body_of(raw)) == (400, gateway_error("BAD_REQUEST_BODY"))
        assert gateway.recorder.events == []
    else:
        assert [event["body"] for event in gateway.recorder.events] == [body.decode()]


# -- requests that lie, stall or overflow -----------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "5, 6", ""])
def test_a_bad_content_length_is_400_and_the_server_stays_up(gateway: Gateway, length: str) -> None:
    raw = exchange(
        gateway.port,
        request(
            gateway, "/certificate", f"Authorization: {gateway.token}", f"Content-Length: {length}"
        ),
    )
    assert status_of(raw) == 400
    assert set(body_of(raw)) == {"msg", "code"}
    assert gateway.recorder.events == []
    assert answers_normally(gateway)


def test_two_different_content_lengths_are_400(gateway: Gateway) -> None:
    raw = exchange(
        gateway.port,
        request(gateway, "/certificate", "Content-Length: 2", "Content-Length: 3", body=b"{}"),
    )
    assert status_of(raw) == 400


def test_a_content_length_longer_than_the_body_is_408_after_the_read_timeout(
    gateway: Gateway,
) -> None:
    # GIVEN a client that announces 100 bytes, sends 10 and waits for an answer
    raw = exchange(
        gateway.port,
        request(gateway, "/certificate", f"Authorization: {gateway.token}", "Content-Length: 100")
        + b'{"DSN": 1,',
    )

    # THEN the gateway gives up on it, answers 408, closes, and serves others
    assert status_of(raw) == 408
    assert set(body_of(raw)) == {"msg", "code"}
    assert gateway.recorder.events == []
    assert answers_normally(gateway)


def test_a_content_length_shorter_than_the_body_does_not_smuggle_a_request(
    gateway: Gateway,
) -> None:
    # GIVEN a body of 20 bytes announced as 2: the rest is not a valid request
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            "Content-Type: application/json",
            "Content-Length: 2",
            body=b'{}"DSN": "X", "a": 1\r\n',
        ),
    )

    # THEN the announced body is judged on its own (it is invalid), the remainder is refused
    # as a malformed request, the connection ends and the server stays up
    assert raw.startswith(b"HTTP/1.1 400")
    head, rest = raw.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    assert json.loads(rest[:length]) == gateway_error("BAD_REQUEST_BODY")
    assert gateway.recorder.events == []
    assert answers_normally(gateway)


def test_a_client_that_stalls_in_its_headers_is_dropped_without_blocking_others(
    gateway: Gateway,
) -> None:
    # GIVEN a client that sent half a request line and stalls
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as stalled:
        stalled.sendall(f"POST /{gateway.stage}/certif".encode())

        # WHEN another client comes along, THEN it is served meanwhile
        assert answers_normally(gateway)

        # and the stalled connection is closed by the server (read timeout), not kept for ever
        assert stalled.recv(65536) == b""


def test_a_chunked_body_is_read_and_validated(gateway: Gateway) -> None:
    body = valid_body()
    chunked = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])
    )
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            "Connection: close",
            body=chunked + b"0\r\n\r\n",
        ),
    )
    assert status_of(raw) == 200
    assert [event["body"] for event in gateway.recorder.events] == [body.decode()]


def test_a_chunked_body_with_a_content_length_is_400(gateway: Gateway) -> None:
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            "Transfer-Encoding: chunked",
            "Content-Length: 5",
            body=b"0\r\n\r\n",
        ),
    )
    assert status_of(raw) == 400
    assert gateway.recorder.events == []


def test_a_body_over_10_mb_is_413_without_being_read(gateway: Gateway) -> None:
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            f"Content-Length: {10 * 1024 * 1024 + 1}",
        ),
    )
    assert status_of(raw) == 413
    assert body_of(raw) == gateway_error("REQUEST_TOO_LARGE")
    assert gateway.recorder.events == []
    assert answers_normally(gateway)


def test_requests_reach_the_lambda_concurrently(gateway: Gateway) -> None:
    # GIVEN a Lambda that does not answer until released, and two requests for it
    gateway.recorder.behaviour = "hang"
    calls = []
    for _ in range(2):
        body = valid_body()
        sent = request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            body=body,
        )
        calls.append(threading.Thread(target=exchange, args=(gateway.port, sent)))
    for call in calls:
        call.start()
    try:
        deadline = time.monotonic() + 20
        while len(gateway.recorder.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

        # THEN both are inside the Lambda at once (no lock around invocations), and the
        # server still answers others meanwhile
        assert len(gateway.recorder.events) == 2
        assert answers_normally(gateway)
    finally:
        gateway.recorder.release.set()
        for call in calls:
            call.join(timeout=30)


# -- what http.server itself would refuse, and clients that never finish ----------------------


def test_json_nested_past_the_parsers_limit_is_an_invalid_body(gateway: Gateway) -> None:
    deep = b"[" * 1500 + b"]" * 1500
    raw = exchange(
        gateway.port,
        request(
            gateway,
            "/certificate",
            f"Authorization: {gateway.token}",
            "Content-Type: application/json",
            f"Content-Length: {len(deep)}",
            "Connection: close",
            body=deep,
        ),
    )
    assert status_of(raw) == 400
    assert body_of(raw) == gateway_error("BAD_REQUEST_BODY")
    assert gateway.recorder.events == []


@pytest.mark.parametrize(
    ("raw_request", "status"),
    [
        (b"FOO /{stage}/certificate HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /{stage}/certificate HTTP/2.0\r\n\r\n", 400),
        (b"GET /{stage}/certificate\r\n", 400),
        (b"GET /{stage}/certificate HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 413),
        (
            b"GET /{stage}/certificate HTTP/1.1\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
            + b"\r\n",
            413,
        ),
    ],
    ids=["unknown-method", "garbage", "http2", "http09", "long-header", "many-headers"],
)
def test_malformed_http_is_answered_in_the_apis_shape(
    gateway: Gateway, raw_request: bytes, status: int
) -> None:
    raw = exchange(gateway.port, raw_request.replace(b"{stage}", gateway.stage.encode()))
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    assert status_of(raw) == status
    assert set(body_of(raw)) == {"msg", "code"}
    assert answers_normally(gateway)


def test_a_client_sending_one_slow_byte_at_a_time_is_cut_off(gateway: Gateway) -> None:
    # GIVEN a client that sends a header byte just before each read timeout, for ever
    sent, cut_off = 0, False
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as slow:
        slow.sendall(f"POST /{gateway.stage}/certificate HTTP/1.1\r\n".encode())
        for _ in range(int(REQUEST_READ_LIMIT / (READ_TIMEOUT / 2)) * 4):
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                cut_off = True
                break
            sent += 1
            time.sleep(READ_TIMEOUT / 2)
            slow.setblocking(False)
            try:
                if slow.recv(1) == b"":
                    cut_off = True
                    break
            except BlockingIOError:
                pass
            finally:
                slow.setblocking(True)
    # THEN the server closed the connection long before the client was done
    assert cut_off, f"still open after {sent} slow header lines"
    assert answers_normally(gateway)
