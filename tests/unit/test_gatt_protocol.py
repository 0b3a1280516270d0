"""The onboarding GATT wire format (example/onboarding_ble/protocol.py, docs/ble-protocol.md)."""

import os
import struct

import pytest

from onboarding_ble import protocol
from onboarding_ble.protocol import (
    Abort,
    AppError,
    Begin,
    Commit,
    DeviceInfo,
    ProtocolError,
    Reassembler,
    Status,
    StatusReport,
)


def test_uuids_are_distinct_random_128_bit():
    uuids = [
        protocol.SERVICE_UUID,
        protocol.DEVICE_INFO_UUID,
        protocol.CONTROL_UUID,
        protocol.DATA_UUID,
        protocol.STATUS_UUID,
    ]
    assert len(set(uuids)) == 5
    assert all(len(u) == 36 and u[14] == "4" for u in uuids)  # version-4 (random) UUIDs


def test_device_info_round_trip_and_layout():
    key = bytes(range(32))
    value = DeviceInfo(dsn="SN-0001", public_key=key).encode()
    assert value[:2] == bytes([1, 1])
    assert value[2:34] == key
    assert value[34] == 7 and value[35:] == b"SN-0001"
    assert DeviceInfo.decode(value) == DeviceInfo(dsn="SN-0001", public_key=key)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (bytes([0, 1]) + bytes(32) + b"\x01A", Status.ERR_VERSION),
        (bytes([2, 1]) + bytes(32) + b"\x01A", Status.ERR_FORMAT),  # v2 without its schemes
        (bytes([1, 1]) + bytes(32) + b"\x01A\x03", Status.ERR_FORMAT),  # v1 has nothing after
        (bytes([1, 9]) + bytes(32) + b"\x01A", Status.ERR_FORMAT),
        (bytes([1, 1]) + bytes(32) + b"\x05A", Status.ERR_FORMAT),
        (bytes([1, 1]) + bytes(32) + b"\x01!", Status.ERR_FORMAT),
        (bytes([1, 1]) + bytes(10), Status.ERR_FORMAT),
    ],
)
def test_device_info_rejects_malformed_values(value, status):
    with pytest.raises(ProtocolError) as caught:
        DeviceInfo.decode(value)
    assert caught.value.status is status


def test_device_info_v2_appends_the_accepted_schemes():
    key = bytes(range(32))
    both = ("fernet-x25519", "x25519-hkdf-sha256-aes256gcm")
    value = DeviceInfo(dsn="SN-0001", public_key=key, schemes=both).encode()

    assert value[0] == 2 and value[1:34] == bytes([1]) + key and value[34] == 7
    assert value[35:42] == b"SN-0001" and value[42:] == bytes([0x03])
    assert DeviceInfo.decode(value).schemes == both
    strict = DeviceInfo(dsn="SN-0001", public_key=key, schemes=both[1:]).encode()
    assert strict[-1] == 0x02 and DeviceInfo.decode(strict).schemes == both[1:]


def test_a_later_device_info_is_read_for_the_fields_this_app_knows():
    # A version-3 device may append fields and accept schemes this app does not know.
    value = bytes([3, 1]) + bytes(32) + b"\x01A" + bytes([0x02 | 0x80]) + b"more"
    assert DeviceInfo.decode(value).schemes == ("x25519-hkdf-sha256-aes256gcm",)


def v1_app_decode(value: bytes) -> tuple[str, bytes]:
    """DEVICE_INFO as a version-1 app reads it (the decoder it shipped with)."""
    version, key_type = struct.unpack_from("<BB", value)
    assert (version, key_type) == (1, 1), "a version-1 app refuses this value (ERR_VERSION)"
    dsn = value[35:]
    assert len(dsn) == value[34], "a version-1 app refuses this value (length)"
    return dsn.decode("ascii"), value[2:34]


