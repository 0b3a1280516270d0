"""A Ctrl-C while a command is still loading its modules stops it as quietly as a later one.

Each command holds SIGINT and SIGTERM while it imports (a second or two: boto3, the SAM
translator, bumble) and takes them once its own handling is in place. The tests send SIGINT
exactly inside that window: when the process's blocked-signal mask (``SigBlk`` in
/proc/<pid>/status) says SIGINT is held.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIGINT_BIT = 1 << (signal.SIGINT - 1)

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def blocked_mask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    return 0


def interrupted_while_loading(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Start ``command``, send it SIGINT once it holds SIGINT, and wait for its end."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not blocked_mask(process.pid) & SIGINT_BIT:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "never held SIGINT"
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_devstack_stops_quietly_when_ctrl_c_comes_while_it_loads(tmp_path: Path) -> None:
    done = interrupted_while_loading(["-m", "devstack", "up", "--state", str(tmp_path / "s.json")])
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.json").exists()  # nothing was started


def test_the_browser_command_stops_quietly_when_ctrl_c_comes_while_it_loads(
    tmp_path: Path,
) -> None:
    state = tmp_path / "no-stack.json"  # without the Ctrl-C: "the offline stack is not up"
    done = interrupted_while_loading(
        ["-m", "onboarding_ble.webbluetooth", "--headless", "--state", str(state)]
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "not up" not in done.stderr


def test_a_reader_that_leaves_early_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    # GIVEN a state file whose outputs are far more than a pipe holds
    state = tmp_path / "stack.json"
    outputs = {f"Output{i}": "v" * 100 for i in range(5000)}
    state.write_text(
        json.dumps(
            {"endpoint_url": "http://127.0.0.1:1", "region": "us-east-1", "outputs": outputs}
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    # WHEN they are printed into a reader that takes one line and leaves (`| head -1`)
    process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "devstack", "state", "--state", str(state), "outputs"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == "{\n"
    process.stdout.close()
    # THEN the command stops with a failure status and says nothing more
    assert process.wait(timeout=60) == 1
    assert process.stderr.read() == ""
