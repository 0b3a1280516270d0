"""``make demo`` (``python -m devstack demo``): one device end to end, in under a minute."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_demo_provisions_a_device_and_stops(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "local"), str(ROOT)])}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "POST http://127.0.0.1:" in out and "-> 200" in out
    assert "key decrypted and matches the certificate" in out
    assert "issued by the Private CA" in out
    assert "ACTIVE" in out
    assert "stack stopped" in out
    assert elapsed < 60, f"the demo took {elapsed:.0f} s"
