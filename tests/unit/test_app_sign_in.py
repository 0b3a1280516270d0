"""The BLE command signs in as the fleet commands do: ``--password-stdin`` keeps the password off
the command line, where ps and shell history would see it."""

from __future__ import annotations

import io
from typing import Any

import provisioning_app as app
import pytest

BACKEND = app.Backend(
    api_url="http://127.0.0.1:9/v1", region="us-east-1", user_pool_id="us-east-1_x", client_id="c"
)


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The user name and password the app went on with (instead of signing in)."""
    seen: list[tuple[str, str]] = []

    async def stop_here(_options: Any, _backend: Any, username: str, password: str) -> int:
        seen.append((username, password))
        return 0

    monkeypatch.setattr(app, "resolve_backend", lambda _args: BACKEND)
    monkeypatch.setattr(app, "async_main", stop_here)
    return seen


def test_the_ble_command_reads_the_password_from_stdin(
    signed_in: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Bob-Passw0rd!\nnot this line\n"))
    argv = ["--transport", "tcp-client:127.0.0.1:9", "--username", "bob", "--password-stdin"]
    assert app.main(argv) == 0
    assert signed_in == [("bob", "Bob-Passw0rd!")]


def test_password_and_password_stdin_together_are_refused(
    signed_in: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    argv = ["--transport", "tcp-client:127.0.0.1:9", "--password", "y", "--password-stdin"]
    assert app.main(argv) == app.EXIT_USAGE
    assert signed_in == [] and "--password-stdin" in capsys.readouterr().err


def test_an_empty_stdin_is_a_usage_error_not_an_empty_password(
    signed_in: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    argv = ["--transport", "tcp-client:127.0.0.1:9", "--username", "bob", "--password-stdin"]
    assert app.main(argv) == app.EXIT_USAGE
    assert signed_in == [] and "no password" in capsys.readouterr().err


def test_an_unreachable_user_pool_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    closed = app.Backend(
        api_url="http://127.0.0.1:9/v1",
        region="us-east-1",
        user_pool_id="us-east-1_x",
        client_id="c",
        cognito_endpoint_url="http://127.0.0.1:9",  # the discard port: nothing listens
    )
    with pytest.raises(app.AppError) as error:
        app.login(closed, "bob", "pw")
    assert str(error.value) == "sign-in failed: Cognito unreachable (EndpointConnectionError)"
