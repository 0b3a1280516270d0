"""The bridge: a Chromium page's Web Bluetooth, answered by the real devices on the virtual radio.

How a page's calls travel:

1. ``navigator.bluetooth.requestDevice`` opens a chooser; DevTools reports it
   (``DeviceAccess.deviceRequestPrompted``). The bridge scans the radio for devices advertising
   the onboarding service and announces each to the emulation
   (``BluetoothEmulation.simulateAdvertisement``), so they appear in the chooser. ``choose``
   then picks one (``selectPrompt``) or none (``cancelPrompt``: the page sees the user cancel).
2. ``device.gatt.connect()`` (``gattOperationReceived``, type ``connection``): the bridge
   connects to that device over the radio (a fresh link each time, as a phone's reconnection
   is), discovers its GATT services and declares the same services and characteristics to the
   emulation, then lets the page's connection succeed.
3. Every read and write the page makes (``characteristicOperationReceived``) is made on the
   device over the radio: the same GATT service code example/device.py runs answers, and its
   value or its ATT error goes back to the page.
4. When the device drops the link, the page sees its ``gattserverdisconnected``
   (``simulateGATTDisconnection``). ``cut_links_after_data_writes`` makes the bridge cut
   links in the middle of a transfer, as a phone walking out of range would: the write
   fails, the device's session ends, and the page's next call goes over a new link
   (``_link_for``). (Chromium's emulation neither answers nor fails a call the page makes
   just as a simulated disconnection lands, so the bridge does not simulate one for its
   own cuts: the page would hang.)

The emulation has no way to send the page a notification, so no characteristic is declared
with notify (emulation.characteristic_properties): the page reads STATUS instead.

A page's navigation (a reload too) sets the emulation and the page's ``DeviceAccess`` up
afresh (``_navigated``): Chromium drops them with a document that used Bluetooth.

The bridge drives the browser over its own DevTools connection (cdp.CdpConnection, raw
CDP on a websocket): the ``BluetoothEmulation`` domain lives on the browser's own target and
``DeviceAccess`` on each page's, and a test's Playwright keeps its own connection to drive the
page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bumble.att import ATT_Error
from bumble.core import UUID, AdvertisingData
from bumble.device import Device, Peer
from bumble.hci import Address

from onboarding_ble import protocol, radio
from onboarding_ble.webbluetooth import emulation
from onboarding_ble.webbluetooth.cdp import CdpConnection, CdpError
from onboarding_ble.webbluetooth.emulation import Heard

logger = logging.getLogger("onboarding_ble.webbluetooth")

SCAN_SECONDS = 1.5
SCAN_ATTEMPTS = 10  # a chooser with nothing in it is scanned again this many times, then cancelled
CONNECT_TIMEOUT = 10.0
GATT_TIMEOUT = 15.0  # seconds for one read or write on the radio
DISCONNECT_GRACE = 1.0  # seconds between the device dropping the link and the page hearing it

Choose = Callable[[Sequence[dict[str, str]]], str | None]


def first_device(devices: Sequence[dict[str, str]]) -> str | None:
    """The default chooser policy: the first device offered (one device in range)."""
    return devices[0]["id"] if devices else None


@dataclass
class Link:
    """The bridge's connection over the radio to one device, and its characteristics by UUID."""

    connection: Any
    characteristics: dict[str, Any] = field(default_factory=dict)
    data_writes: int = 0
    dropping: bool = False  # the bridge is closing it: no disconnection to report