def test_a_version_2_device_still_offers_version_1_device_info(tmp_path):
    from onboarding_ble.gatt import ProvisioningSession
    from tests.support.device_answers import make_ca

    session = ProvisioningSession(
        "SN-0001", [make_ca()[1]], tmp_path, minimum_scheme="x25519-hkdf-sha256-aes256gcm"
    )

    assert v1_app_decode(session.device_info()) == ("SN-0001", session.public_key)
    v2 = DeviceInfo.decode(session.device_info_v2())
    assert v2.schemes == ("x25519-hkdf-sha256-aes256gcm",) and v2.public_key == session.public_key
    with pytest.raises(AssertionError):
        v1_app_decode(session.device_info_v2())  # why version 2 has its own characteristic


@pytest.mark.parametrize("dsn", ["", "a b", "x" * 116, "ünï"])
def test_invalid_dsns_are_refused(dsn):
    with pytest.raises(ProtocolError):
        protocol.validate_dsn(dsn)


def test_service_data_carries_whole_short_dsn():
    data = protocol.encode_service_data("SN-0001")
    assert len(data) <= protocol.SERVICE_DATA_DSN_MAX + 1
    assert protocol.decode_service_data(data) == (1, "SN-0001", True)


def test_service_data_carries_prefix_of_long_dsn_and_fits_legacy_advertising():
    dsn = "factory-line-7_unit-000123"
    version, hint, complete = protocol.decode_service_data(protocol.encode_service_data(dsn))
    assert (version, complete) == (1, False)
    assert dsn.startswith(hint) and len(hint) == protocol.SERVICE_DATA_DSN_MAX
    # Flags (3) + AD header (2) + UUID (16) + service data fits the 31-byte legacy limit.
    assert 3 + 2 + 16 + len(protocol.encode_service_data(dsn)) <= 31
    assert protocol.hint_may_match(dsn, hint, complete)
    assert not protocol.hint_may_match("other-dsn", hint, complete)
    assert not protocol.hint_may_match("SN-00011", "SN-0001", True)
    assert not protocol.hint_may_match("SN-1", "", False)


def test_advertised_name_is_shortened_beyond_29_characters():
    assert protocol.advertised_name("SN-1") == ("SN-1", True)
    name, complete = protocol.advertised_name("d" * 40)
    assert (len(name), complete) == (29, False)


def test_control_commands_round_trip():
    payload = b"x" * 3000
    begin = protocol.encode_begin(payload)
    assert begin == struct.pack("<BBII", 1, 1, 3000, protocol.crc32(payload))
    assert protocol.decode_control(begin) == Begin(3000, protocol.crc32(payload))
    assert protocol.decode_control(protocol.encode_commit()) == Commit()
    assert protocol.decode_control(protocol.encode_abort()) == Abort()
    error = protocol.encode_app_error(409, "DEVICE_OWNED", "owned by another user")
    assert protocol.decode_control(error) == AppError(409, "DEVICE_OWNED", "owned by another user")


def test_app_error_message_is_truncated_on_a_character_boundary():
    value = protocol.encode_app_error(403, "FORBIDDEN", "é" * 200)
    decoded = protocol.decode_control(value)
    assert isinstance(decoded, AppError)
    assert decoded.message == "é" * 50  # 100 bytes, no half character


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"", Status.ERR_FORMAT),
        (b"\x09", Status.ERR_FORMAT),
        (b"\x01\x01\x00", Status.ERR_FORMAT),
        (struct.pack("<BBII", 1, 7, 10, 0), Status.ERR_VERSION),
        (struct.pack("<BBII", 1, 1, 0, 0), Status.ERR_LENGTH),
        (struct.pack("<BBII", 1, 1, protocol.MAX_PAYLOAD_LEN + 1, 0), Status.ERR_LENGTH),
        (b"\x02\x00", Status.ERR_FORMAT),
        (b"\x04\x94\x01\x09ABC", Status.ERR_FORMAT),
    ],
)
def test_malformed_control_writes_name_the_error(value, status):
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_control(value)
    assert caught.value.status is status


