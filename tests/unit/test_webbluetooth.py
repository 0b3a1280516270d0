"""The Web Bluetooth bridge's pure parts: what the emulation is told about the radio's devices
(example/onboarding_ble/webbluetooth/emulation.py) and how Chromium is started (chromium.py)."""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from bumble.core import UUID

from onboarding_ble import protocol
from onboarding_ble.webbluetooth import chromium, emulation


def test_characteristics_are_declared_without_notify_which_the_emulation_cannot_deliver():
    # read + notify (STATUS): the page's startNotifications fails, so it reads STATUS instead
    assert emulation.characteristic_properties(0x02 | 0x10) == {"read": True}
    assert emulation.characteristic_properties(0x08) == {"write": True}
    assert emulation.characteristic_properties(0x04 | 0x08 | 0x20) == {
        "writeWithoutResponse": True,
        "write": True,
    }


def test_uuids_are_written_as_the_page_writes_them():
    onboarding = UUID(protocol.SERVICE_UUID).to_bytes(force_128=True)
    assert emulation.canonical_uuid(onboarding) == protocol.SERVICE_UUID
    generic_access = UUID.from_16_bits(0x1800).to_bytes(force_128=True)
    assert emulation.canonical_uuid(generic_access) in emulation.BLOCKLISTED_SERVICES
    with pytest.raises(ValueError):
        emulation.canonical_uuid(b"\x00\x18")


def test_addresses_lose_bumbles_type_suffix_and_anything_else_is_refused():
    assert emulation.emulated_address("c8:3f:83:fe:76:72/P") == "C8:3F:83:FE:76:72"
    for bad in ("", "C8:3F:83:FE:76", "C8:3F:83:FE:76:7G", "C8-3F-83-FE-76-72"):
        with pytest.raises(ValueError):
            emulation.emulated_address(bad)


def test_an_advertisement_announces_the_onboarding_service_with_every_scan_record_field():
    entry = emulation.scan_entry("c8:3f:83:fe:76:72", "SN-0001")
    assert entry["deviceAddress"] == "C8:3F:83:FE:76:72"
    record = entry["scanRecord"]
    assert record["uuids"] == [protocol.SERVICE_UUID] and record["name"] == "SN-0001"
    # Chromium never answers simulateAdvertisement without these
    assert {"appearance", "txPower", "manufacturerData"} <= record.keys()


def test_only_this_protocols_service_data_is_heard():
    data = protocol.encode_service_data("SN-0001")
    assert emulation.heard("AA:BB:CC:DD:EE:FF", data, None) == emulation.Heard(
        "AA:BB:CC:DD:EE:FF", "SN-0001"
    )
    assert emulation.heard("AA:BB:CC:DD:EE:FF", data, "SN-0001-long").name == "SN-0001-long"
    assert emulation.heard("AA:BB:CC:DD:EE:FF", b"\x09" + data[1:], None) is None
    assert emulation.heard("AA:BB:CC:DD:EE:FF", b"", None) is None


def test_answers_carry_the_devices_value_or_its_att_error():
    read = emulation.response("id1", "read", 0, b"\x01\x02")
    assert read == {"characteristicId": "id1", "type": "read", "code": 0, "data": "AQI="}
    refused = emulation.response("id1", "write", int(protocol.Status.ERR_FORMAT))
    assert refused == {"characteristicId": "id1", "type": "write", "code": 0x83}
    assert emulation.decoded(base64.b64encode(b"\x00\xff").decode()) == b"\x00\xff"
    with pytest.raises(ValueError):
        emulation.decoded("not base64!")


def test_chromium_flags_turn_on_web_bluetooth_and_off_what_the_closed_network_refuses():
    as_root = chromium.flags(headless=True, as_root=True)
    assert "--enable-features=WebBluetooth" in as_root
    assert {"--no-sandbox", "--headless", "--disable-background-networking"} <= set(as_root)
    assert {"--disable-component-update", "--disable-sync", "--disable-quic"} <= set(as_root)
    headed_user = chromium.flags(headless=False, as_root=False)
    assert "--no-sandbox" not in headed_user and "--headless" not in headed_user


def test_the_devtools_url_is_read_from_the_profile(tmp_path):
    (tmp_path / "DevToolsActivePort").write_text("41234\n/devtools/browser/abc\n")
    assert chromium.devtools_url(tmp_path, timeout=1) == "ws://127.0.0.1:41234/devtools/browser/abc"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(chromium.ChromiumError, match="DevTools port"):
        chromium.devtools_url(empty, timeout=0.2)


def test_the_browser_says_when_no_stack_is_up(tmp_path, capsys):
    from onboarding_ble.webbluetooth import command

    assert command.main(["--headless", "--state", str(tmp_path / "none.json")]) == 2
    assert "onboarding_ble.webbluetooth:" in capsys.readouterr().err


def test_the_browser_needs_the_stacks_app_url(tmp_path, capsys):
    from onboarding_ble.webbluetooth import command

    state = tmp_path / "stack.json"
    _write_state(state, os.getpid())  # a process that runs (this one), no app_url
    assert command.main(["--headless", "--state", str(state)]) == 2
    assert "names no app_url" in capsys.readouterr().err


def _write_state(path, pid, **more):
    state = {"outputs": {}, "endpoint_url": "http://127.0.0.1:1", "region": "us-east-1"}
    path.write_text(json.dumps({**state, "pid": pid, **more}))


