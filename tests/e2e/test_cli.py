"""``.venv/bin/devstack``: the commands an operator types, and their errors.

tests/e2e/test_printed_hints.py runs what they print for the user to paste, as a shell would.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import hints
from devstack.cli import build_parser, main
from devstack.stack import RunningStack
from tests.e2e.conftest import TEMPLATE
from tests.support.offline import device_key, new_member, post_certificate, unique_dsn
from tools import params

pytestmark = pytest.mark.e2e


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_user_add_then_login_prints_a_token_the_api_accepts(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(offline_stack.state_path)
    name = f"cli-{unique_dsn().lower()}"
    password = "Correct-Horse-9-Battery"

    assert (
        main(
            [
                "user",
                "add",
                name,
                "--email",
                f"{name}@example.com",
                "--state",
                state,
                "--password",
                password,
            ]
        )
        == 0
    )
    assert main(["user", "list", "--state", state]) == 0
    listing = capsys.readouterr().out
    assert any(line.split()[:2] == [name, "Members"] for line in listing.splitlines())

    assert main(["login", name, "--password", password, "--state", state]) == 0
    token = capsys.readouterr().out.strip()
    _, public = device_key()
    status, _ = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, token
    )
    assert status == 200


def test_login_admin_uses_the_state_file_password(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["login", "admin", "--state", str(offline_stack.state_path)]) == 0
    assert capsys.readouterr().out.count(".") == 2  # a JWT: header.payload.signature


def test_wrong_password_is_exit_2(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "login",
            "admin",
            "--password",
            "Wrong-Passw0rd!",
            "--state",
            str(offline_stack.state_path),
        ]
    )
    assert code == 2
    assert "wrong username or password" in _one_line_error(capsys)


def test_existing_user_is_exit_2(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "user",
            "add",
            offline_stack.deployment.admin_username or "",
            "--email",
            "a@example.com",
            "--state",
            str(offline_stack.state_path),
        ]
    )
    assert code == 2
    assert "already exists" in _one_line_error(capsys)


def _the_hint_to_start_it(error: str, state: Path) -> None:
    """The error names the command that starts this stack, and that command parses as `up`
    of this state file (test_printed_hints.py runs the default one in a shell)."""
    hint = hints.command("up", state=state)
    assert f"`{hint}`" in error, error
    words = shlex.split(hint)
    assert words[0] == ".venv/bin/devstack"
    args = build_parser().parse_args(words[1:])
    assert (args.command, Path(args.state)) == ("up", state)


@pytest.mark.parametrize(
    "command", [["login", "admin"], ["user", "list"], ["ca-cert"], ["sweep"], ["state", "x"]]
)
def test_commands_need_a_stack_that_is_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    state = tmp_path / "none.json"
    assert main([*command, "--state", str(state)]) == 2
    error = _one_line_error(capsys)
    assert "not up" in error
    _the_hint_to_start_it(error, state)


def test_down_with_nothing_up_says_so_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no state file, WHEN down is run, THEN there is nothing to stop, and that is fine
    state = tmp_path / "stack.json"
    assert main(["down", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "nothing to stop" in out
    # GIVEN a state file left by a stack whose process is gone (killed with SIGKILL, say)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = {"pid": gone.pid, "outputs": {}, "endpoint_url": "http://127.0.0.1:1", "region": "r"}
    state.write_text(json.dumps(left))
    # WHEN down is run, THEN it removes the stale file and succeeds, in one line
    assert main(["down", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "removed its stale" in out
    assert not state.exists()


def test_a_stale_state_file_is_reported(
    offline_stack: RunningStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a state file whose moto server is gone (nothing listens on its port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    assert offline_stack.state_path is not None
    state = json.loads(offline_stack.state_path.read_text())
    state["endpoint_url"] = f"http://127.0.0.1:{dead_port}"
    stale = tmp_path / "stack.json"
    stale.write_text(json.dumps(state))

    assert main(["user", "list", "--state", str(stale)]) == 2
    error = _one_line_error(capsys)
    assert "not up" in error
    _the_hint_to_start_it(error, stale)


@pytest.mark.parametrize("option", ["--port", "--moto-port", "--mqtt-port"])
def test_up_on_a_port_in_use_is_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            [
                "up",
                option,
                str(port),
                "--template",
                str(TEMPLATE),
                "--state",
                str(tmp_path / "stack.json"),
            ]
        )
    assert code == 2
    error = _one_line_error(capsys)
    assert f"port {port}" in error and error.endswith(f"pick another with {option}")
    assert not (tmp_path / "stack.json").exists()


def test_params_maps_config_json_and_overrides_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "certificate": {
                    "subject": {"CN": "My Root CA", "O": "Acme", "C": "DE"},
                    "Validity": 5,
                },
                "iot": {"certValidity": 2, "thingPrefix": "sensor", "thingGroup": "fleet"},
            }
        )
    )
    assert params.main(["--config", str(config), "--raw", "ThingPrefix=probe"]) == 0
    assert capsys.readouterr().out.split(" ") == [
        'CaCommonName="My',
        "Root",
        'CA"',
        "CaOrganization=Acme",
        "CaCountry=DE",
        "CaValidityYears=5",
        "DeviceCertValidityDays=730",
        "ThingPrefix=probe",
        "ThingGroupName=fleet\n",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"iot": {"certValidity": "two"}}', "iot.certValidity"),
        ('{"certificate": {"subject": {"XX": "y"}}}', "unknown key certificate.subject.'XX'"),
        ('{"iot": []}', "'iot' must be an object"),
    ],
)
def test_params_rejects_a_malformed_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(content)
    assert params.main(["--config", str(config)]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("spelling", ["validity", "Validity"])
def test_params_takes_the_ca_validity_in_both_spellings_of_the_original_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    # GIVEN the original sample's config.json (its file says "validity", its README "Validity")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"certificate": {spelling: 20}, "iot": {"certValidity": 1}}))
    # WHEN it becomes parameter overrides, THEN the CA gets 20 years, not the default 10
    assert params.main(["--config", str(config), "--raw"]) == 0
    assert capsys.readouterr().out.split() == ["CaValidityYears=20", "DeviceCertValidityDays=365"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"iot": {"thingprefix": "x"}}',
            "unknown key iot.'thingprefix' (known: certValidity, thingGroup, thingPrefix); "
            "did you mean iot.'thingPrefix'?",
        ),
        ('{"certificat": {}}', "did you mean 'certificate'?"),
        ('{"certificate": {"Valditiy": 20}}', "did you mean certificate.'Validity'?"),
        ('{"certificate": {"subject": {"OU ": "x"}}}', "did you mean certificate.subject.'OU'?"),
        ('{"logging": {}}', "unknown key 'logging' (known: certificate, iot)"),
        ('{"certificate": {"Validity": 2, "validity": 3}}', "keep one"),
    ],
)
def test_params_names_an_unknown_or_misspelt_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    # GIVEN a config.json with a key the original sample never had, WHEN it is read,
    # THEN nothing is deployed from it, and the one-line error names the key and its fix
    config = tmp_path / "config.json"
    config.write_text(content)
    assert params.main(["--config", str(config)]) == 2
    assert message in _one_line_error(capsys)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        [],
        ["up"],
        ["down"],
        ["user"],
        ["user", "add"],
        ["user", "list"],
        ["login"],
        ["ca-cert"],
        ["logs"],
        ["sweep"],
        ["expiry"],
        ["state"],
    ):
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0
        assert f"usage: .venv/bin/devstack {' '.join(command)}".strip() in capsys.readouterr().out


def test_the_tools_and_the_demo_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    import demo
    from onboarding_ble.webbluetooth import command as browser
    from tools import deploy_safety

    for tool_main, usage in (
        (browser.main, "usage: .venv/bin/python -m onboarding_ble.webbluetooth"),
        (params.main, "usage: .venv/bin/python -m tools.params"),
        (deploy_safety.main, "usage: .venv/bin/python -m tools.deploy_safety"),
        (demo.main, "usage: .venv/bin/python example/demo.py"),
    ):
        with pytest.raises(SystemExit) as done:
            tool_main(["--help"])
        assert done.value.code == 0
        assert usage in capsys.readouterr().out


def _options_without_help(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{where} {name}")
        elif not action.help:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_says_what_it_does() -> None:
    import device
    import fleet_commands
    import provisioning_app

    import demo
    from devstack.cli import build_parser

    parsers = {
        "devstack": build_parser(),
        "device.py": device.build_parser(),
        "provisioning_app.py": provisioning_app.build_parser(),
        "provisioning_app.py (fleet)": fleet_commands.build_parser(),
        "demo.py": demo.build_parser(),
        "tools.params": params.build_parser(),
    }
    missing = [m for name, parser in parsers.items() for m in _options_without_help(parser, name)]
    assert missing == []


def test_login_without_a_password_or_a_terminal_is_one_line_not_a_traceback(
    offline_stack: RunningStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a user who is not the administrator, and no terminal (stdin is an empty pipe)
    state = str(offline_stack.state_path)
    name = f"cli-{unique_dsn().lower()}"
    password = "Correct-Horse-9-Battery"
    assert (
        main(
            [
                "user",
                "add",
                name,
                "--email",
                "x@example.com",
                "--password",
                password,
                "--state",
                state,
            ]
        )
        == 0
    )
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))

    # WHEN login is asked for a token without a password, THEN it says how to give one
    assert main(["login", name, "--state", state]) == 2
    assert "--password-stdin" in _one_line_error(capsys)
    # ... and an empty stdin with --password-stdin is a clear error too
    assert main(["login", name, "--password-stdin", "--state", state]) == 2
    assert "nothing on standard input" in _one_line_error(capsys)

    # WHEN the password comes on stdin, THEN the token is printed and the API accepts it
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    assert main(["login", name, "--password-stdin", "--state", state]) == 0
    token = capsys.readouterr().out.strip()
    _, public = device_key()
    status, _ = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, token
    )
    assert status == 200


def test_ca_cert_is_the_root_that_device_certificates_chain_to(
    offline_stack: RunningStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography import x509

    from onboarding_ble import trust

    state = str(offline_stack.state_path)
    assert main(["ca-cert", "--state", state]) == 0
    printed = x509.load_pem_x509_certificate(capsys.readouterr().out.encode())
    assert main(["ca-cert", "--out", str(tmp_path / "ca.pem"), "--state", state]) == 0
    written = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert printed == written
    # ... the root: self-signed, and a device certificate issued through the API chains to it
    # through the issuing CA of the answer's chain
    printed.verify_directly_issued_by(printed)
    user = new_member(offline_stack)
    _, public = device_key()
    status, body = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, user.id_token
    )
    assert status == 200
    certificate = x509.load_pem_x509_certificate(body["certificatePem"].encode())
    chain = x509.load_pem_x509_certificates(body["certificateChainPem"].encode())
    path = trust.check_client_certificate(certificate, [printed], chain)
    assert [c.subject for c in path] == [chain[0].subject, printed.subject]


def test_state_prints_one_value_and_names_a_missing_key(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(offline_stack.state_path)
    assert main(["state", "api_url", "--state", state]) == 0
    assert capsys.readouterr().out.strip() == offline_stack.api_url
    assert main(["state", "mqtt.port", "--state", state]) == 0
    assert offline_stack.mqtt is not None
    assert capsys.readouterr().out.strip() == str(offline_stack.mqtt.port)
    assert main(["state", "mqtt.nope", "--state", state]) == 2
    assert "no 'mqtt.nope'" in _one_line_error(capsys)


def test_logs_prints_and_follows_the_log_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from devstack.logs import follow, log_files

    # GIVEN a stack's log folder with a function's log and the broker's
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ProvisioningFunction.log").write_text('{"message": "issued"}\n')
    (logs / "mqtt-broker.log").write_text("ADMIT client=device_A\n")
    state = str(tmp_path / "stack.json")

    # WHEN one function's log is asked for, THEN only it is printed
    assert main(["logs", "ProvisioningFunction", "--state", state]) == 0
    assert capsys.readouterr().out == '{"message": "issued"}\n'
    # ... all of them, each under its name
    assert main(["logs", "--state", state]) == 0
    out = capsys.readouterr().out
    assert "mqtt-broker.log <==" in out and "ADMIT client=device_A" in out
    # ... an unknown name says which exist
    assert main(["logs", "Nope", "--state", state]) == 2
    assert "mqtt-broker" in _one_line_error(capsys)

    # WHEN followed, THEN lines written later are printed too
    out_stream = io.StringIO()
    rounds = iter([True, False])

    def keep_going() -> bool:  # after the first read, a line arrives; after the second, stop
        with (logs / "mqtt-broker.log").open("a") as handle:
            handle.write("DISCONNECT client=device_A\n")
        return next(rounds)

    follow(log_files(logs, "mqtt-broker"), out_stream, interval=0, keep_going=keep_going)
    assert out_stream.getvalue().splitlines() == [
        "ADMIT client=device_A",
        "DISCONNECT client=device_A",
    ]


def test_a_user_the_pool_refuses_leaves_nothing_behind(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a password the pool's policy refuses
    state = ["--state", str(offline_stack.state_path)]
    name = f"refused-{unique_dsn().lower()}"
    assert main(["user", "add", name, "--email", "r@example.com", "--password", "x", *state]) == 2
    assert "cannot add user" in _one_line_error(capsys)
    # WHEN the same user is added with a good password THEN it works, and she can sign in
    good = "Good-Passw0rd!x"
    assert main(["user", "add", name, "--email", "r@example.com", "--password", good, *state]) == 0
    capsys.readouterr()
    assert main(["login", name, "--password", good, *state]) == 0
