"""Processes for the BLE end-to-end tests: stack, virtual radio, broker, device, app.

Every process runs in its own session (process group) on 127.0.0.1 free ports and is
killed with its group in a finally block. The stack is the real offline stack,
`python -m devstack up --state <tmp>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest

from onboarding_ble import events
from onboarding_ble.demo import app_argv, device_argv, stop_process_group

E = TypeVar("E", bound=events.Event)

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "example"
PYTHON = sys.executable


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(EXAMPLE), str(REPO / "local"), env.get("PYTHONPATH", "")]
    )
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process in its own process group, its output collected line by line."""

    def __init__(self, name: str, args: list[str], cwd: Path = EXAMPLE) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(  # noqa: S603 - our own scripts
            args,
            cwd=cwd,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    @property
    def events(self) -> list[events.Event]:
        """The event lines it printed so far (onboarding_ble.events)."""
        with self._cond:
            return events.parse_all(self.lines)

    def wait_event(
        self, kind: type[E], where: Callable[[E], bool] = lambda _e: True, timeout: float = 30.0
    ) -> E:
        """Its first event of type ``kind`` (for which ``where`` holds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in events.parse_all(self.lines):
                    if isinstance(event, kind) and where(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"{self.name}: no {kind.NAME}; output:\n{self.output}")
                self._cond.wait(min(remaining, 0.2))

    def wait_line(self, prefix: str, timeout: float = 30.0) -> str:
        """The first line that starts with `prefix` (devstack's own output, not an event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"{self.name}: no line starting {prefix!r}; output:\n{self.output}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{self.name} still running; output:\n{self.output}") from exc
        self._reader.join(5)
        return code

    def stop(self) -> None:
        stop_process_group(self.popen)
        self._reader.join(5)


class Processes:
    def __init__(self) -> None:
        self.all: list[Proc] = []

    def start(self, name: str, args: list[str], cwd: Path = EXAMPLE) -> Proc:
        proc = Proc(name, args, cwd)
        self.all.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.all):
            proc.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`python -m devstack up` in the background; its state (as in .local/stack.json) + "path"."""
    state_path = tmp_path_factory.mktemp("stack") / "stack.json"
    procs = Processes()
    try:
        up = procs.start(
            "devstack", [PYTHON, "-m", "devstack", "up", "--state", str(state_path)], REPO
        )
        up.wait_line("offline stack up", timeout=180)
        state = json.loads(state_path.read_text())
        state["path"] = state_path
        yield state
    finally:
        procs.stop_all()


def aws(stack: dict[str, Any], service: str) -> Any:
    return boto3.client(
        service,
        region_name=stack.get("region", "us-east-1"),
        endpoint_url=stack["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def pinned_ca(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The device CA as a device would have it baked in: the Private CA certificate."""
    pca = aws(stack, "acm-pca")
    answer = pca.get_certificate_authority_certificate(
        CertificateAuthorityArn=stack["outputs"]["CertificateAuthorityArn"]
    )
    path = tmp_path_factory.mktemp("pinned") / "device-ca.pem"
    path.write_text(answer["Certificate"].strip() + "\n")
    return path


class LogFile:
    """A log file another process writes (the stack's broker log), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def output(self) -> str:
        return self.path.read_text(encoding="utf-8") if self.path.exists() else ""

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        """The first line containing ``text``; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.output.splitlines() if text in line), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path}: no line with {text!r}:\n{self.output}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def broker(stack: dict[str, Any]) -> dict[str, Any]:
    """The stack's MQTT broker, as the state file describes it, and its log."""
    mqtt = stack["mqtt"]
    return {
        "host": mqtt["host"],
        "port": mqtt["port"],
        "ca": mqtt["ca_file"],
        "record": Path(mqtt["messages_file"]),
        "log": LogFile(Path(mqtt["log_file"])),
    }


def messages(broker: dict[str, Any]) -> list[dict[str, Any]]:
    path: Path = broker["record"]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop_all()


def start_radio(procs: Processes, controllers: int = 2) -> list[str]:
    proc = procs.start(
        "radio",
        [PYTHON, "-m", "onboarding_ble.radio", *["tcp-server:127.0.0.1:0"] * controllers],
    )
    return list(proc.wait_event(events.RadioReady, timeout=30).transports)


def start_device(
    procs: Processes,
    transport: str,
    dsn: str,
    state_dir: Path,
    pinned_ca: Path,
    broker: dict[str, Any] | None,
    *extra: str,
) -> Proc:
    mqtt = None if broker is None else (f"{broker['host']}:{broker['port']}", broker["ca"])
    argv = device_argv(transport, dsn, state_dir, pinned_ca, mqtt)
    return procs.start(f"device {dsn}", [PYTHON, *argv, *extra])


def said(output: str) -> list[events.Event]:
    """The events in a process's output."""
    return events.parse_all(output.splitlines())


def run_app(
    procs: Processes, transport: str, stack: dict[str, Any], *extra: str, timeout: float = 90
) -> tuple[int, str]:
    proc = procs.start(
        "app",
        [PYTHON, *app_argv(transport, stack["path"], *extra)],
    )
    code = proc.wait(timeout)
    return code, proc.output
