"""The BLE + MQTT half of `make demo`, against an offline stack that is already up.

    python -m onboarding_ble.demo --state .local/stack.json [--dsn SN-0001] [--dir .local/demo]

Starts the virtual radio, the broker, the device and the app as separate processes (each in
its own process group), waits for the device's hello to reach the broker, then stops them
all. `run_demo_ble()` is the same thing for callers in Python (devstack's `demo` command).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

EXAMPLE = Path(__file__).resolve().parents[1]


class _Child:
    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")])
        self.popen = subprocess.Popen(  # noqa: S603 - our own scripts, fixed arguments
            [sys.executable, *args],
            cwd=EXAMPLE,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if marker in line:
                    return line
            if self.popen.poll() is not None and marker not in self.output():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no {marker!r} (see {self.log_path})")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


def fetch_pinned_ca(state: dict[str, Any], path: Path) -> Path:
    """What the factory bakes into the device: the Private CA certificate."""
    from onboarding_ble.broker import fetch_private_ca

    path.write_bytes(
        fetch_private_ca(
            state.get("endpoint_url"),
            state.get("region", "us-east-1"),
            state["outputs"]["CertificateAuthorityArn"],
        )
    )
    return path


def run_demo_ble(state_path: Path, workdir: Path, dsn: str | None = None) -> int:
    """Radio, broker, device and app as processes; 0 when the device's hello arrived."""
    dsn = dsn or f"demo-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text(encoding="utf-8"))
    pinned = fetch_pinned_ca(state, workdir / "device-ca.pem")
    record = workdir / "broker-messages.jsonl"
    children: list[_Child] = []
    try:
        radio = _Child(
            "radio",
            ["-m", "onboarding_ble.radio", "tcp-server:127.0.0.1:0", "tcp-server:127.0.0.1:0"],
            workdir,
        )
        children.append(radio)
        transports = json.loads(radio.wait_for('{"transports"', 30))["transports"]
        broker = _Child(
            "broker",
            [
                "-m",
                "onboarding_ble.broker",
                "--state",
                str(state_path),
                "--port",
                "0",
                "--dir",
                str(workdir / "broker"),
                "--record",
                str(record),
            ],
            workdir,
        )
        children.append(broker)
        ready = json.loads(broker.wait_for('{"host"', 60))
        device = _Child(
            "device",
            [
                "device.py",
                "--transport",
                transports[0],
                "--dsn",
                dsn,
                "--state-dir",
                str(workdir / "devices" / dsn),
                "--ca",
                str(pinned),
                "--mqtt-endpoint",
                f"{ready['host']}:{ready['port']}",
                "--mqtt-ca",
                ready["ca"],
            ],
            workdir,
        )
        children.append(device)
        device.wait_for("ADVERTISING", 30)
        app = _Child(
            "app",
            [
                "provisioning_app.py",
                "--transport",
                transports[1],
                "--state",
                str(state_path),
                "--dsn",
                dsn,
            ],
            workdir,
        )
        children.append(app)
        app_code = app.popen.wait(120)
        print(app.output(), end="")
        if app_code != 0:
            return app_code
        device.wait_for("HELLO_PUBLISHED", 60)
        for line in record.read_text(encoding="utf-8").splitlines():
            print(f"broker received: {line}")
        return 0
    finally:
        for child in reversed(children):
            child.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m onboarding_ble.demo",
        description="BLE provisioning + MQTT hello against a running offline stack.",
    )
    parser.add_argument("--state", type=Path, default=Path(".local/stack.json"))
    parser.add_argument("--dir", type=Path, default=Path(".local/demo"))
    parser.add_argument("--dsn", help="device serial number (default: random)")
    args = parser.parse_args(argv)
    try:
        return run_demo_ble(args.state.resolve(), args.dir.resolve(), args.dsn)
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
