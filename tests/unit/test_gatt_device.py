"""The device's side of provisioning (onboarding_ble.gatt.ProvisioningSession), without a radio."""

import base64
import datetime as dt
import json
import logging
import stat

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from onboarding_ble import credentials, protocol
from onboarding_ble.gatt import ProvisioningSession
from onboarding_ble.protocol import ProtocolError, Status
from tests.support.device_answers import NOW, answer, issue, make_ca, pem_key


@pytest.fixture
def ca():
    return make_ca()


@pytest.fixture
def session(tmp_path, ca):
    reports = []
    s = ProvisioningSession("SN-unit-1", [ca[1]], tmp_path / "state", on_status=reports.append)
    s.reports = reports
    return s


def deliver(session, payload, mtu=185, connection="phone"):
    session.write_control(protocol.encode_begin(payload), connection)
    for chunk in protocol.split_chunks(payload, mtu):
        session.write_data(chunk, connection)
    session.write_control(protocol.encode_commit(), connection)
    return session.status


def good_answer(session, ca):
    key = ec.generate_private_key(ec.SECP256R1())
    return answer(session.public_key, session.dsn, issue(ca, key, dsn=session.dsn), key), key


def test_device_info_offers_dsn_and_a_fresh_x25519_key(tmp_path, ca):
    first = ProvisioningSession("SN-A", [ca[1]], tmp_path / "a")
    second = ProvisioningSession("SN-A", [ca[1]], tmp_path / "b")
    info = protocol.DeviceInfo.decode(first.device_info())
    assert info.dsn == "SN-A" and info.public_key == first.public_key
    assert first.public_key != second.public_key


def test_valid_answer_is_stored_privately_and_reported(session, ca, caplog):
    caplog.set_level(logging.DEBUG)
    payload, key = good_answer(session, ca)

    final = deliver(session, payload)

    assert final.status is Status.PROVISIONED and final.detail == "device_SN-unit-1"
    assert [r.status for r in session.reports] == [
        Status.RECEIVING,
        Status.VERIFYING,
        Status.PROVISIONED,
    ]
    state = session.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("certificate.pem", "private_key.pem", "device.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    stored_key = serialization.load_pem_private_key((state / "private_key.pem").read_bytes(), None)
    assert stored_key.private_numbers() == key.private_numbers()
    stored = credentials.load_valid(state, [ca[1]])
    assert stored is not None and stored.thing_name == "device_SN-unit-1"
    # The private key never reaches the logs.
    body = pem_key(key).decode().splitlines()[1]
    assert body not in caplog.text


def nothing_stored(session):
    return not session.state_dir.exists() or not any(session.state_dir.iterdir())


def test_certificate_from_another_ca_is_rejected_and_nothing_stored(session, ca):
    key = ec.generate_private_key(ec.SECP256R1())
    rogue = make_ca("Device CA")  # same name, other key: only the signature tells them apart
    cert = issue(rogue, key, dsn=session.dsn)
    final = deliver(session, answer(session.public_key, session.dsn, cert, key))
    assert final.status is Status.ERR_UNTRUSTED_CA
    assert nothing_stored(session)


def test_key_that_does_not_match_the_certificate_is_rejected(session, ca):
    cert = issue(ca, ec.generate_private_key(ec.SECP256R1()), dsn=session.dsn)
    other_key = ec.generate_private_key(ec.SECP256R1())
    final = deliver(session, answer(session.public_key, session.dsn, cert, other_key))
    assert final.status is Status.ERR_KEY_MISMATCH
    assert nothing_stored(session)


def test_answer_encrypted_for_another_device_does_not_decrypt(session, ca):
    key = ec.generate_private_key(ec.SECP256R1())
    other_device = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    final = deliver(
        session, answer(other_device, session.dsn, issue(ca, key, dsn=session.dsn), key)
    )
    assert final.status is Status.ERR_DECRYPT
    assert nothing_stored(session)


def test_expired_certificate_is_rejected(session, ca):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, -0.5, dsn=session.dsn)
    final = deliver(session, answer(session.public_key, session.dsn, cert, key))
    assert final.status is Status.ERR_CERT_EXPIRED
    assert nothing_stored(session)


@pytest.mark.parametrize("other", ["SN-other", "x_SN-unit-1"])
def test_a_certificate_for_another_dsn_is_rejected_whatever_the_json_says(session, ca, other):
    # GIVEN a genuine certificate and key for another DSN (issue 11, attack 1), re-encrypted to
    # this device, with a thingName in the JSON that claims this device
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, dsn=other)
    final = deliver(session, answer(session.public_key, session.dsn, cert, key))
    assert final.status is Status.ERR_DSN_MISMATCH
    assert nothing_stored(session)