class Bridge:
    def __init__(self, cdp: CdpConnection, radio: Device, *, scan_seconds: float = SCAN_SECONDS):
        self.cdp = cdp
        self.radio = radio
        self.scan_seconds = scan_seconds
        self.choose: Choose = first_device
        # Test hook: while set, every link is cut instead of making its DATA write number
        # ``cut_links_after_data_writes + 1`` (0: the first), as a phone walking out of range.
        self.cut_links_after_data_writes: int | None = None
        self._heard: dict[str, Heard] = {}  # emulated address -> what the radio heard
        self._declared: dict[str, dict[str, str]] = {}  # address -> characteristic id -> UUID
        self._services: dict[str, list[str]] = {}  # address -> the service ids declared
        self._locks: dict[str, asyncio.Lock] = {}  # address -> held while its link changes
        self._gone: set[str] = set()  # devices that left the radio (until the page reconnects)
        self._links: dict[str, Link] = {}  # emulated address -> link
        self._prompts_seen: set[str] = set()
        self._prompts_answered: set[str] = set()
        # prompt id -> the addresses its own scans heard (a listed device's id is its emulated
        # address), and the devices and session it last listed
        self._heard_by_prompt: dict[str, set[str]] = {}
        self._listed: dict[str, tuple[list[dict[str, str]], str | None]] = {}
        self._attached: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reset_lock = asyncio.Lock()
        self.log: list[str] = []  # what the bridge did, one line each (for a person or a test)

    def _say(self, line: str) -> None:
        logger.info("%s", line)
        self.log.append(line)

    async def close(self) -> None:
        """Cut every link; forget what is pending (the browser is going too)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for address in list(self._links):
            await self._close(self._links.pop(address))

    # --- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Emulate a powered-on adapter; watch every page (those open now and those to come)."""
        self.cdp.on("Target.targetCreated", self._target_created)
        self.cdp.on("DeviceAccess.deviceRequestPrompted", self._prompted)
        self.cdp.on("BluetoothEmulation.gattOperationReceived", self._gatt_operation)
        self.cdp.on(
            "BluetoothEmulation.characteristicOperationReceived", self._characteristic_operation
        )
        self.cdp.on("Page.frameNavigated", self._navigated)
        await self._enable_emulation()
        await self.cdp.send("Target.setDiscoverTargets", {"discover": True})
        for target in (await self.cdp.send("Target.getTargets"))["targetInfos"]:
            await self._target_created({"targetInfo": target}, None)

    async def _target_created(self, params: dict[str, Any], _session: str | None) -> None:
        target = params["targetInfo"]
        if target.get("type") != "page" or target["targetId"] in self._attached:
            return
        self._attached.add(target["targetId"])
        attached = await self.cdp.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        await self.cdp.send("Page.enable", session=attached["sessionId"])  # its navigations
        await self.cdp.send("DeviceAccess.enable", session=attached["sessionId"])

    async def _enable_emulation(self) -> None:
        """A powered-on emulated adapter (afresh: the emulation takes no second enable)."""
        with contextlib.suppress(CdpError):  # not enabled yet
            await self.cdp.send("BluetoothEmulation.disable")
        await self.cdp.send(
            "BluetoothEmulation.enable", {"state": "powered-on", "leSupported": True}
        )

    async def _navigated(self, params: dict[str, Any], session: str | None) -> None:
        """A page loaded (a reload, a navigation): once the page has used Bluetooth, Chromium
        drops the emulation with the old document (the next requestDevice fails at once), so
        the emulation (a browser-wide domain) and the page target's DeviceAccess are set up
        again, and the old document's links and declarations forgotten. Its links are closed
        last: the page must find the adapter back before anything else."""
        if params.get("frame", {}).get("parentId") or session is None:
            return  # a subframe's navigation
        async with self._reset_lock:
            # disabled, the emulation forgets its peripherals and their services; the old
            # document hears no disconnection
            for task in list(self._tasks):
                task.cancel()
            self._declared.clear()
            self._services.clear()
            self._gone.clear()
            try:
                await self._enable_emulation()
                await self.cdp.send("DeviceAccess.enable", session=session)
            except CdpError as exc:
                self._say(f"could not set Bluetooth up again after a navigation: {exc}")
            for address in list(self._links):
                await self._close(self._links.pop(address))

    # --- the chooser --------------------------------------------------------------------------

    async def _prompted(self, params: dict[str, Any], session: str | None) -> None:
        """A chooser opened (or its list changed). The radio is scanned for it, and the device
        chosen only among those its own scans heard or the bridge is linked to now: Chromium
        keeps listing devices announced to an earlier chooser, one that has died since
        included, and calling a dead device would fail the page's onboarding however often it
        tried again."""
        prompt_id, devices = params["id"], params.get("devices", [])
        if prompt_id in self._prompts_answered:
            return
        self._listed[prompt_id] = (devices, session)
        if prompt_id in self._heard_by_prompt:
            await self._choose(prompt_id)
            return
        if prompt_id in self._prompts_seen:
            return
        self._prompts_seen.add(prompt_id)
        heard = self._heard_by_prompt.setdefault(prompt_id, set())
        await self._choose(prompt_id)
        if prompt_id in self._prompts_answered:
            return
        for _attempt in range(SCAN_ATTEMPTS):
            for found in await self.scan():
                address = emulation.emulated_address(found.address)
                self._heard[address] = found
                heard.add(address)
                self._say(f"advertising {found.name} ({address}) to the page")
                await self.cdp.send(
                    "BluetoothEmulation.simulateAdvertisement",
                    {"entry": emulation.scan_entry(address, found.name)},
                )
            await asyncio.sleep(0.2)  # the chooser's update (devices) arrives as a new event
            # ... or none comes, when the chooser listed the device already (heard before)
            await self._choose(prompt_id)
            if prompt_id in self._prompts_answered:
                return
        self._prompts_answered.add(prompt_id)
        self._say("chooser: no device advertising the onboarding service; cancelled")
        await self.cdp.send("DeviceAccess.cancelPrompt", {"id": prompt_id}, session=session)

    async def _choose(self, prompt_id: str) -> None:
        """Answer the chooser once it lists a device known to be there (``choose`` picks)."""
        devices, session = self._listed.get(prompt_id, ([], None))
        # heard by this chooser's scans, or linked to the bridge now (a connected device does
        # not advertise)
        alive = self._heard_by_prompt.get(prompt_id, set()) | set(self._links)
        offered = [device for device in devices if device.get("id") in alive]
        if prompt_id in self._prompts_answered or not offered:
            return
        self._prompts_answered.add(prompt_id)
        choice = self.choose(offered)
        if choice is None:
            self._say("chooser: cancelled")
            await self.cdp.send("DeviceAccess.cancelPrompt", {"id": prompt_id}, session=session)
        else:
            self._say(f"chooser: selected {choice}")
            await self.cdp.send(
                "DeviceAccess.selectPrompt", {"id": prompt_id, "deviceId": choice}, session=session
            )

    async def scan(self) -> list[Heard]:
        """The devices advertising the onboarding service, heard in ``scan_seconds``."""
        service = UUID(protocol.SERVICE_UUID)
        found: dict[str, Heard] = {}
        names: dict[str, str] = {}  # complete local names, from scan responses

        def on_advertisement(advertisement: Any) -> None:
            address, data = str(advertisement.address), advertisement.data
            if (name := data.get(AdvertisingData.Type.COMPLETE_LOCAL_NAME)) is not None:
                names[address] = str(name)
            for uuid, payload in data.get_all(AdvertisingData.Type.SERVICE_DATA_128_BIT_UUID):
                if uuid == service and (heard := emulation.heard(address, bytes(payload), None)):
                    found[address] = heard

        self.radio.on(self.radio.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await self.radio.start_scanning(active=True, filter_duplicates=False)
            await asyncio.sleep(self.scan_seconds)
            await self.radio.stop_scanning()
        finally:
            self.radio.remove_listener(self.radio.EVENT_ADVERTISEMENT, on_advertisement)
        # A device says its complete name (its DSN) in its scan response, when it fits.
        return sorted(
            (Heard(h.address, names.get(h.address, h.name)) for h in found.values()),
            key=lambda h: h.address,
        )

    # --- connection and discovery -------------------------------------------------------------

    async def _gatt_operation(self, params: dict[str, Any], _session: str | None) -> None:
        address, kind = params["address"], params["type"]
        code = emulation.HCI_SUCCESS
        if kind == "connection":
            try:
                await self._connect(address)
            except Exception as exc:  # the radio's failure is the page's failed connect()
                self._say(f"cannot connect to {address}: {type(exc).__name__}: {exc}")
                code = emulation.HCI_CONNECTION_FAILED
        await self.cdp.send(
            "BluetoothEmulation.simulateGATTOperationResponse",
            {"address": address, "type": kind, "code": code},
        )

    async def _connect(self, address: str) -> None:
        """A fresh link for a page's connect() (a retry starts with a new session on the
        device, as on a phone), and the device's services declared to the emulation."""
        async with self._lock(address):
            old = self._links.pop(address, None)
            if old is not None:
                await self._close(old)
            self._gone.discard(address)
            services = await self._open_link(address)
            # Chromium forgets a peripheral's services when its GATT connection ends: declared
            # afresh on every connection (the old ones removed, in case it kept them).
            await self._undeclare(address)
            self._declared[address] = await self._declare(address, services)

    async def _open_link(self, address: str) -> list[Any]:
        """Connect over the radio and discover the device's services; the link kept in
        ``_links``. Its services (bumble's) returned."""
        heard = self._heard.get(address)
        radio_address = Address(heard.address if heard else address, Address.RANDOM_DEVICE_ADDRESS)
        self._say(f"connecting to {address} over the radio")
        connection = await asyncio.wait_for(
            self.radio.connect(radio_address, timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 5
        )
        link = Link(connection)
        connection.on(
            connection.EVENT_DISCONNECTION, lambda _reason: self._disconnected(address, link)
        )
        try:
            services = await asyncio.wait_for(self._discover(link), 2 * GATT_TIMEOUT)
        except BaseException:
            # half open (the MTU exchange or discovery failed: the device went): closed, so
            # the radio holds no link to it and the next connect starts afresh
            await self._close(link)
            raise
        self._links[address] = link
        self._say(f"connected to {address}: {len(link.characteristics)} characteristics")
        return services

    @staticmethod
    async def _discover(link: Link) -> list[Any]:
        peer = Peer(link.connection)
        await peer.request_mtu(protocol.PREFERRED_MTU)
        services: list[Any] = list(await peer.discover_services())
        for service in services:
            for characteristic in await peer.discover_characteristics(service=service):
                link.characteristics[uuid_of(characteristic)] = characteristic
        return services

    async def _link_for(self, address: str) -> Link | None:
        """The link the page's next operation goes over. After a cut (cut_links_after_data_writes,
        or a failed operation) the page still counts itself connected, as a phone does until
        its stack notices: its next operation reconnects over the radio, and the device, which
        lost the link, starts a new session. A device that left the radio is not called back."""
        async with self._lock(address):
            link = self._links.get(address)
            if link is None and address not in self._gone:
                try:
                    await self._open_link(address)
                except Exception as exc:
                    self._say(f"cannot reconnect to {address}: {type(exc).__name__}")
                    self._gone.add(address)
                link = self._links.get(address)
            return link

    async def _cut(self, address: str) -> None:
        """Cut the radio link (the device's session ends); the page's next call reconnects."""
        async with self._lock(address):
            link = self._links.pop(address, None)
            if link is not None:
                self._say(f"dropping the link to {address}")
                await self._close(link)

    def _lock(self, address: str) -> asyncio.Lock:
        return self._locks.setdefault(address, asyncio.Lock())

    async def _undeclare(self, address: str) -> None:
        self._declared.pop(address, None)
        for service_id in self._services.pop(address, []):
            with contextlib.suppress(CdpError):  # already gone with the last connection
                await self.cdp.send("BluetoothEmulation.removeService", {"serviceId": service_id})

    async def _declare(self, address: str, services: Sequence[Any]) -> dict[str, str]:
        declared: dict[str, str] = {}
        for service in services:
            if uuid_of(service) in emulation.BLOCKLISTED_SERVICES:
                continue
            service_id = (
                await self.cdp.send(
                    "BluetoothEmulation.addService",
                    {"address": address, "serviceUuid": uuid_of(service)},
                )
            )["serviceId"]
            self._services.setdefault(address, []).append(service_id)
            for characteristic in service.characteristics:
                uuid = uuid_of(characteristic)
                added = await self.cdp.send(
                    "BluetoothEmulation.addCharacteristic",
                    {
                        "serviceId": service_id,
                        "characteristicUuid": uuid,
                        "properties": emulation.characteristic_properties(
                            int(characteristic.properties)
                        ),
                    },
                )
                declared[added["characteristicId"]] = uuid
        return declared

    def _disconnected(self, address: str, link: Link) -> None:
        if self._links.get(address) is link:
            del self._links[address]
        if not link.dropping:
            self._say(f"the device dropped the link to {address}")
            self._gone.add(address)
            task = asyncio.ensure_future(self._tell_page_disconnected(address, DISCONNECT_GRACE))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tell_page_disconnected(self, address: str, after: float = 0.0) -> None:
        """The page's ``gattserverdisconnected``. Chromium neither takes an answer to an
        operation once the emulated peripheral is disconnected nor fails it (the page's call
        would never settle), so for ``after`` seconds first the page's calls are answered with
        an error (there is no link), as a phone's stack fails them while it notices the loss."""
        await asyncio.sleep(after)
        try:
            await self.cdp.send(
                "BluetoothEmulation.simulateGATTDisconnection", {"address": address}
            )
        except CdpError as exc:
            self._say(f"could not tell the page {address} disconnected: {exc}")

    async def _close(self, link: Link) -> None:
        link.dropping = True
        try:
            await asyncio.wait_for(link.connection.disconnect(), timeout=5)
        except Exception:
            logger.debug("disconnect failed", exc_info=True)

    # --- reads and writes ---------------------------------------------------------------------

    async def _characteristic_operation(self, params: dict[str, Any], _session: str | None) -> None:
        characteristic_id, kind = params["characteristicId"], params["type"]
        address = next((a for a, ids in self._declared.items() if characteristic_id in ids), None)
        uuid = self._declared.get(address or "", {}).get(characteristic_id)
        link = None if address is None else await self._link_for(address)
        if address is None or uuid is None or link is None or uuid not in link.characteristics:
            self._say(f"{kind} on {characteristic_id}: no link")
            await self._answer(characteristic_id, kind, emulation.ATT_UNLIKELY_ERROR)
            return
        characteristic = link.characteristics[uuid]
        name = protocol_name(uuid)
        self.log.append(f"page: {kind} {name}")
        try:
            if kind == "read":
                value = bytes(await asyncio.wait_for(characteristic.read_value(), GATT_TIMEOUT))
                await self._answer(characteristic_id, kind, 0, value)
            elif kind == "write":
                value = emulation.decoded(params.get("data", ""))
                if uuid == protocol.DATA_UUID and self._drop_now(link):
                    # the write fails as one does when the radio fades, then the link goes
                    await self._cut(address)
                    await self._answer(characteristic_id, kind, emulation.ATT_UNLIKELY_ERROR)
                    return
                with_response = params.get("writeType") != "write-without-response"
                await asyncio.wait_for(
                    characteristic.write_value(value, with_response=with_response), GATT_TIMEOUT
                )
                await self._answer(characteristic_id, kind, 0)
            else:  # (un)subscribe: never declared (emulation.characteristic_properties)
                await self._answer(characteristic_id, kind, emulation.ATT_REQUEST_NOT_SUPPORTED)
        except ATT_Error as exc:
            self._say(f"{kind} {name}: the device answered ATT error 0x{exc.error_code:02X}")
            await self._answer(characteristic_id, kind, exc.error_code)
        except Exception as exc:  # the link failed (timeout, disconnection): the page must hear
            self._say(f"{kind} {name}: the link failed ({type(exc).__name__})")
            await self._cut(address)
            await self._answer(characteristic_id, kind, emulation.ATT_UNLIKELY_ERROR)

    def _drop_now(self, link: Link) -> bool:
        link.data_writes += 1
        limit = self.cut_links_after_data_writes
        return limit is not None and link.data_writes > limit

    async def _answer(
        self, characteristic_id: str, kind: str, code: int, data: bytes | None = None
    ) -> None:
        await self.cdp.send(
            "BluetoothEmulation.simulateCharacteristicOperationResponse",
            emulation.response(characteristic_id, kind, code, data),
        )


def uuid_of(attribute: Any) -> str:
    """A discovered service's or characteristic's UUID, as the page writes it."""
    return emulation.canonical_uuid(attribute.uuid.to_bytes(force_128=True))


def protocol_name(uuid: str) -> str:
    """A characteristic's name in docs/ble-protocol.md, for the bridge's log."""
    names = {
        getattr(protocol, n): n.removesuffix("_UUID") for n in dir(protocol) if n.endswith("_UUID")
    }
    return names.get(uuid, uuid)


async def open_radio(transport_spec: str) -> tuple[Any, Device]:
    """The bridge's own host on the virtual radio."""
    transport, device = await radio.open_host(transport_spec, "webbluetooth-bridge")
    return transport, device
