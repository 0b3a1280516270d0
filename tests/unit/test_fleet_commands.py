"""The app's fleet commands keep secrets off the command line: the transfer code and (with
--password-stdin) the password come from a prompt or standard input, where ps and shell
history do not see them."""

from __future__ import annotations

import argparse
import io
from types import SimpleNamespace
from typing import Any

import fleet_commands
import pytest


class _App:
    """The app's hooks and the API, recorded: who signed in, what was sent."""

    def __init__(self) -> None:
        self.signed_in: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []

    def hooks(self) -> fleet_commands.Hooks:
        def credentials_for(args: argparse.Namespace, _backend: Any) -> tuple[str, str]:
            return args.username or "alice", args.password or "from-the-prompt"

        def login(_backend: Any, username: str, password: str) -> str:
            self.signed_in.append((username, password))
            return "id-token"

        return fleet_commands.Hooks(
            resolve_backend=lambda _args: SimpleNamespace(api_url="https://api.example/prod"),
            credentials_for=credentials_for,
            login=login,
        )

    def call_api(
        self,
        _api_url: str,
        _token: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        **_: Any,
    ) -> fleet_commands.Answer:
        self.sent.append((method, path, body))
        return fleet_commands.Answer(200, {"status": "REVOKED", "DSN": "SN-0001"})


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> _App:
    recorded = _App()
    monkeypatch.setattr(fleet_commands, "call_api", recorded.call_api)
    return recorded


def run(app: _App, monkeypatch: pytest.MonkeyPatch, stdin: str, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    return fleet_commands.main(list(argv), app.hooks()), err.getvalue()


def test_claim_reads_the_code_from_stdin_not_the_command_line(
    app: _App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WHEN the code is piped in, THEN it is what the API receives
    code, err = run(app, monkeypatch, "k7qm-2xpd-9tra\n", "claim", "SN-0001")
    assert code == 0, err
    assert app.sent == [("POST", "/devices/SN-0001/claim", {"code": "k7qm-2xpd-9tra"})]
    # WHEN the code is given as an argument, THEN it is refused (usage) and nothing is sent
    app.sent.clear()
    with pytest.raises(SystemExit) as exit_:
        run(app, monkeypatch, "", "claim", "SN-0001", "K7QM-2XPD-9TRA")
    assert exit_.value.code == 2 and app.sent == []
    # WHEN nothing is piped in, THEN one line says so and nothing is sent
    code, err = run(app, monkeypatch, "", "claim", "SN-0001")
    assert (code, err.strip()) == (2, "error: no transfer code given") and app.sent == []


def test_claim_asks_for_the_code_without_echo_at_a_terminal(
    app: _App, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "K7QM-2XPD-9TRA"

    terminal = io.StringIO()
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", terminal)
    monkeypatch.setattr(fleet_commands.getpass, "getpass", getpass)
    assert fleet_commands.main(["claim", "SN-0001"], app.hooks()) == 0
    assert prompts == ["Transfer code for SN-0001: "]
    assert app.sent[0][2] == {"code": "K7QM-2XPD-9TRA"}


def test_password_stdin_comes_first_then_the_code(
    app: _App, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = "Correct-Horse-9\nK7QM-2XPD-9TRA\n"
    code, err = run(
        app, monkeypatch, stdin, "claim", "SN-0001", "--username", "bob", "--password-stdin"
    )
    assert code == 0, err
    assert app.signed_in == [("bob", "Correct-Horse-9")]
    assert app.sent[0][2] == {"code": "K7QM-2XPD-9TRA"}
    # ... and both at once is a usage error, before anything is sent
    app.sent.clear()
    code, err = run(app, monkeypatch, stdin, "list", "--password", "x", "--password-stdin")
    assert code == 2 and "--password-stdin" in err and app.sent == []


def test_the_recipient_declines_with_the_code_from_stdin(
    app: _App, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = run(
        app, monkeypatch, "K7QM2XPD9TRA\n", "transfer", "SN-0001", "--cancel", "--decline"
    )
    assert code == 0, err
    assert app.sent == [("DELETE", "/devices/SN-0001/transfer", {"code": "K7QM2XPD9TRA"})]
    # ... the owner cancels with no code at all, and reads nothing
    app.sent.clear()
    code, err = run(app, monkeypatch, "unread\n", "transfer", "SN-0001", "--cancel")
    assert code == 0, err
    assert app.sent == [("DELETE", "/devices/SN-0001/transfer", None)]
    # ... and --decline without --cancel is a usage error
    code, err = run(app, monkeypatch, "K7QM2XPD9TRA\n", "transfer", "SN-0001", "--decline")
    assert code == 2 and "--cancel" in err


def test_help_says_a_password_argument_is_visible(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fleet_commands.build_parser().parse_args(["claim", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "VISIBLE to ps" in text and "--password-stdin" in text
    assert "never from the command line" in text
