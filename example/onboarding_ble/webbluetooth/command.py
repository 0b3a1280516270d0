"""``python -m onboarding_ble.webbluetooth`` (``make browser``): Chromium on the running
stack's phone app, its Web Bluetooth answered
by the devices on the virtual radio (bridge.Bridge).

With no ``--transport`` it starts a virtual radio of its own (example/onboarding_ble/radio.py,
two controllers: one for the bridge, one for a device) and prints the command that puts the
example device on it. Ctrl-C (or closing the browser) stops the browser, the bridge and that
radio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack import hints
from devstack.errors import DevstackError
from devstack.stack import DEFAULT_STATE, read_state
from onboarding_ble.webbluetooth import chromium

REPO = Path(__file__).resolve().parents[3]


PROG = ".venv/bin/python -m onboarding_ble.webbluetooth"  # as the up banner prints it


def build_parser() -> argparse.ArgumentParser:
    browser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Start Debian's chromium (a fresh profile; headed when $DISPLAY is set, else "
            "headless) on the running stack's phone app (app_url in the state file), with its "
            "Web Bluetooth answered through Chromium's DevTools BluetoothEmulation by the "
            "devices on a virtual BLE radio: the chooser lists the devices the radio hears "
            "advertising the onboarding service, and every read and write the page makes "
            "reaches the device. Without --transport a radio is started and the command that "
            "puts the example device on it is printed. Ctrl-C stops the browser, the bridge "
            "and that radio."
        ),
    )
    browser.add_argument(
        "--transport",
        help="the bridge's HCI transport on a radio already running "
        "(tcp-client:127.0.0.1:PORT; default: start a radio)",
    )
    browser.add_argument(
        "--headless", action="store_true", help="no window even when $DISPLAY is set"
    )
    browser.add_argument("--url", help="open this URL instead of the stack's app_url")
    browser.add_argument(
        "--state",
        default=str(DEFAULT_STATE),
        help=f"state file of the running stack (default {DEFAULT_STATE})",
    )
    return browser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DevstackError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # Ctrl-C, and SIGTERM (`kill`) alike, stop it cleanly
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bridge_log = logging.getLogger("onboarding_ble.webbluetooth")
    bridge_log.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("bridge: %(message)s"))
    bridge_log.addHandler(handler)
    bridge_log.propagate = False
    url = args.url or read_state(Path(args.state)).get("app_url")
    if not url:
        raise DevstackError(f"{args.state} names no app_url: is the stack up (`make up`)?")
    headless = args.headless or not os.environ.get("DISPLAY")
    try:
        executable = chromium.executable()
    except chromium.ChromiumError as exc:
        raise DevstackError(str(exc)) from None
    with contextlib.ExitStack() as stack:
        transport = args.transport or _start_radio(stack, args.state)
        profile = Path(tempfile.mkdtemp(prefix="devstack-browser-")) / "profile"
        mode = "headless" if headless else "in a window"
        print(f"starting {executable} {mode} on {url} (fresh profile {profile})", flush=True)
        browser = chromium.start(url, profile, headless=headless)
        stack.callback(browser.stop)
        stack.callback(print, "stopped the browser")
        print(f"bridging its Web Bluetooth to the radio at {transport}", flush=True)
        print("Ctrl-C stops the browser and the bridge.", flush=True)
        try:
            asyncio.run(_bridge(browser.ws_url, transport))
        except KeyboardInterrupt:
            print()
    return 0


async def _bridge(ws_url: str, transport: str) -> None:
    # here, not at the top: --help answers without loading bumble
    from onboarding_ble.webbluetooth.bridge import Bridge, open_radio
    from onboarding_ble.webbluetooth.cdp import CdpConnection

    hci, radio = await open_radio(transport)
    cdp = await CdpConnection.connect(ws_url)
    bridge = Bridge(cdp, radio)
    try:
        await bridge.start()
        await cdp.closed.wait()  # the browser closed
        print("the browser closed")
    finally:
        await bridge.close()
        await cdp.close()
        await hci.close()


def _start_radio(stack: contextlib.ExitStack, state: str) -> str:
    from onboarding_ble import events
    from onboarding_ble.processes import Children

    log_dir = Path(tempfile.mkdtemp(prefix="devstack-radio-"))
    children = stack.enter_context(Children(log_dir))
    radio = children.start(
        "radio", ["-m", "onboarding_ble.radio", "tcp-server:127.0.0.1:0", "tcp-server:127.0.0.1:0"]
    )
    bridge_transport, device_transport = radio.wait_for(events.RadioReady, timeout=30).transports
    print(f"started a virtual radio (log {radio.log_path})")
    ca_cert = hints.command("ca-cert", "--out", ".local/device-ca.pem", state=state)
    device = [".venv/bin/python", "example/device.py", "--transport", device_transport]
    device += ["--dsn", "SN-0001", "--ca", ".local/device-ca.pem"]
    device += ["--state-dir", ".local/devices/SN-0001", "--state", state]
    print("put the example device on it (in another terminal, from the repository):")
    print(f"  {ca_cert}")
    print(f"  {shlex.join(device)}", flush=True)
    return str(bridge_transport)
