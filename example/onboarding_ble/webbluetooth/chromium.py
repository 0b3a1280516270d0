"""Debian's ``chromium``, started for Web Bluetooth emulation: a fresh profile, a DevTools port.

``FLAGS`` are what every start needs (Playwright passes the same to the browser it launches):
Web Bluetooth is behind a feature flag on Linux; the closed network here refuses the browser's
background connections, so they are switched off; and as root Chromium only starts without
its sandbox.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

EXECUTABLE = Path("/usr/bin/chromium")

FLAGS = (
    "--enable-features=WebBluetooth",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
)

INSTALL_HINT = (
    "Debian's chromium is not installed: run `sudo apt-get install -y chromium` "
    "(or, as root, `make chromium`)"
)


class ChromiumError(Exception):
    """Chromium is missing, or did not start."""


def flags(*, headless: bool, as_root: bool | None = None) -> list[str]:
    """The command-line flags for a start (without the profile and the DevTools port)."""
    root = os.geteuid() == 0 if as_root is None else as_root
    return [*FLAGS, *(["--no-sandbox"] if root else []), *(["--headless"] if headless else [])]


def executable() -> Path:
    if not EXECUTABLE.exists():
        raise ChromiumError(INSTALL_HINT)
    return EXECUTABLE


def devtools_url(
    profile: Path, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> str:
    """The browser's DevTools websocket, from the ``DevToolsActivePort`` file Chromium writes
    into its profile once it listens (``--remote-debugging-port=0`` picks a free port)."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ChromiumError(f"chromium exited with status {process.returncode}")
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if len(lines) >= 2 and lines[0].isdigit():
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    raise ChromiumError(f"chromium did not open its DevTools port within {timeout:.0f} s")


@dataclass
class Chromium:
    """A running chromium (``start``); ``stop()`` ends it and removes its profile."""

    process: subprocess.Popen[bytes]
    profile: Path
    ws_url: str

    def stop(self) -> None:
        """End the browser and every process it started (its own session: a Ctrl-C meant for
        the command is the command's to handle, and what Chromium signals on its way out
        never reaches the command)."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(10)
        _signal_group(self.process, signal.SIGKILL)  # helpers left behind by the browser
        shutil.rmtree(self.profile, ignore_errors=True)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def start(url: str, profile: Path, *, headless: bool) -> Chromium:
    """Chromium on ``url`` with the fresh profile ``profile`` (created; removed by stop())."""
    profile.mkdir(parents=True, exist_ok=False)
    argv = [
        str(executable()),
        *flags(headless=headless),
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        url,
    ]
    process = subprocess.Popen(  # noqa: S603 - our argv
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return Chromium(process, profile, devtools_url(profile, process=process))
    except BaseException:
        Chromium(process, profile, "").stop()
        raise
