"""The example's processes, started and followed from Python: the virtual radio, device.py
and provisioning_app.py, each in its own process group, its output in ``<log dir>/<name>.log``,
followed through its event lines (onboarding_ble.events); and the offline stack's MQTT broker
as its state file describes it (``BrokerInfo``).

``make demo`` (example/demo.py) builds its steps from these pieces, and the end-to-end tests
drive the example with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from onboarding_ble import events

E = TypeVar("E", bound=events.Event)
EXAMPLE = Path(__file__).resolve().parents[1]


def stop_process_group(popen: subprocess.Popen[str]) -> None:
    """SIGTERM to the child's process group, SIGKILL if it lingers; SIGKILL to the group also
    when the leader is already gone, so nothing it started outlives it."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)


class ChildError(RuntimeError):
    """A child process did not do what the demo waited for (the message names its log)."""


class Child:
    """One of our scripts in its own process group, its output in ``log_dir/<name>.log``."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = EXAMPLE,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        for again in range(2, 1000):  # a name started again gets a log of its own
            if not self.log_path.exists():
                break
            self.log_path = log_dir / f"{name}-{again}.log"
        self._log: IO[str] = self.log_path.open("w", encoding="utf-8")
        child_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        child_env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), child_env.get("PYTHONPATH", "")])
        self.popen = subprocess.Popen(  # noqa: S603 - our own scripts, fixed arguments
            [sys.executable, *args],
            cwd=cwd,
            env=child_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def events(self) -> list[events.Event]:
        """The event lines it printed so far (onboarding_ble.events)."""
        return events.parse_all(self.output().splitlines())

    def event(self, kind: type[E], where: Callable[[E], bool] | None = None) -> E | None:
        """Its first event of type ``kind`` (for which ``where`` holds), if any yet."""
        return next(
            (e for e in self.events() if isinstance(e, kind) and (where is None or where(e))),
            None,
        )

    def wait_for(
        self, kind: type[E], timeout: float = 30.0, where: Callable[[E], bool] | None = None
    ) -> E:
        """Its first event of type ``kind`` (for which ``where`` holds); ChildError if it exits
        or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None
            if (found := self.event(kind, where)) is not None:
                return found
            if exited:
                raise ChildError(
                    f"{self.name} exited ({self.popen.returncode}) without {kind.NAME}; "
                    f"see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise ChildError(
                    f"{self.name}: no {kind.NAME} within {timeout:g} s; see {self.log_path}"
                )
            time.sleep(0.05)

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        """Its first output line containing ``text`` (a line that is not an event, such as
        devstack's own); ChildError if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None
            found = next((line for line in self.output().splitlines() if text in line), None)
            if found is not None:
                return found
            if exited or time.monotonic() > deadline:
                raise ChildError(f"{self.name}: no line with {text!r}; see {self.log_path}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """The exit status; ChildError if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ChildError(
                f"{self.name} still running after {timeout:g} s; see {self.log_path}"
            ) from None

    def stop(self) -> None:
        stop_process_group(self.popen)
        self._log.close()