def test_the_browser_says_the_stack_is_not_up_when_its_process_has_stopped(
    tmp_path, capsys, monkeypatch
):
    from onboarding_ble.webbluetooth import command

    # GIVEN a state file left behind by a stack whose process was killed
    gone = subprocess.Popen(["true"])  # noqa: S607
    gone.wait()
    state = tmp_path / "stack.json"
    _write_state(state, gone.pid, app_url="http://127.0.0.1:1/")
    monkeypatch.setattr(command.signal, "signal", lambda *_args: None)
    monkeypatch.setattr(command, "_start_radio", _must_not_run)
    monkeypatch.setattr(command.chromium, "start", _must_not_run)

    # THEN neither a radio nor the browser starts, and it says why
    assert command.main(["--headless", "--state", str(state)]) == 2
    assert "the offline stack is not up" in capsys.readouterr().err


def _must_not_run(*_args, **_kwargs):
    raise AssertionError("started on a dead stack")


class _FakeBrowser:
    ws_url = "ws://127.0.0.1:1/devtools/browser/x"

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("when", ["browser closed", "Ctrl-C at the start"])
def test_the_browser_command_stops_quietly_and_leaves_no_temporary_directory(
    tmp_path, capsys, monkeypatch, when
):
    from onboarding_ble.webbluetooth import command

    state = tmp_path / "stack.json"
    _write_state(state, os.getpid(), app_url="http://127.0.0.1:1/")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(command.tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(command.signal, "signal", lambda *_args: None)
    monkeypatch.setattr(command.chromium, "executable", lambda: Path("/usr/bin/chromium"))

    def start(_url, _profile, headless):
        if when == "Ctrl-C at the start":
            raise KeyboardInterrupt
        return _FakeBrowser()

    async def bridge(_ws_url, _transport):
        return None  # the browser closed

    monkeypatch.setattr(command.chromium, "start", start)
    monkeypatch.setattr(command, "_bridge", bridge)

    code = command.main(["--headless", "--state", str(state), "--transport", "tcp-client:x:1"])

    assert code == 0
    assert "Traceback" not in capsys.readouterr().err
    assert list(scratch.iterdir()) == []


def test_ctrl_c_while_the_bridge_loads_stops_the_command_after_loading(monkeypatch):
    # (Python 3.11 turns a KeyboardInterrupt raised inside a class statement, as bumble's
    # modules make, into a RuntimeError: a Ctrl-C'd start ended with a traceback, exit 1.)
    from onboarding_ble.webbluetooth import command

    loaded = []

    def import_module(name):
        # Ctrl-C reaches this thread while a module loads, between its class statements
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

        class Loading:
            value = functools.cached_property(lambda _self: 1)

        loaded.append(name)

    monkeypatch.setattr(command.importlib, "import_module", import_module)
    previous = signal.getsignal(signal.SIGTERM), signal.signal(signal.SIGINT, command._interrupt)
    try:
        # THEN the modules load whole, and the Ctrl-C stops the command as a Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            command._load_bridge()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert loaded == ["onboarding_ble.webbluetooth.bridge", "onboarding_ble.webbluetooth.cdp"]


@pytest.mark.parametrize("failed", [True, False])
def test_the_radios_log_is_kept_only_when_the_command_failed(tmp_path, capsys, failed):
    from onboarding_ble.webbluetooth import command

    log_dir = tmp_path / "devstack-radio-x"
    log_dir.mkdir()
    (log_dir / "radio.log").write_text("radio ready\n")
    command._keep_log_if_failed(log_dir, {"failed": failed})
    assert log_dir.exists() is failed
    assert (str(log_dir) in capsys.readouterr().err) is failed


class _FakeCdp:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def send(self, method, params=None, session=None):
        self.sent.append((method, params or {}))
        return {}


class _FakeConnection:
    EVENT_DISCONNECTION = "disconnection"

    def __init__(self) -> None:
        self.disconnected = False

    def on(self, _event, _handler) -> None:
        pass

    async def disconnect(self) -> None:
        self.disconnected = True


class _FakeRadio:
    def __init__(self) -> None:
        self.connections: list[_FakeConnection] = []

    async def connect(self, _address, timeout):
        self.connections.append(_FakeConnection())
        return self.connections[-1]


class _DeadPeer:
    """A device killed just after the radio connected: its MTU exchange times out."""

    def __init__(self, _connection) -> None:
        pass

    async def request_mtu(self, _mtu):
        raise TimeoutError("GATT timeout for ATT_EXCHANGE_MTU_REQUEST")


def test_a_device_gone_during_connect_is_a_failed_connection_and_its_link_is_closed(monkeypatch):
    import asyncio

    from onboarding_ble.webbluetooth import bridge

    monkeypatch.setattr(bridge, "Peer", _DeadPeer)
    cdp, radio = _FakeCdp(), _FakeRadio()
    running = bridge.Bridge(cdp, radio)  # type: ignore[arg-type]

    async def connect_twice() -> None:  # the page's connect(), then its retry
        for _ in range(2):
            await running._gatt_operation(
                {"address": "F0:00:00:00:00:01", "type": "connection"}, None
            )

    asyncio.run(asyncio.wait_for(connect_twice(), 10))

    # THEN the page hears both connects fail (not silence), and no half-open link is kept
    answers = [p for m, p in cdp.sent if m == "BluetoothEmulation.simulateGATTOperationResponse"]
    assert [a["code"] for a in answers] == [emulation.HCI_CONNECTION_FAILED] * 2
    assert [c.disconnected for c in radio.connections] == [True, True]
    assert not running._links
    assert any("cannot connect" in line for line in running.log)
