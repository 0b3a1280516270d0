"""Processes for the BLE end-to-end tests: virtual radio, device, app, on the session's stack.

Every process runs in its own session (process group) on 127.0.0.1 free ports and is
killed with its group in a finally block. The stack is the session's offline stack
(tests/e2e/conftest.py), which the example's processes find through its state file, as they
find the one `python -m devstack up --state <file>` starts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest

from devstack.stack import RunningStack
from onboarding_ble import events
from onboarding_ble.processes import Child, Children, app_argv, device_argv

E = TypeVar("E", bound=events.Event)

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "example"
PYTHON = sys.executable


# What the example's processes get on top of onboarding_ble.processes's environment: devstack's
# package (for `python -m devstack up`).
CHILD_ENV = {"PYTHONPATH": str(REPO / "local")}


@pytest.fixture(scope="session")
def stack(offline_stack: RunningStack) -> dict[str, Any]:
    """The session's offline stack as the example's processes see it: its state file (what
    `devstack up` writes to .local/stack.json), read back, plus "path"."""
    state_path = offline_stack.state_path
    assert state_path is not None, "the session's stack writes a state file"
    state: dict[str, Any] = json.loads(state_path.read_text())
    state["path"] = state_path
    return state


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
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    """The example's processes of one test (onboarding_ble.processes's process control, as the demo
    uses it), each logging to its own file; all stopped at the end."""
    children = Children(tmp_path_factory.mktemp("procs"))
    try:
        yield children
    finally:
        children.stop_all()


def start_radio(procs: Children, controllers: int = 2) -> list[str]:
    proc = procs.start(
        "radio",
        ["-m", "onboarding_ble.radio", *["tcp-server:127.0.0.1:0"] * controllers],
        CHILD_ENV,
    )
    return list(proc.wait_for(events.RadioReady, timeout=30).transports)


def start_device(
    procs: Children,
    transport: str,
    dsn: str,
    state_dir: Path,
    pinned_ca: Path,
    broker: dict[str, Any] | None,
    *extra: str,
) -> Child:
    mqtt = None if broker is None else (f"{broker['host']}:{broker['port']}", broker["ca"])
    argv = device_argv(transport, dsn, state_dir, pinned_ca, mqtt)
    return procs.start(f"device-{dsn}", [*argv, *extra], CHILD_ENV)


def said(output: str) -> list[events.Event]:
    """The events in a process's output."""
    return events.parse_all(output.splitlines())


def run_app(
    procs: Children, transport: str, stack: dict[str, Any], *extra: str, timeout: float = 90
) -> tuple[int, str]:
    proc = procs.start("app", app_argv(transport, stack["path"], *extra), CHILD_ENV)
    code = proc.wait(timeout)
    return code, proc.output()
