"""The README's walk-through, pasted into two terminals as a new user would, works.

The commands are read from the README's ```sh walkthrough blocks, so the doc and this test
cannot drift. They run in a fresh directory that links to this checkout (and its .venv) but
has no .local, with no AWS variables and no PYTHONPATH in the environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

LINKED = (
    ".venv",
    "Makefile",
    "template.yaml",
    "requirements-dev.txt",
    "requirements-sam.txt",
    "local",
    "example",
    "provisioning_lambda",
    "deployment_lambda",
)


def blocks(marker: str) -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"^```sh {marker}\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)


def clean_env() -> dict[str, str]:
    """A new user's shell: no AWS settings, no PYTHONPATH."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key not in ("PYTHONPATH", "MAKEFLAGS", "MAKELEVEL")
    }


def test_the_readme_walkthrough_reaches_a_device_key_then_reads_and_revokes_it(
    tmp_path: Path,
) -> None:
    terminal_1, terminal_2 = blocks("walkthrough-terminal-1"), blocks("walkthrough")
    assert len(terminal_1) == 1 and terminal_2, "the README lost its walk-through blocks"
    home = tmp_path / "clone"
    home.mkdir()
    for name in LINKED:
        (home / name).symlink_to(ROOT / name)
    state = home / ".local" / "stack.json"

    # GIVEN the first terminal running the stack
    up_log = (tmp_path / "terminal-1.log").open("w")
    up = subprocess.Popen(  # noqa: S603 - the README's own commands
        ["bash", "-e", "-c", terminal_1[0]],  # noqa: S607
        cwd=home,
        env=clean_env(),
        stdout=up_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not state.exists() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), (tmp_path / "terminal-1.log").read_text()

        # WHEN the second terminal's blocks are pasted one after the other
        done = subprocess.run(  # noqa: S603
            ["bash", "-e", "-o", "pipefail", "-c", "\n".join(terminal_2)],  # noqa: S607
            cwd=home,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output

        # THEN the device's key was decrypted, matches its certificate, and never shown
        device = home / ".local" / "devices" / "SN-0001"
        certificate = x509.load_pem_x509_certificate((device / "certificate.pem").read_bytes())
        key = serialization.load_pem_private_key((device / "private_key.pem").read_bytes(), None)
        assert key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert "OPENED thing=device_SN-0001" in output
        key_line = (device / "private_key.pem").read_text().splitlines()[1]
        assert key_line not in output
        # ... the device said hello over MQTT, GET showed it, DELETE revoked it,
        assert "HELLO_PUBLISHED topic=things/device_SN-0001/hello" in output
        assert '"status": "ACTIVE"' in output or '"status":"ACTIVE"' in output
        assert "REVOKED" in output
        # ... and the revoked device was refused by the broker
        assert "MQTT_FAILED" in output and "refused: exit 4" in output

        # AND `make down` stopped the first terminal's stack and removed its state
        assert up.wait(60) == 0, (tmp_path / "terminal-1.log").read_text()
        assert not state.exists()
    finally:
        if up.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        up_log.close()
