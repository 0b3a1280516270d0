"""A state file outlives its stack (a SIGKILLed `up`, a crash): its pid may then belong to
another process, which `down` must not signal and `up` must not take for a running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devstack import cli
from devstack.stack import process_started

# What `read_state` needs of a state file besides the pid (its values are never used here).
REST = {"outputs": {}, "endpoint_url": "http://127.0.0.1:1", "region": "r"}

# A process that stops on SIGTERM and removes the state file as it goes, as `up` does.
STACK = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (os.remove(sys.argv[1]), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""


def test_down_leaves_alone_a_process_that_reuses_the_stacks_pid(tmp_path: Path) -> None:
    # GIVEN a state file whose pid is now another process (same pid, a different start time)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_started(other.pid)
        assert started is not None  # Linux: /proc answers
        state = tmp_path / "stack.json"
        state.write_text(
            json.dumps({"pid": other.pid, "pid_started": str(int(started) - 1), **REST})
        )
        # WHEN the user runs `down` on it
        assert cli.main(["down", "--state", str(state)]) == 0
        # THEN the other process lives on, and the stale file is gone
        assert other.poll() is None
        assert not state.exists()
    finally:
        other.kill()
        other.wait()


def test_down_stops_the_process_the_state_file_recorded(tmp_path: Path) -> None:
    # GIVEN a state file naming a live process with its own start time (as `up` writes it),
    # which removes the file when it stops, as `up` does
    state = tmp_path / "stack.json"
    stack = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", STACK, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stack.stdout is not None and stack.stdout.readline() == "ready\n"
        started = process_started(stack.pid)
        state.write_text(json.dumps({"pid": stack.pid, "pid_started": started, **REST}))
        # WHEN the user runs `down`
        assert cli.main(["down", "--state", str(state), "--timeout", "10"]) == 0
        # THEN that process was stopped
        assert stack.wait(10) == 0
    finally:
        stack.kill()
        stack.wait()