class Children:
    """The processes of one demo run; ``stop_all()`` (or leaving the ``with``) stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.all: list[Child] = []

    def start(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Path = EXAMPLE,
    ) -> Child:
        child = Child(name, args, self.log_dir, env, cwd)
        self.all.append(child)
        return child

    def named(self, name: str) -> Child:
        """The child started as ``name`` (the latest, if several were)."""
        for child in reversed(self.all):
            if child.name == name:
                return child
        raise ChildError(f"no process named {name!r} was started")

    def stop_all(self) -> list[str]:
        """Stop every child, newest first; the names of those stopped."""
        stopped = []
        while self.all:
            child = self.all.pop()
            child.stop()
            stopped.append(child.name)
        return stopped

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop_all()


@dataclass(frozen=True)
class BrokerInfo:
    """The offline stack's MQTT broker, from the state file's ``mqtt`` (``devstack up``)."""

    host: str
    port: int
    ca: str  # the broker's server CA, for the device's --mqtt-ca
    record: Path  # every accepted publish, one JSON object a line
    log: Path  # the broker's ADMIT / REFUSE / DISCONNECT / DENY lines

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BrokerInfo:
        mqtt = state.get("mqtt")
        if not mqtt:
            raise ChildError(
                "the state file has no MQTT broker; restart the offline stack (`make up`)"
            )
        return cls(
            mqtt["host"],
            int(mqtt["port"]),
            mqtt["ca_file"],
            Path(mqtt["messages_file"]),
            Path(mqtt["log_file"]),
        )

    def wait_for(self, marker: str, timeout: float) -> str:
        """The first line of the broker's log containing ``marker``; ChildError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
            found = next((line for line in text.splitlines() if marker in line), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise ChildError(f"broker: no {marker!r} within {timeout:g} s; see {self.log}")
            time.sleep(0.05)


def start_radio(children: Children, name: str = "radio") -> list[str]:
    """The virtual radio with two controllers; the device's and the app's HCI transports."""
    radio = children.start(
        name, ["-m", "onboarding_ble.radio", "tcp-server:127.0.0.1:0", "tcp-server:127.0.0.1:0"]
    )
    return list(radio.wait_for(events.RadioReady, 30).transports)


def device_argv(
    transport: str,
    dsn: str,
    state_dir: Path,
    pinned_ca: Path,
    mqtt: tuple[str, str] | None,
    *,
    thing_prefix: str | None = None,
    minimum_scheme: str | None = None,
) -> list[str]:
    """device.py's command line (from example/); ``mqtt`` is (endpoint, the broker's CA), or
    None to stop after provisioning. The endpoint, ``thing_prefix`` and ``minimum_scheme`` are
    the device's firmware configuration, as a factory would set it."""
    argv = ["device.py", "--transport", transport, "--dsn", dsn]
    argv += ["--state-dir", str(state_dir), "--ca", str(pinned_ca)]
    if thing_prefix is not None:
        argv += ["--thing-prefix", thing_prefix]
    if minimum_scheme is not None:
        argv += ["--minimum-scheme", minimum_scheme]
    if mqtt is None:
        return [*argv, "--no-mqtt"]
    return [*argv, "--iot-endpoint", mqtt[0], "--mqtt-ca", mqtt[1]]


def app_argv(transport: str, state_path: Path, *extra: str) -> list[str]:
    """provisioning_app.py's command line (from example/) against an offline stack."""
    return ["provisioning_app.py", "--transport", transport, "--state", str(state_path), *extra]


def start_device(
    children: Children,
    transport: str,
    dsn: str,
    state_dir: Path,
    pinned_ca: Path,
    broker: BrokerInfo,
    name: str = "device",
    *,
    thing_prefix: str | None = None,
    minimum_scheme: str | None = None,
    extra: tuple[str, ...] = (),
) -> Child:
    """device.py: provisions over BLE unless ``state_dir`` holds credentials, then MQTT; its
    firmware pins the broker as its endpoint (and ``thing_prefix``, ``minimum_scheme``);
    ``extra``: more options (``--renewals 1 --renew-after 1``...)."""
    mqtt = (broker.endpoint, broker.ca)
    argv = device_argv(
        transport,
        dsn,
        state_dir,
        pinned_ca,
        mqtt,
        thing_prefix=thing_prefix,
        minimum_scheme=minimum_scheme,
    )
    return children.start(name, [*argv, *extra])


def start_app(
    children: Children,
    transport: str,
    state_path: Path,
    dsn: str,
    login: tuple[str, str] | None = None,
    name: str = "app",
) -> Child:
    """provisioning_app.py; ``login`` (user, password) goes in its environment, not its argv."""
    env = None
    if login is not None:
        env = {"ONBOARDING_USERNAME": login[0], "ONBOARDING_PASSWORD": login[1]}
    return children.start(name, app_argv(transport, state_path, "--dsn", dsn), env)


def received_messages(broker: BrokerInfo) -> list[dict[str, Any]]:
    """What the broker accepted so far: {"client_id", "topic", "payload"} each."""
    if not broker.record.exists():
        return []
    lines = broker.record.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