def test_corrupted_transfer_fails_the_checksum_then_a_resend_succeeds(session, ca):
    payload, _ = good_answer(session, ca)
    session.write_control(protocol.encode_begin(payload), "phone")
    chunks = protocol.split_chunks(payload, 185)
    chunks[1] = chunks[1][:-1] + bytes([chunks[1][-1] ^ 0xFF])
    for chunk in chunks:
        session.write_data(chunk, "phone")
    session.write_control(protocol.encode_commit(), "phone")
    assert session.status.status is Status.ERR_CHECKSUM
    assert nothing_stored(session)

    assert deliver(session, payload).status is Status.PROVISIONED


def test_out_of_order_chunk_is_refused_with_the_error_code(session, ca):
    payload, _ = good_answer(session, ca)
    session.write_control(protocol.encode_begin(payload), "phone")
    chunks = protocol.split_chunks(payload, 23)
    with pytest.raises(ProtocolError) as caught:
        session.write_data(chunks[1], "phone")
    assert caught.value.status is Status.ERR_SEQUENCE
    assert session.status.status is Status.ERR_SEQUENCE


def test_link_cut_mid_transfer_resets_and_the_app_can_resend(session, ca):
    payload, _ = good_answer(session, ca)
    session.write_control(protocol.encode_begin(payload), "phone")
    session.write_data(protocol.split_chunks(payload, 23)[0], "phone")
    session.disconnected("phone")
    assert session.status.status is Status.IDLE

    assert deliver(session, payload, connection="phone-again").status is Status.PROVISIONED


def test_app_error_leaves_the_device_unprovisioned(session, ca):
    session.write_control(protocol.encode_app_error(409, "CONFLICT", "owned by someone else"))
    assert session.status.status is Status.ERR_APP
    assert session.status.detail == "409 CONFLICT"
    assert nothing_stored(session)
    payload, _ = good_answer(session, ca)
    assert deliver(session, payload).status is Status.PROVISIONED


def test_a_second_app_cannot_interleave(session, ca):
    payload, _ = good_answer(session, ca)
    session.write_control(protocol.encode_begin(payload), "phone")
    with pytest.raises(ProtocolError) as caught:
        session.write_control(protocol.encode_begin(payload), "intruder")
    assert caught.value.status is Status.ERR_BUSY
    assert session.status.status is Status.RECEIVING


def test_provisioned_device_refuses_a_new_transfer(session, ca):
    payload, _ = good_answer(session, ca)
    deliver(session, payload)
    with pytest.raises(ProtocolError) as caught:
        session.write_control(protocol.encode_begin(payload), "phone")
    assert caught.value.status is Status.ERR_STATE


def test_stored_credentials_are_only_reused_while_valid(session, ca, tmp_path):
    payload, _ = good_answer(session, ca)
    deliver(session, payload)
    state = session.state_dir
    assert credentials.load_valid(state, [ca[1]]) is not None
    assert credentials.load_valid(state, [make_ca()[1]]) is None  # CA pin changed
    assert credentials.load_valid(state, [ca[1]], now=NOW + dt.timedelta(days=60)) is None
    (state / "private_key.pem").write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    assert credentials.load_valid(state, [ca[1]]) is None  # key swapped on disk


def server_answer(session, ca, scheme, encrypted_for_dsn=None):
    """An answer made by the API's own encryption code (provisioning.crypto), as it ships."""
    from provisioning.crypto import seal_private_key

    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, dsn=session.dsn)
    sealed = seal_private_key(key, session.public_key, scheme, encrypted_for_dsn or session.dsn)
    return json.dumps(
        {
            "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "encryptedPrivateKey": sealed.encrypted_private_key,
            "publicKey": base64.b64encode(sealed.server_public_key).decode(),
            "thingName": f"device_{session.dsn}",
            "certificateId": cert.fingerprint(hashes.SHA256()).hex(),
            "encryption": scheme,
        }
    ).encode()


@pytest.mark.parametrize("scheme", ["fernet-x25519", "x25519-hkdf-sha256-aes256gcm"])
def test_the_device_opens_both_schemes_the_api_sends(session, ca, scheme):
    final = deliver(session, server_answer(session, ca, scheme))
    assert final.status is Status.PROVISIONED


def test_a_gcm_answer_bound_to_another_dsn_does_not_open(session, ca):
    payload = server_answer(session, ca, "x25519-hkdf-sha256-aes256gcm", "SN-someone-else")
    final = deliver(session, payload)
    assert final.status is Status.ERR_DECRYPT
    assert nothing_stored(session)
