"""Fixtures for the browser journeys: one Chromium for the module (Playwright, Debian's
chromium), and per test a virtual radio, the Web Bluetooth bridge on it and a fresh page.

The BLE fixtures (the session's stack as the example's processes see it, the pinned CA, the
broker, the processes of a test) are tests/e2e/ble's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onboarding_ble.processes import Children
from onboarding_ble.webbluetooth import chromium
from onboarding_ble.webbluetooth.background import BridgeThread
from tests.e2e.ble.procs import broker, pinned_ca, procs, stack, start_radio  # noqa: F401

from .screens import Screens

REPO = Path(__file__).resolve().parents[3]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """(Playwright's context on Debian's chromium, the browser's DevTools websocket URL)."""
    from playwright.sync_api import sync_playwright

    assert chromium.EXECUTABLE.exists(), chromium.INSTALL_HINT
    assert AXE.exists(), "axe-core is missing: run `make node_modules/.installed` (npm ci)"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(chromium.EXECUTABLE),
            headless=True,
            # a phone's width: the app must work at 360 px
            viewport={"width": 360, "height": 780},
            # the bridge's own DevTools connection (the port is in the profile)
            args=[*chromium.flags(headless=True), "--remote-debugging-port=0"],
        )
        try:
            yield context, chromium.devtools_url(profile)
        finally:
            context.close()


@pytest.fixture
def radio(procs: Children) -> tuple[str, str, str]:  # noqa: F811 - procs is a fixture
    """A virtual radio of this test's own: (the device's transport, the bridge's, a second
    device's)."""
    device_transport, bridge_transport, second = start_radio(procs, controllers=3)
    return device_transport, bridge_transport, second


@pytest.fixture
def bridge(browser: tuple[Any, str], radio: tuple[str, str, str]) -> Iterator[BridgeThread]:
    """The Web Bluetooth bridge between the browser and this test's radio."""
    running = BridgeThread(browser[1], radio[1])
    try:
        yield running
    finally:
        running.stop()
        print("the bridge:", *running.bridge.log, sep="\n  ")  # shown when a test fails


@pytest.fixture
def page(browser: tuple[Any, str], bridge: BridgeThread) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage: signed out), bridged."""
    tab = browser[0].new_page()
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture
def screens(page: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Screens:
    """Screenshots of every screen (in the test's tmp dir) and the axe-core check of each."""
    return Screens(page, tmp_path / "screens", AXE)
