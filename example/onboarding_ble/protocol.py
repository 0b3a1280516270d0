"""The onboarding GATT service: UUIDs, byte layouts and status codes (docs/ble-protocol.md).

Pure functions only: no bumble, no I/O. The device (GATT server) and the app (GATT client)
both import this module, so the two sides cannot disagree about the wire format.

All integers are little-endian, as everywhere else in Bluetooth LE.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from onboarding_ble import rules

# Version 1: advertising, DEVICE_INFO, the transfer (BEGIN carries it). Version 2 adds
# DEVICE_INFO_V2 (the key-encryption schemes the device accepts) and changes nothing else, so
# the advertisement and BEGIN keep version 1 and a version-1 app works with a version-2 device.
PROTOCOL_VERSION = 1
DEVICE_INFO_V2_VERSION = 2

# Random 128-bit UUIDs (uuid4), fixed forever.
SERVICE_UUID = "688af86a-3eff-41ea-9224-0c6569aede8a"
DEVICE_INFO_UUID = "eca0dfd9-58d6-4457-ba01-916221fd04d9"  # read: version-1 layout, for ever
DEVICE_INFO_V2_UUID = "aa087355-ac9c-442c-847c-8f25f2f648fa"  # read: version 2 and later
CONTROL_UUID = "c8c94637-0cca-4425-a4cf-1561cee9a437"  # write (with response)
DATA_UUID = "f8af712a-3a1c-414a-b9ff-36d3061a15a3"  # write (with response)
STATUS_UUID = "acdb45c9-76d9-402b-9733-a4a9cc3690c8"  # read + notify
DEVICE_CSR_UUID = "70cba7bc-7441-4c13-8404-0b37c7f36524"  # read: CSR mode only, the CSR (DER)
# read: the factory key's signature over the DSN, the challenge this connection wrote to
# ATTESTATION_CHALLENGE and the key to certify (devices that have a factory key); empty before
# a challenge is written
DEVICE_ATTESTATION_UUID = "3f1d0c52-8b0e-4a4e-9d56-6a3f3b7f2c11"
ATTESTATION_MAX_LEN = 72  # a DER ECDSA P-256 signature
# write (with response): the 32-byte challenge the API gave the app (devices that have one)
ATTESTATION_CHALLENGE_UUID = "d3d23b35-1b25-4b6b-9df8-1a108757119b"
CHALLENGE_LEN = rules.CHALLENGE_LEN

KEY_TYPE_X25519 = 1
KEY_TYPE_CSR = 2  # DEVICE_INFO_V2 only: the device made its own key; the field is SHA-256(CSR)
X25519_KEY_LEN = 32
CSR_MAX_LEN = 1024  # DEVICE_CSR's value: a P-256 CSR is about 250 bytes of DER

ATT_HEADER_LEN = 3  # opcode + handle of an ATT Write Request
ATT_MAX_VALUE_LEN = 512  # Vol 3 Part F 3.2.9
SEQ_LEN = 2
DEFAULT_MTU = 23
PREFERRED_MTU = 517
MAX_PAYLOAD_LEN = 16 * 1024  # a certificate chain + encrypted key is about 3 KB
DETAIL_MAX_LEN = 100
LEGACY_NAME_MAX_LEN = 29  # 31 bytes of scan response minus the AD length and type


class ProtocolError(ValueError):
    """A value that does not follow the wire format; `status` says which error to report."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class Status(enum.IntEnum):
    """Device state (0x00-0x7F) or error (0x80-0xFF), as carried by the status characteristic.

    Error values double as ATT application error codes (0x80-0x9F) on a rejected write.
    """

    IDLE = 0x00
    RECEIVING = 0x01
    VERIFYING = 0x02
    PROVISIONED = 0x03
    ERR_CHECKSUM = 0x80
    ERR_SEQUENCE = 0x81
    ERR_LENGTH = 0x82
    ERR_FORMAT = 0x83
    ERR_DECRYPT = 0x84
    ERR_KEY_MISMATCH = 0x85
    ERR_UNTRUSTED_CA = 0x86
    ERR_CERT_EXPIRED = 0x87
    ERR_DSN_MISMATCH = 0x88
    ERR_STORAGE = 0x89
    ERR_APP = 0x8A
    ERR_BUSY = 0x8B
    ERR_VERSION = 0x8C
    ERR_STATE = 0x8D

    @property
    def is_error(self) -> bool:
        return self >= 0x80

    @property
    def is_final(self) -> bool:
        """A state the app waits for after COMMIT or APP_ERROR."""
        return self.is_error or self is Status.PROVISIONED


class Opcode(enum.IntEnum):
    """First byte of a CONTROL write."""

    BEGIN = 0x01
    COMMIT = 0x02
    ABORT = 0x03
    APP_ERROR = 0x04


