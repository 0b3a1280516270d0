"""``make demo`` (``python example/demo.py``): one device onboarded end to end, as seen."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import demo as demo_module
from demo import main
from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MARK = "DEVSTACK_DEMO_TEST_RUN"


def processes_with(mark: str) -> list[int]:
    """Pids (other than ours) whose environment carries ``mark``: what the demo started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if mark.encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def marked(monkeypatch: pytest.MonkeyPatch) -> str:
    """A unique variable in our environment, inherited by every process the demo starts."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to find leftover processes")
    value = f"{MARK}={uuid.uuid4().hex}"
    monkeypatch.setenv(MARK, value.split("=", 1)[1])
    # The probe sees a live child that inherited the mark, so an empty answer means something.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as probe:
        try:
            assert probe.pid in processes_with(value)
        finally:
            probe.kill()
    return value


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    started = time.monotonic()
    code = main(argv)
    captured = capsys.readouterr()
    with capsys.disabled():
        print(f"\ndemo {' '.join(argv)}: {time.monotonic() - started:.1f} s")
    return code, captured.out, captured.err


def test_demo_onboards_over_ble_says_hello_and_revoked_device_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    marked: str,
) -> None:
    # GIVEN a fresh checkout (the demo reads template.yaml and config.json from the root)
    monkeypatch.chdir(ROOT)
    workdir = tmp_path / "demo"
    passwords: list[str] = []
    add_user = demo_module.add_user

    def remembering_add_user(*args: object, **kwargs: object) -> str:
        passwords.append(add_user(*args, **kwargs))  # type: ignore[arg-type]
        return passwords[-1]

    monkeypatch.setattr(demo_module, "add_user", remembering_add_user)

    # WHEN the user runs the demo
    code, out, err = run(["--dir", str(workdir)], capsys)

    # THEN it succeeds and shows every step with its result
    assert code == 0, out + err
    for title in (
        "start moto, deploy template.yaml, start the API gateway and the MQTT broker",
        "an owner gets an account (group Members)",
        "start the virtual BLE radio",
        "the stack's MQTT broker stands in for AWS IoT Core",
        "the device boots unprovisioned",
        "the administrator loads the device into the allowlist",
        "the owner's phone app signs in with Cognito",
        "the app finds the device over BLE",
        "the app requests a certificate for the device",
        "the app relays the answer to the device over GATT",
        "the device verifies the answer and stores its credentials",
        "the device connects over MQTT with mutual TLS and says hello",
        "the broker received the hello",
        "check: the stored certificate chains to the pinned root CA",
        "check: AWS IoT has the certificate ACTIVE on the thing",
        "the device renews its certificate over MQTT (due after 1 s here)",
        "the owner revokes the device",
        "the revoked device reconnects with its stored credentials",
        "a device not in the allowlist is refused",
    ):
        assert re.search(rf"^\[\d+/19\] {re.escape(title)}$", out, re.MULTILINE), title
    assert "two bumble controllers on one link: device tcp-client:127.0.0.1:" in out
    assert "with mutual TLS" in out
    dsn = re.search(r"advertises the onboarding service, DSN (DEMO-[0-9A-F]+)", out)
    assert dsn, out
    thing = f"device_{dsn[1]}"
    user = re.search(r"user (demo-[0-9a-f]+) in group Members", out)
    assert user and f"signed in as {user[1]} (Members)" in out
    assert f"read DSN {dsn[1]}" in out
    assert f"POST /certificate -> 200 with the ID token, thing {thing}" in out
    assert re.search(r"relayed the \d+-byte answer in \d+ chunks", out)
    assert "certificate.pem, chain.pem, device.json, private_key.pem (0600)" in out
    assert f"broker admitted client id {thing} (= thing name" in out
    # ... the hello reached the broker, from the device, on its thing's topic ...
    assert re.search(rf'hello received on things/{thing}/hello: \{{.*"dsn": "{dsn[1]}"', out)
    assert "client certificate of the stack's issuing CA, on a path to the pinned root CA" in out
    assert f"ACTIVE and attached to thing {thing}" in out
    # ... the device renewed its certificate over MQTT ...
    assert re.search(
        rf"new P-256 key and CSR on things/{thing}/certificate/renew, the renewal function "
        r"answered: certificate [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\. \(ACTIVE",
        out,
    )
    # ... and after the owner's revocation, the broker refuses the device's reconnect.
    assert f"DELETE /devices/{dsn[1]}/certificate -> 200 as the owner" in out
    assert re.search(
        rf"broker refused it: certificate [0-9a-f]{{12}}… of '{thing}' is REVOKED;", out
    )
    assert "device exit 4 (MQTT_FAILED" in out
    # ... with attestation on: the device's factory key was loaded by the administrator, and a
    # device not in the allowlist is refused by the API, creating nothing
    assert re.search(
        rf"POST /allowlist as the administrator -> ADDED {dsn[1]} with its factory attestation "
        r"key \(RequireAttestation=true\)",
        out,
    )
    unlisted = re.search(
        r"device (DEMO-[0-9A-F]+): POST /certificate -> 403 DEVICE_NOT_ALLOWED; no thing", out
    )
    assert unlisted and unlisted[1] != dsn[1], out
    assert (
        "stopped radio, device, app, device-renews, device-again, radio-unlisted, "
        "device-unlisted, app-unlisted" in out
    )
    assert "stack stopped" in out
    assert f"process logs, device state and stack.json: {workdir}" in out
    # The owner's password reached the app (it signed in) but is never shown or logged.
    assert len(passwords) == 1
    logs = "".join(path.read_text() for path in workdir.rglob("*.log"))
    assert "signed in" in out and passwords[0] not in out + err + logs
    # Nothing the demo started is left running, and its state file is gone.
    assert processes_with(marked) == []
    assert not (workdir / "stack.json").exists()


def test_http_only_demo_provisions_a_device_and_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = run(["--http-only", "--dir", str(tmp_path / "demo")], capsys)
    assert code == 0, out + err
    assert "POST http://127.0.0.1:" in out and "-> 200" in out
    assert "key decrypted and matches the certificate" in out
    assert "issued by the Private CA" in out
    assert "ACTIVE" in out
    assert "radio" not in out
    assert "stack stopped" in out
    # the Lambda's logs, not the terminal
    assert "START RequestId" in (tmp_path / "demo-lambda" / "ProvisioningFunction.log").read_text()


def test_make_demo_runs_the_demo_script_from_the_repository_root() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "local"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "example/demo.py", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: .venv/bin/python example/demo.py" in done.stdout
    assert "example/demo.py" in (ROOT / "Makefile").read_text(encoding="utf-8")
