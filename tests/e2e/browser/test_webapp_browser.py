"""The phone app (webapp/) in a real browser, against the real device logic.

Headless Debian chromium, driven by Playwright as a person would (by the accessible names
the page gives its controls); its Web Bluetooth is Chromium's DevTools emulation, bridged by
onboarding_ble.webbluetooth to a virtual radio on which example/device.py runs: every read and
write the page makes reaches the device's own GATT service code. Each journey screenshots
every screen and runs axe-core on it (screens.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from devstack.stack import RunningStack
from onboarding_ble import events, renewal
from onboarding_ble.processes import Children
from tests.e2e.ble.procs import aws, messages, start_device
from tests.support.offline import new_member, parameter_updated, post_certificate, unique_dsn

from .screens import Screens

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# One worker, one Chromium and one stack for the journeys (tests/conftest.py): they mostly wait
# on the browser, the radio and the device, and run beside the other offline-stack modules.
OFFLINE_STACK_GROUP = "offline-stack-browser"

REPO = Path(__file__).resolve().parents[3]
WAIT_MS = 60_000  # a whole onboarding: the API, the radio, the device's checks


def sign_in(page: Any, screens: Screens, app_url: str, email: str, password: str) -> None:
    page.goto(app_url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screens.check("sign-in")
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def onboard_screen(page: Any, screens: Screens) -> None:
    expect(page.get_by_role("heading", name="Onboard a device")).to_be_visible()
    screens.check("onboard")


def alert_of(page: Any) -> Any:
    return page.locator("#screen-onboard [role=alert]")


def test_a_device_is_onboarded_from_the_browser_then_revoked_and_cut_off(
    offline_stack: RunningStack,
    stack: dict[str, Any],
    broker: dict[str, Any],
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a factory-fresh device advertising on the radio, and its owner signed in
    dsn = unique_dsn("WEB")
    state_dir = tmp_path / dsn
    device = start_device(procs, radio[0], dsn, state_dir, pinned_ca, broker)
    device.wait_for(events.Advertising)
    owner = new_member(offline_stack)
    sign_in(page, screens, offline_stack.app_url, owner.email, owner.password)
    onboard_screen(page, screens)

    # WHEN she finds the device and onboards it
    page.get_by_role("button", name="Find a device").click()
    success = page.get_by_role("heading", name="Device onboarded")
    expect(success).to_be_visible(timeout=WAIT_MS)
    shot = screens.check("onboarded")

    # THEN the page names the thing and the certificate's expiry ...
    meta_path = state_dir / "device.json"
    assert device.wait(60) == 0, device.output()
    meta = json.loads(meta_path.read_text())
    thing = meta["thingName"]
    assert thing.endswith(dsn)
    expect(page.locator("#screen-onboard")).to_contain_text(thing)
    expect(page.locator("#screen-onboard")).to_contain_text(dsn)
    expect(page.locator("#result-expiry")).to_have_text(re.compile(r"\d{4}"))
    # ... the device decrypted and stored its key (files 0600), and said hello over mutual TLS
    for name in ("certificate.pem", "private_key.pem"):
        assert (state_dir / name).stat().st_mode & 0o777 == 0o600
    hellos = [m for m in messages(broker) if m["topic"] == f"things/{thing}/hello"]
    assert len(hellos) == 1 and hellos[0]["client_id"] == thing
    assert shot.stat().st_size > 0  # docs/images/webapp-onboarded.png is one of these

    # WHEN she revokes it from "My devices"
    page.get_by_role("button", name="My devices").click()
    expect(page.get_by_role("heading", name="My devices")).to_be_visible()
    expect(page.get_by_role("cell", name=dsn)).to_be_visible()
    screens.check("my-devices")
    # (the page asks first: dismissed, nothing happens)
    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def on_dialog(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return on_dialog

    page.once("dialog", answer(False))
    page.get_by_role("button", name=f"Revoke {dsn}").click()
    assert asked and dsn in asked[0]
    iot = aws(stack, "iot")
    described = iot.describe_certificate(certificateId=meta["certificateId"])
    assert described["certificateDescription"]["status"] == "ACTIVE"
    page.once("dialog", answer(True))
    page.get_by_role("button", name=f"Revoke {dsn}").click()
    expect(page.locator("#devices-status")).to_contain_text("revoked", timeout=WAIT_MS)
    screens.check("revoked")

    # THEN IoT has its certificate REVOKED and the broker refuses the device
    described = iot.describe_certificate(certificateId=meta["certificateId"])
    assert described["certificateDescription"]["status"] == "REVOKED"
    again = start_device(procs, "none", dsn, state_dir, pinned_ca, broker)
    assert again.wait(60) == 4, again.output()  # EXIT_MQTT: cut off


def test_a_wrong_password_is_refused_on_the_page(
    offline_stack: RunningStack, page: Any, screens: Screens
) -> None:
    # GIVEN a member, WHEN she signs in with a wrong password, from the keyboard alone
    member = new_member(offline_stack)
    page.goto(offline_stack.app_url)
    email = page.get_by_role("textbox", name="Email")
    expect(email).to_be_visible()
    screens.check("sign-in")
    for _ in range(5):  # Tab reaches the first field (skip links or a header may come first)
        if email.evaluate("field => field === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(email).to_be_focused()
    page.keyboard.type(member.email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password", exact=True)).to_be_focused()
    page.keyboard.type(member.password + "x")
    page.keyboard.press("Enter")

    # THEN the page says so and stays on the sign-in screen
    alert = page.locator("#screen-sign-in [role=alert]")
    expect(alert).to_contain_text("Wrong email or password", timeout=WAIT_MS)
    screens.check("wrong-password")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert member.password not in alert.inner_text()


def test_the_user_cancelling_the_chooser_is_told_what_to_do(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    bridge: Any,
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a device in range, and its owner signed in
    dsn = unique_dsn("WEB")
    device = start_device(procs, radio[0], dsn, tmp_path / dsn, pinned_ca, None)
    device.wait_for(events.Advertising)
    owner = new_member(offline_stack)
    sign_in(page, screens, offline_stack.app_url, owner.email, owner.password)
    onboard_screen(page, screens)

    # WHEN she closes the chooser without picking it
    bridge.set_choose(lambda _devices: None)
    page.get_by_role("button", name="Find a device").click()

    # THEN the page says so, with its code, and offers to try again
    expect(alert_of(page)).to_contain_text("CHOOSER_CANCELLED", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    screens.check("chooser-cancelled")
    assert not any((tmp_path / dsn).glob("*.pem"))


def test_a_link_lost_during_data_is_shown_and_try_again_succeeds(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    bridge: Any,
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a device, its owner signed in, and a link that drops after one DATA chunk
    dsn = unique_dsn("WEB")
    state_dir = tmp_path / dsn
    device = start_device(procs, radio[0], dsn, state_dir, pinned_ca, None)
    device.wait_for(events.Advertising)
    owner = new_member(offline_stack)
    sign_in(page, screens, offline_stack.app_url, owner.email, owner.password)
    onboard_screen(page, screens)
    bridge.cut_links_after_data_writes(1)

    # WHEN she onboards it (the page reconnects and resends on its own, and gives up)
    page.get_by_role("button", name="Find a device").click()

    # THEN the page shows the lost link; the device stored nothing
    expect(alert_of(page)).to_contain_text("BLE_DISCONNECTED", timeout=WAIT_MS)
    screens.check("link-lost")
    assert not (state_dir / "certificate.pem").exists()
    assert "dropping the link" in "\n".join(bridge.bridge.log)

    # WHEN the link holds again and she presses "Try again", then finds the device again
    bridge.cut_links_after_data_writes(None)
    page.get_by_role("button", name="Try again").click()
    page.get_by_role("button", name="Find a device").click()

    # THEN the device is onboarded
    expect(page.get_by_role("heading", name="Device onboarded")).to_be_visible(timeout=WAIT_MS)
    screens.check("onboarded-after-retry")
    assert device.wait(60) == 0, device.output()
    assert (state_dir / "certificate.pem").exists()


def test_a_device_that_dies_during_data_leaves_the_next_one_onboardable(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    bridge: Any,
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a device that dies (its firmware killed) while the page sends it its answer
    first = start_device(procs, radio[0], unique_dsn("WEB"), tmp_path / "first", pinned_ca, None)
    first.wait_for(events.Advertising)
    owner = new_member(offline_stack)
    sign_in(page, screens, offline_stack.app_url, owner.email, owner.password)
    onboard_screen(page, screens)
    page.get_by_role("button", name="Find a device").click()
    deadline = time.monotonic() + 60
    while "page: write DATA" not in bridge.bridge.log and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    expect(alert_of(page)).to_contain_text("BLE_DISCONNECTED", timeout=WAIT_MS)
    # WHEN another device comes and she tries again, without reloading the page
    dsn = unique_dsn("WEB")
    second = start_device(procs, radio[2], dsn, tmp_path / "second", pinned_ca, None)
    second.wait_for(events.Advertising)
    page.get_by_role("button", name="Try again").click()
    page.get_by_role("button", name="Find a device").click()
    # THEN the chooser offers the live device, not the dead one, and the radio connects to it
    # (the dead device's connection attempt, cancelled, no longer blocks the radio)
    expect(page.get_by_role("heading", name="Device onboarded")).to_be_visible(timeout=WAIT_MS)
    assert second.wait(60) == 0, second.output()
    assert (tmp_path / "second" / "certificate.pem").exists()


def test_after_a_reload_a_second_device_is_onboarded(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    bridge: Any,
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a device onboarded from the page
    first, second = unique_dsn("WEB"), unique_dsn("WEB")
    device = start_device(procs, radio[0], first, tmp_path / first, pinned_ca, None)
    device.wait_for(events.Advertising)
    owner = new_member(offline_stack)
    sign_in(page, screens, offline_stack.app_url, owner.username, owner.password)
    onboard_screen(page, screens)
    page.get_by_role("button", name="Find a device").click()
    expect(page.get_by_role("heading", name="Device onboarded")).to_be_visible(timeout=WAIT_MS)
    assert device.wait(60) == 0, device.output()

    # WHEN she reloads the page (F5) and finds a second device
    other = start_device(procs, radio[2], second, tmp_path / second, pinned_ca, None)
    other.wait_for(events.Advertising)
    page.reload()
    onboard_screen(page, screens)  # (still signed in: the session is the tab's)
    page.get_by_role("button", name="Find a device").click()

    # THEN the second device is onboarded too
    expect(page.get_by_role("heading", name="Device onboarded")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#screen-onboard")).to_contain_text(second)
    screens.check("onboarded-after-reload")
    assert other.wait(60) == 0, other.output()
    assert (tmp_path / second / "certificate.pem").exists()


def test_an_api_refusal_half_way_shows_its_code(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    # GIVEN a DSN another member already owns, and a (reset) device with it in range
    dsn = unique_dsn("WEB")
    _key, csr = renewal.new_key_and_csr(dsn)
    status, _ = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "csr": csr}, new_member(offline_stack).id_token
    )
    assert status == 200
    state_dir = tmp_path / dsn
    device = start_device(procs, radio[0], dsn, state_dir, pinned_ca, None)
    device.wait_for(events.Advertising)
    member = new_member(offline_stack)
    _key, csr = renewal.new_key_and_csr(dsn)
    status, refusal = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "csr": csr}, member.id_token
    )
    assert status in (403, 409), refusal  # what the API answers this member for this DSN

    # WHEN the member tries to onboard it
    sign_in(page, screens, offline_stack.app_url, member.email, member.password)
    onboard_screen(page, screens)
    page.get_by_role("button", name="Find a device").click()

    # THEN the page shows the API's code; the device was told (ERR_APP) and stored nothing
    expect(alert_of(page)).to_contain_text(refusal["code"], timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    screens.check("api-refused")
    device.wait_for(events.StatusChanged, where=lambda e: e.status == "ERR_APP")
    assert not (state_dir / "certificate.pem").exists()


def test_with_attestation_on_a_device_not_in_the_allowlist_is_refused(
    offline_stack: RunningStack,
    pinned_ca: Path,
    procs: Children,
    radio: tuple[str, str, str],
    page: Any,
    screens: Screens,
    tmp_path: Path,
) -> None:
    with parameter_updated(offline_stack, "RequireAttestation", "true"):
        # GIVEN a device with a factory key the allowlist does not hold, and a member
        dsn = unique_dsn("WEB")
        state_dir = tmp_path / dsn
        device = start_device(procs, radio[0], dsn, state_dir, pinned_ca, None, "--attestation")
        device.wait_for(events.Advertising)
        member = new_member(offline_stack)

        # WHEN she onboards it
        sign_in(page, screens, offline_stack.app_url, member.email, member.password)
        onboard_screen(page, screens)
        page.get_by_role("button", name="Find a device").click()

        # THEN the page shows the API's code and the device stored nothing
        expect(alert_of(page)).to_contain_text("DEVICE_NOT_ALLOWED", timeout=WAIT_MS)
        screens.check("not-allowed")
        assert not (state_dir / "certificate.pem").exists()


def test_a_device_changes_hands_from_my_devices(
    offline_stack: RunningStack, page: Any, screens: Screens
) -> None:
    # GIVEN a device its owner onboarded (through the API: no radio needed here), and a buyer
    dsn = unique_dsn("WEB")
    seller, buyer = new_member(offline_stack), new_member(offline_stack)
    _key, csr = renewal.new_key_and_csr(dsn)
    status, _ = post_certificate(offline_stack.api_url, {"DSN": dsn, "csr": csr}, seller.id_token)
    assert status == 200

    # WHEN the owner starts a transfer from "My devices"
    sign_in(page, screens, offline_stack.app_url, seller.email, seller.password)
    page.get_by_role("button", name="My devices").click()
    expect(page.get_by_role("cell", name=dsn)).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name=f"Transfer {dsn}").click()

    # THEN the page shows the one-time code
    shown = page.locator("#devices-status")
    expect(shown).to_contain_text(f"Transfer code for {dsn}", timeout=WAIT_MS)
    screens.check("transfer-code")
    code = re.search(rf"Transfer code for {re.escape(dsn)}: ([^ .]+)", shown.inner_text())
    assert code, shown.inner_text()

    # WHEN the buyer signs in and claims it with the code
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, screens, offline_stack.app_url, buyer.email, buyer.password)
    page.get_by_role("button", name="My devices").click()
    expect(page.get_by_role("heading", name="My devices")).to_be_visible()
    page.get_by_role("textbox", name="Transfer code").fill(code.group(1))
    page.get_by_role("textbox", name="DSN").fill(dsn)
    page.get_by_role("button", name="Claim").click()

    # THEN the device is hers on the page
    expect(page.get_by_role("cell", name=dsn)).to_be_visible(timeout=WAIT_MS)
    screens.check("claimed")

    # WHEN she releases it (and confirms)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Release {dsn}").click()

    # THEN the page says so, and the API no longer lists it as hers
    expect(shown).to_contain_text("released", timeout=WAIT_MS)
    screens.check("released")
    listed = _my_devices(offline_stack.api_url, buyer.id_token)
    assert dsn not in listed, listed


def _my_devices(api_url: str, token: str) -> list[str]:
    request = urllib.request.Request(  # noqa: S310 - the local gateway
        f"{api_url}/devices?limit=100", headers={"Authorization": token}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return [device["DSN"] for device in json.loads(answer.read())["devices"]]
