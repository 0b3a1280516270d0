"""The offline stack's Lambda Invoke API: what boto3 and `aws lambda invoke` rely on, and what
a broken client must not do to it."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from devstack import cli
from devstack.awslambda.lambda_api import LambdaApiServer
from devstack.awslambda.runtime import FunctionError, FunctionSpec
from devstack.stack import RunningStack

pytestmark = pytest.mark.e2e


def raw_post(stack: RunningStack, path: str, headers: str, body: bytes = b"") -> bytes:
    url = urlsplit(stack.lambda_api.url)
    request = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as client:
        client.sendall(request + body)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def test_boto3_invokes_a_function_by_name(offline_stack: RunningStack) -> None:
    client = offline_stack.client("lambda", endpoint_url=offline_stack.lambda_api.url)
    answer = client.invoke(FunctionName=offline_stack.outputs["SweeperFunctionName"], Payload=b"{}")
    assert "FunctionError" not in answer
    assert set(json.loads(answer["Payload"].read())) >= {"devicesSeen", "unfinished"}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "\u00b2", "\u0663"])
def test_a_bad_content_length_is_400(offline_stack: RunningStack, length: str) -> None:
    raw = raw_post(
        offline_stack,
        "/2015-03-31/functions/SweeperFunction/invocations",
        f"Content-Length: {length}\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 400")


def test_a_chunked_body_is_refused_not_misread(offline_stack: RunningStack) -> None:
    raw = raw_post(
        offline_stack,
        "/2015-03-31/functions/SweeperFunction/invocations",
        "Transfer-Encoding: chunked\r\n",
        b"2\r\n{}\r\n0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 400")
    assert raw.count(b"HTTP/1.1") == 1  # the chunks were not read as a second request


def test_a_lying_content_length_is_dropped_and_the_server_stays_up(
    offline_stack: RunningStack,
) -> None:
    # GIVEN a client that promises 10 bytes and sends 2: the server gives up on it
    raw = raw_post(
        offline_stack,
        "/2015-03-31/functions/SweeperFunction/invocations",
        "Content-Length: 10\r\n",
        b"{}",
    )
    assert raw == b""
    # THEN the next client is served
    assert raw_post(
        offline_stack,
        "/2015-03-31/functions/SweeperFunction/invocations",
        "Content-Length: 2\r\n",
        b"{}",
    ).startswith(b"HTTP/1.1 200")


def test_a_function_at_its_reserved_concurrency_is_throttled_as_lambda_throttles(
    offline_stack: RunningStack,
) -> None:
    # GIVEN an Invoke API whose runtime finds the function's reservation busy
    def busy(_function: FunctionSpec, _event: dict[str, object]) -> object:
        raise FunctionError("TooManyRequestsException", "Rate Exceeded.")

    server = LambdaApiServer(offline_stack.deployment.functions, busy).start()
    try:
        client = offline_stack.client("lambda", endpoint_url=server.url)
        # THEN boto3 sees Lambda's throttling error, not a function error
        with pytest.raises(client.exceptions.TooManyRequestsException) as error:
            client.invoke(FunctionName="SweeperFunction", Payload=b"{}")
        assert error.value.response["Reason"] == (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        )
    finally:
        server.stop()


def test_devstack_sweep_waits_out_another_run_and_then_says_so_in_one_line(
    offline_stack: RunningStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the sweeper busy (its reservation of 1 held by another run) for two calls
    real = offline_stack.lambda_api.invoker
    throttles = iter([True, True])

    def busy_twice(function: FunctionSpec, event: dict[str, object]) -> object:
        if next(throttles, False):
            raise FunctionError("TooManyRequestsException", "Rate Exceeded.")
        return real(function, event)

    monkeypatch.setattr(offline_stack.lambda_api, "invoker", busy_twice)
    monkeypatch.setattr(cli, "THROTTLED_WAITS", (0.01, 0.01, 0.01, 0.01))
    # THEN `devstack sweep` asks again until the sweeper runs, and prints its report
    assert cli.main(["sweep", "--state", str(offline_stack.state_path)]) == 0
    out, err = capsys.readouterr()
    assert "devicesSeen" in out and err.count("busy with another run") == 2
    # ... and when the sweeper stays busy, one line and status 2, not a traceback
    throttles = iter([True] * 10)
    monkeypatch.setattr(offline_stack.lambda_api, "invoker", busy_twice)
    assert cli.main(["sweep", "--state", str(offline_stack.state_path)]) == 2
    err = capsys.readouterr().err
    assert "still busy with another run" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["Event", "DryRun"])
def test_invocation_types_not_emulated_are_refused_not_run_synchronously(
    offline_stack: RunningStack, kind: str
) -> None:
    client = offline_stack.client("lambda", endpoint_url=offline_stack.lambda_api.url)
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.invoke(FunctionName="SweeperFunction", InvocationType=kind, Payload=b"{}")
