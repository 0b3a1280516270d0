"""The pure parts of the bridge: how the radio's devices and their GATT service are declared
to Chromium's ``BluetoothEmulation`` domain, and what the emulation is answered."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from onboarding_ble import protocol
from onboarding_ble.protocol import ProtocolError

# ATT error codes (Bluetooth Core Vol 3 Part F 3.4.1.1) the bridge answers itself with.
ATT_REQUEST_NOT_SUPPORTED = 0x06
ATT_UNLIKELY_ERROR = 0x0E
# HCI error code (Vol 1 Part F) for a connection the radio could not make.
HCI_SUCCESS = 0x00
HCI_CONNECTION_FAILED = 0x3E

# GATT characteristic property bits (Vol 3 Part G 3.3.1.1) and the emulation's names for them.
_PROPERTY_NAMES = {
    0x01: "broadcast",
    0x02: "read",
    0x04: "writeWithoutResponse",
    0x08: "write",
    0x20: "indicate",  # never declared, see characteristic_properties
    0x10: "notify",
    0x40: "authenticatedSignedWrites",
    0x80: "extendedProperties",
}
# The emulation has no command that delivers a notification or an indication: a characteristic
# declared with them would accept startNotifications and then stay silent. Declared without
# them, startNotifications fails at once and the page reads STATUS instead (as it must on any
# phone whose notifications do not arrive).
_UNDELIVERABLE = 0x10 | 0x20


def characteristic_properties(bits: int) -> dict[str, bool]:
    """CDP ``CharacteristicProperties`` for a characteristic's property bits."""
    return {
        name: True
        for bit, name in _PROPERTY_NAMES.items()
        if bits & bit and not bit & _UNDELIVERABLE
    }


def emulated_address(address: str) -> str:
    """The radio's address as the emulation takes it: ``AA:BB:CC:DD:EE:FF`` (bumble may add
    ``/P`` for a public address)."""
    bare = address.split("/", 1)[0].upper()
    octets = bare.split(":")
    if len(octets) != 6 or not all(
        len(o) == 2 and all(c in "0123456789ABCDEF" for c in o) for o in octets
    ):
        raise ValueError(f"not a Bluetooth address: {address!r}")
    return bare


def scan_entry(address: str, name: str) -> dict[str, Any]:
    """A ``ScanEntry`` announcing the onboarding service. Chromium 150 never answers
    ``simulateAdvertisement`` when the scan record leaves out appearance, txPower or
    manufacturerData, so all are given."""
    return {
        "deviceAddress": emulated_address(address),
        "rssi": -50,
        "scanRecord": {
            "name": name,
            "uuids": [protocol.SERVICE_UUID],
            "appearance": 0,
            "txPower": 0,
            "manufacturerData": [],
        },
    }


def canonical_uuid(uuid_bytes_128_le: bytes) -> str:
    """A UUID as Web Bluetooth and the emulation write it (lower case, 128 bits), from bumble's
    ``UUID.to_bytes(force_128=True)`` (little-endian, as on the air)."""
    if len(uuid_bytes_128_le) != 16:
        raise ValueError("a 128-bit UUID is 16 bytes")
    h = uuid_bytes_128_le[::-1].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Web Bluetooth's blocklist: no page may use Generic Access or Generic Attribute.
BLOCKLISTED_SERVICES = frozenset(
    {"00001800-0000-1000-8000-00805f9b34fb", "00001801-0000-1000-8000-00805f9b34fb"}
)


@dataclass(frozen=True)
class Heard:
    """A device the radio heard advertising the onboarding service (this protocol version)."""

    address: str  # the radio's address (bumble's string)
    name: str  # its DSN, or the DSN's prefix when the advertisement had no room for all of it


def heard(address: str, service_data: bytes, local_name: str | None) -> Heard | None:
    """What an advertisement says: None unless it carries this protocol's service data. The
    name is the complete local name when there is one, else the DSN hint."""
    try:
        version, hint, _complete = protocol.decode_service_data(service_data)
    except ProtocolError:
        return None
    if version != protocol.PROTOCOL_VERSION:
        return None
    return Heard(address, local_name or hint)


def response(
    characteristic_id: str, kind: str, code: int, data: bytes | None = None
) -> dict[str, Any]:
    """``simulateCharacteristicOperationResponse``'s parameters."""
    params: dict[str, Any] = {"characteristicId": characteristic_id, "type": kind, "code": code}
    if data is not None:
        params["data"] = base64.b64encode(data).decode("ascii")
    return params


def decoded(data: str) -> bytes:
    """A value the page wrote (base64 in the event)."""
    return base64.b64decode(data, validate=True)