def validate_dsn(dsn: str) -> str:
    if not rules.is_valid_dsn(dsn):
        raise ProtocolError(Status.ERR_FORMAT, f"DSN must be {rules.DSN_RULE}")
    return dsn


# --- Device info ---------------------------------------------------------------------------

# DEVICE_INFO_V2's schemes field: one bit per key-encryption scheme the device accepts.
SCHEME_BITS = {rules.FERNET_X25519: 0x01, rules.HKDF_AES_GCM: 0x02}


def encode_schemes(schemes: tuple[str, ...]) -> int:
    bits = 0
    for scheme in schemes:
        bits |= SCHEME_BITS[scheme]
    return bits


def decode_schemes(bits: int) -> tuple[str, ...]:
    """The schemes a bit mask names, weakest first; bits this version does not know are
    ignored (a later device may accept a scheme this app cannot use)."""
    return tuple(s for s in rules.ENCRYPTION_SCHEMES_BY_STRENGTH if bits & SCHEME_BITS[s])


@dataclass(frozen=True)
class DeviceInfo:
    """DEVICE_INFO (version 1): version u8 | key type u8 | public key [32] | DSN length u8 | DSN.
    DEVICE_INFO_V2 (version 2): the same, then schemes u8 (``SCHEME_BITS``); a reader ignores
    bytes after the fields it knows, so a later version may append more.

    ``schemes`` is None for a version-1 value: the device does not say, and is known to accept
    only fernet-x25519, the default every device implements.

    ``key_type`` ``KEY_TYPE_CSR`` (version 2 only, a device in CSR mode): the device made its own
    key; ``public_key`` is then the SHA-256 of the CSR the DEVICE_CSR characteristic holds, and
    the app asks the API with that CSR (``csr_mode``).
    """

    dsn: str
    public_key: bytes
    schemes: tuple[str, ...] | None = None
    key_type: int = KEY_TYPE_X25519

    @property
    def version(self) -> int:
        return PROTOCOL_VERSION if self.schemes is None else DEVICE_INFO_V2_VERSION

    @property
    def csr_mode(self) -> bool:
        return self.key_type == KEY_TYPE_CSR

    def encode(self) -> bytes:
        validate_dsn(self.dsn)
        if self.csr_mode and self.schemes is None:
            raise ProtocolError(Status.ERR_FORMAT, "CSR mode needs DEVICE_INFO_V2")
        if len(self.public_key) != X25519_KEY_LEN:
            raise ProtocolError(Status.ERR_FORMAT, "public key must be 32 bytes")
        dsn = self.dsn.encode("ascii")
        value = (
            struct.pack("<BB", self.version, self.key_type)
            + self.public_key
            + struct.pack("<B", len(dsn))
            + dsn
        )
        if self.schemes is not None:
            value += struct.pack("<B", encode_schemes(self.schemes))
        return value

    @classmethod
    def decode(cls, value: bytes) -> DeviceInfo:
        """Either characteristic's value (the version byte says which layout)."""
        if len(value) < 2 + X25519_KEY_LEN + 1:
            raise ProtocolError(Status.ERR_FORMAT, "device info too short")
        version, key_type = struct.unpack_from("<BB", value)
        if version < PROTOCOL_VERSION:
            raise ProtocolError(Status.ERR_VERSION, f"unsupported protocol version {version}")
        known = (KEY_TYPE_X25519, KEY_TYPE_CSR) if version >= DEVICE_INFO_V2_VERSION else ()
        if key_type != KEY_TYPE_X25519 and key_type not in known:
            raise ProtocolError(Status.ERR_FORMAT, f"unsupported key type {key_type}")
        public_key = value[2 : 2 + X25519_KEY_LEN]
        dsn_len = value[2 + X25519_KEY_LEN]
        dsn_bytes = value[3 + X25519_KEY_LEN : 3 + X25519_KEY_LEN + dsn_len]
        rest = value[3 + X25519_KEY_LEN + dsn_len :]
        if len(dsn_bytes) != dsn_len:
            raise ProtocolError(Status.ERR_FORMAT, "DSN length does not match")
        schemes = None
        if version == PROTOCOL_VERSION and rest:
            raise ProtocolError(Status.ERR_FORMAT, "DSN length does not match")
        if version >= DEVICE_INFO_V2_VERSION:
            if not rest:
                raise ProtocolError(Status.ERR_FORMAT, "device info has no schemes")
            schemes = decode_schemes(rest[0])
        try:
            dsn = validate_dsn(dsn_bytes.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise ProtocolError(Status.ERR_FORMAT, "DSN is not ASCII") from exc
        return cls(dsn=dsn, public_key=bytes(public_key), schemes=schemes, key_type=key_type)


# --- Advertising ---------------------------------------------------------------------------

ADV_MAX_LEN = 31
# Advertising data = Flags (3 bytes) + Service Data 128-bit UUID (2 + 16 + 1 + DSN hint).
SERVICE_DATA_DSN_MAX = ADV_MAX_LEN - 3 - 2 - 16 - 1


def encode_service_data(dsn: str) -> bytes:
    """Service data for SERVICE_UUID: (version << 1 | complete) u8 | DSN, or its first 9 bytes."""
    validate_dsn(dsn)
    hint = dsn.encode("ascii")[:SERVICE_DATA_DSN_MAX]
    complete = len(hint) == len(dsn)
    return bytes([(PROTOCOL_VERSION << 1) | int(complete)]) + hint


def decode_service_data(data: bytes) -> tuple[int, str, bool]:
    """(protocol version, DSN or its prefix, whether the DSN is complete)."""
    if not data:
        raise ProtocolError(Status.ERR_FORMAT, "empty service data")
    try:
        hint = data[1:].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(Status.ERR_FORMAT, "DSN hint is not ASCII") from exc
    return data[0] >> 1, hint, bool(data[0] & 1)


def advertised_name(dsn: str) -> tuple[str, bool]:
    """The local name for the scan response and whether it is complete (else shortened)."""
    validate_dsn(dsn)
    if len(dsn) <= LEGACY_NAME_MAX_LEN:
        return dsn, True
    return dsn[:LEGACY_NAME_MAX_LEN], False


def hint_may_match(dsn: str, hint: str, complete: bool) -> bool:
    """Whether an advertised DSN (or prefix) can belong to `dsn`."""
    return dsn == hint if complete else bool(hint) and dsn.startswith(hint)


# --- Control -------------------------------------------------------------------------------

_BEGIN = struct.Struct("<BBII")  # opcode, version, total length, CRC-32
_APP_ERROR = struct.Struct("<BHB")  # opcode, HTTP status, code length


@dataclass(frozen=True)
class Begin:
    total_length: int
    crc32: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class AppError:
    http_status: int
    code: str
    message: str = ""


Control = Begin | Commit | Abort | AppError


def encode_begin(payload: bytes) -> bytes:
    if not 0 < len(payload) <= MAX_PAYLOAD_LEN:
        raise ProtocolError(Status.ERR_LENGTH, f"payload must be 1-{MAX_PAYLOAD_LEN} bytes")
    return _BEGIN.pack(Opcode.BEGIN, PROTOCOL_VERSION, len(payload), crc32(payload))


def encode_commit() -> bytes:
    return bytes([Opcode.COMMIT])


def encode_abort() -> bytes:
    return bytes([Opcode.ABORT])


def encode_app_error(http_status: int, code: str, message: str = "") -> bytes:
    """APP_ERROR: opcode | HTTP status u16 | code length u8 | code ASCII | message UTF-8."""
    code_bytes = code.encode("ascii", "replace")[:64]
    message_bytes = _truncate_utf8(message, DETAIL_MAX_LEN)
    return (
        _APP_ERROR.pack(Opcode.APP_ERROR, http_status, len(code_bytes)) + code_bytes + message_bytes
    )


def decode_control(value: bytes) -> Control:
    if not value:
        raise ProtocolError(Status.ERR_FORMAT, "empty control write")
    opcode = value[0]
    if opcode == Opcode.BEGIN:
        if len(value) != _BEGIN.size:
            raise ProtocolError(Status.ERR_FORMAT, "BEGIN must be 10 bytes")
        _, version, total, checksum = _BEGIN.unpack(value)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(Status.ERR_VERSION, f"unsupported protocol version {version}")
        if not 0 < total <= MAX_PAYLOAD_LEN:
            raise ProtocolError(Status.ERR_LENGTH, f"total length {total} out of range")
        return Begin(total_length=total, crc32=checksum, version=version)
    if opcode == Opcode.COMMIT:
        if len(value) != 1:
            raise ProtocolError(Status.ERR_FORMAT, "COMMIT must be 1 byte")
        return Commit()
    if opcode == Opcode.ABORT:
        if len(value) != 1:
            raise ProtocolError(Status.ERR_FORMAT, "ABORT must be 1 byte")
        return Abort()
    if opcode == Opcode.APP_ERROR:
        if len(value) < _APP_ERROR.size:
            raise ProtocolError(Status.ERR_FORMAT, "APP_ERROR too short")
        _, http_status, code_len = _APP_ERROR.unpack_from(value)
        code = value[_APP_ERROR.size : _APP_ERROR.size + code_len]
        if len(code) != code_len:
            raise ProtocolError(Status.ERR_FORMAT, "APP_ERROR code truncated")
        message = value[_APP_ERROR.size + code_len :].decode("utf-8", "replace")
        return AppError(http_status, code.decode("ascii", "replace"), message)
    raise ProtocolError(Status.ERR_FORMAT, f"unknown opcode 0x{opcode:02x}")


# --- Data ----------------------------------------------------------------------------------


def crc32(payload: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib, Ethernet): transport integrity only, not authenticity."""
    return zlib.crc32(payload) & 0xFFFFFFFF


def chunk_size_for_mtu(mtu: int) -> int:
    """Payload bytes per DATA write for a negotiated ATT MTU."""
    if mtu < DEFAULT_MTU:
        raise ValueError(f"ATT MTU is at least {DEFAULT_MTU}")
    return min(mtu - ATT_HEADER_LEN, ATT_MAX_VALUE_LEN) - SEQ_LEN


def split_chunks(payload: bytes, mtu: int) -> list[bytes]:
    """DATA writes for `payload`: sequence number u16 | up to MTU-5 bytes of payload."""
    size = chunk_size_for_mtu(mtu)
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    if len(chunks) > 0xFFFF:
        raise ProtocolError(Status.ERR_LENGTH, "too many chunks for this MTU")
    return [struct.pack("<H", seq) + chunk for seq, chunk in enumerate(chunks)]


def decode_chunk(value: bytes) -> tuple[int, bytes]:
    if len(value) < SEQ_LEN + 1:
        raise ProtocolError(Status.ERR_FORMAT, "DATA write without payload")
    (seq,) = struct.unpack_from("<H", value)
    return seq, bytes(value[SEQ_LEN:])


class Reassembler:
    """Device side of a transfer: BEGIN, DATA in sequence, COMMIT.

    A DATA write that repeats the last accepted sequence number with the same bytes is
    accepted again without effect (the app may resend after a lost write response); any
    other gap or repeat is ERR_SEQUENCE. Errors leave the reassembler unusable until the
    next BEGIN.
    """

    def __init__(self, begin: Begin) -> None:
        self.total_length = begin.total_length
        self.expected_crc = begin.crc32
        self.next_seq = 0
        self._buffer = bytearray()
        self._last: bytes | None = None

    @property
    def received(self) -> int:
        return len(self._buffer)

    def add(self, value: bytes) -> None:
        seq, data = decode_chunk(value)
        if seq == self.next_seq - 1 and data == self._last:
            return  # a resend of the chunk we already hold
        if seq != self.next_seq:
            raise ProtocolError(Status.ERR_SEQUENCE, f"expected chunk {self.next_seq}, got {seq}")
        if len(self._buffer) + len(data) > self.total_length:
            raise ProtocolError(Status.ERR_LENGTH, "more data than announced")
        self._buffer += data
        self._last = data
        self.next_seq += 1

    def finish(self) -> bytes:
        """The payload, once COMMIT arrives; checks length and CRC-32."""
        if len(self._buffer) != self.total_length:
            raise ProtocolError(
                Status.ERR_LENGTH, f"got {len(self._buffer)} of {self.total_length} bytes"
            )
        payload = bytes(self._buffer)
        if crc32(payload) != self.expected_crc:
            raise ProtocolError(Status.ERR_CHECKSUM, "CRC-32 does not match")
        return payload


# --- Status --------------------------------------------------------------------------------

_STATUS = struct.Struct("<BIB")  # code, bytes received, detail length


@dataclass(frozen=True)
class StatusReport:
    """STATUS value: code u8 | bytes received u32 | detail length u8 | detail UTF-8."""

    status: Status
    received: int = 0
    detail: str = ""

    def encode(self) -> bytes:
        detail = _truncate_utf8(self.detail, DETAIL_MAX_LEN)
        return _STATUS.pack(self.status, self.received, len(detail)) + detail

    @classmethod
    def decode(cls, value: bytes) -> StatusReport:
        if len(value) < _STATUS.size:
            raise ProtocolError(Status.ERR_FORMAT, "status too short")
        code, received, detail_len = _STATUS.unpack_from(value)
        detail = value[_STATUS.size :]
        if len(detail) != detail_len:
            raise ProtocolError(Status.ERR_FORMAT, "status detail length does not match")
        try:
            status = Status(code)
        except ValueError as exc:
            raise ProtocolError(Status.ERR_FORMAT, f"unknown status 0x{code:02x}") from exc
        return cls(status, received, detail.decode("utf-8", "replace"))


def printable(text: str, limit: int) -> str:
    """``text`` as printable ASCII (anything else, newlines included, becomes ``?``), at most
    ``limit`` characters: what the app says is safe to log and to put in an event line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", "ignore").encode("utf-8")
