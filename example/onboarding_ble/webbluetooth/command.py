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
import importlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack import hints
from devstack.errors import DevstackError
from devstack.stack import DEFAULT_STATE, read_state, stack_process_alive
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
            "devices on a virtual BLE radio: the chooser is offered the devices the radio hears "
            "advertising the onboarding service and the first of them is picked (keep one "
            "device on the radio), and every read and write the page makes "
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
    """The first Ctrl-C or SIGTERM stops everything; more while it stops change nothing (a
    second KeyboardInterrupt escaping the cleanup would end the command by SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # Ctrl-C, and SIGTERM (`kill`) alike, stop it cleanly and quietly, whenever they come
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    outcome = {"failed": True}  # until the bridge ends as it should (browser closed, Ctrl-C)
    try:
        with contextlib.ExitStack() as stack:
            try:
                # held since __main__ while the modules loaded: one that came is taken here
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
                url, executable, headless = _prepare(args)
                _browse(stack, args, url, executable, headless, outcome)
            except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) before the bridge ran: no failure
                outcome["failed"] = False
                print()
    except KeyboardInterrupt:  # a second one while stopping
        print()
    return 0


def _prepare(args: argparse.Namespace) -> tuple[str, Path, bool]:
    """The bridge's log lines on stdout; the app's URL, Chromium, and whether it is headless."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bridge_log = logging.getLogger("onboarding_ble.webbluetooth")
    bridge_log.setLevel(logging.INFO)
    if not bridge_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("bridge: %(message)s"))
        bridge_log.addHandler(handler)
    bridge_log.propagate = False
    url = args.url or _app_url(Path(args.state))
    headless = args.headless or not os.environ.get("DISPLAY")
    try:
        executable = chromium.executable()
    except chromium.ChromiumError as exc:
        raise DevstackError(str(exc)) from None
    return url, executable, headless


def _browse(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    url: str,
    executable: Path,
    headless: bool,
    outcome: dict[str, bool],
) -> None:
    _load_bridge()
    work = Path(tempfile.mkdtemp(prefix="devstack-browser-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    transport = args.transport or _start_radio(stack, args.state, outcome)
    profile = work / "profile"
    mode = "headless" if headless else "in a window"
    print(f"starting {executable} {mode} on {url} (fresh profile {profile})", flush=True)
    browser = chromium.start(url, profile, headless=headless)
    stack.callback(browser.stop)
    stack.callback(print, "stopped the browser")
    print(f"bridging its Web Bluetooth to the radio at {transport}", flush=True)
    print("Ctrl-C stops the browser and the bridge.", flush=True)
    stopping = True  # unless the bridge ends because the browser closed
    try:
        stopping = asyncio.run(_bridge(browser.ws_url, transport))
    finally:  # asyncio.run leaves the signals at their defaults: while stopping, ignore more
        handler = signal.SIG_IGN if stopping else _interrupt
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    outcome["failed"] = False


def _load_bridge() -> None:
    """Load the bridge's modules (bumble) with Ctrl-C and SIGTERM held until they are loaded,
    then take them: Python 3.11 turns a KeyboardInterrupt raised inside a class statement into a
    RuntimeError, which would end a Ctrl-C'd start with a traceback instead of a clean stop.
    Here, not at the top: --help answers without loading bumble."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        importlib.import_module("onboarding_ble.webbluetooth.bridge")
        importlib.import_module("onboarding_ble.webbluetooth.cdp")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _app_url(state_path: Path) -> str:
    """The running stack's app_url; an error when the stack is not up (no state file, or the
    process it names has stopped: a crash or a kill leaves the file behind)."""
    state = read_state(state_path)
    if not stack_process_alive(state):
        raise DevstackError(
            f"the offline stack is not up (the process {state_path} names, pid "
            f"{state.get('pid')}, has stopped); start it with "
            f"`{hints.command('up', state=state_path)}`"
        )
    url = state.get("app_url")
    if not url:
        raise DevstackError(f"{state_path} names no app_url: is the stack up (`make up`)?")
    return str(url)


async def _bridge(ws_url: str, transport: str) -> bool:
    """Bridge until the browser closes (False) or Ctrl-C or SIGTERM asks to stop (True)."""
    # loaded by _load_bridge already
    from onboarding_ble.webbluetooth.bridge import Bridge, open_radio
    from onboarding_ble.webbluetooth.cdp import CdpConnection

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # in the loop: every task ends in order
        loop.add_signal_handler(signum, stop.set)
    hci, radio = await open_radio(transport)
    cdp = await CdpConnection.connect(ws_url)
    bridge = Bridge(cdp, radio)
    try:
        await bridge.start()
        closed = asyncio.ensure_future(cdp.closed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (closed, stopped):
            waiter.cancel()
        print("the browser closed" if cdp.closed.is_set() else "")
    finally:
        await bridge.close()
        await cdp.close()
        await hci.close()
    return stop.is_set()


def _start_radio(stack: contextlib.ExitStack, state: str, outcome: dict[str, bool]) -> str:
    from onboarding_ble import events
    from onboarding_ble.processes import Children

    log_dir = Path(tempfile.mkdtemp(prefix="devstack-radio-"))
    stack.callback(_keep_log_if_failed, log_dir, outcome)  # after the radio stopped
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


def _keep_log_if_failed(log_dir: Path, outcome: dict[str, bool]) -> None:
    """The radio's log, removed unless the command failed (then where it is kept is said)."""
    if outcome["failed"]:
        print(f"the radio's log is kept in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