def test_crc32_is_the_standard_ieee_polynomial():
    assert protocol.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize(("mtu", "size"), [(23, 18), (185, 180), (247, 242), (517, 510)])
def test_chunk_size_follows_the_mtu(mtu, size):
    assert protocol.chunk_size_for_mtu(mtu) == size


@pytest.mark.parametrize("mtu", [23, 100, 247, 517])
def test_chunks_fit_one_att_write_and_reassemble(mtu):
    payload = os.urandom(3100)
    chunks = protocol.split_chunks(payload, mtu)
    assert all(len(c) <= mtu - 3 and len(c) <= 512 for c in chunks)
    assert [struct.unpack_from("<H", c)[0] for c in chunks] == list(range(len(chunks)))
    receiver = Reassembler(protocol.decode_control(protocol.encode_begin(payload)))
    for chunk in chunks:
        receiver.add(chunk)
    assert receiver.finish() == payload


def _receiver(payload):
    return Reassembler(Begin(len(payload), protocol.crc32(payload)))


def test_a_resent_last_chunk_is_accepted_once():
    payload = os.urandom(100)
    chunks = protocol.split_chunks(payload, 23)
    receiver = _receiver(payload)
    receiver.add(chunks[0])
    receiver.add(chunks[0])  # the app lost the write response and sent it again
    for chunk in chunks[1:]:
        receiver.add(chunk)
    assert receiver.finish() == payload


def test_a_skipped_chunk_is_a_sequence_error():
    payload = os.urandom(100)
    chunks = protocol.split_chunks(payload, 23)
    receiver = _receiver(payload)
    receiver.add(chunks[0])
    with pytest.raises(ProtocolError) as caught:
        receiver.add(chunks[2])
    assert caught.value.status is Status.ERR_SEQUENCE


def test_a_repeated_sequence_number_with_other_bytes_is_a_sequence_error():
    payload = os.urandom(100)
    chunks = protocol.split_chunks(payload, 23)
    receiver = _receiver(payload)
    receiver.add(chunks[0])
    with pytest.raises(ProtocolError) as caught:
        receiver.add(b"\x00\x00" + b"evil")
    assert caught.value.status is Status.ERR_SEQUENCE


def test_more_data_than_announced_is_refused():
    receiver = Reassembler(Begin(4, protocol.crc32(b"abcd")))
    with pytest.raises(ProtocolError) as caught:
        receiver.add(b"\x00\x00abcde")
    assert caught.value.status is Status.ERR_LENGTH


def test_commit_before_all_data_is_a_length_error():
    payload = os.urandom(100)
    receiver = _receiver(payload)
    receiver.add(protocol.split_chunks(payload, 23)[0])
    with pytest.raises(ProtocolError) as caught:
        receiver.finish()
    assert caught.value.status is Status.ERR_LENGTH


def test_corrupted_data_fails_the_checksum():
    payload = bytearray(os.urandom(100))
    receiver = _receiver(bytes(payload))
    payload[50] ^= 0x01
    for chunk in protocol.split_chunks(bytes(payload), 23):
        receiver.add(chunk)
    with pytest.raises(ProtocolError) as caught:
        receiver.finish()
    assert caught.value.status is Status.ERR_CHECKSUM


def test_status_round_trip_and_layout():
    report = StatusReport(Status.ERR_APP, 1234, "409 DEVICE_OWNED")
    value = report.encode()
    assert value[:6] == struct.pack("<BIB", 0x8A, 1234, 16)
    assert StatusReport.decode(value) == report


def test_status_classes():
    assert not Status.RECEIVING.is_final
    assert Status.PROVISIONED.is_final and not Status.PROVISIONED.is_error
    assert all(s.is_error and s.is_final for s in Status if s >= 0x80)
    assert all(0x80 <= s <= 0x9F for s in Status if s.is_error)  # ATT application errors


def test_unknown_status_is_refused():
    with pytest.raises(ProtocolError):
        StatusReport.decode(b"\x42\x00\x00\x00\x00\x00")
