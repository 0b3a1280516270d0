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
    """An answer made by the API's own encryption code (provisioning.domain.crypto), as it ships."""
    from provisioning.domain.crypto import seal_private_key

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


# --- GATT hygiene (issue 11, item 5): no app holds the device hostage -----------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def leased(tmp_path, ca, clock):
    reports = []
    s = ProvisioningSession(
        "SN-unit-1",
        [ca[1]],
        tmp_path / "state",
        on_status=reports.append,
        lease=20.0,
        max_session=120.0,
        clock=clock,
    )
    s.reports = reports
    return s


def busy(write):
    with pytest.raises(ProtocolError) as caught:
        write()
    return caught.value.status is Status.ERR_BUSY


def test_begin_and_one_bad_chunk_do_not_lock_out_other_apps(leased, ca):
    # GIVEN an app that sends BEGIN and one chunk out of order (issue 11, attack 5)
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "intruder")
    with pytest.raises(ProtocolError):
        leased.write_data(protocol.split_chunks(payload, 23)[1], "intruder")

    # THEN the error ended its session at once: the owner's app provisions the device
    assert leased.owner is None
    assert deliver(leased, payload, connection="owner").status is Status.PROVISIONED


def test_a_silent_session_is_dropped_after_its_lease(leased, ca, clock):
    # GIVEN an app that sent BEGIN, then nothing
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "intruder")

    # THEN other apps are told to wait while its lease runs ...
    clock.now += 19
    assert busy(lambda: leased.write_control(protocol.encode_begin(payload), "owner"))

    # ... and once it has run out, the session is dropped and another app provisions
    clock.now += 1
    assert deliver(leased, payload, connection="owner").status is Status.PROVISIONED
    assert Status.IDLE in [r.status for r in leased.reports]


def test_the_lease_ends_without_anyone_writing(leased, ca, clock):
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "intruder")
    clock.now += 5
    assert not leased.expire_idle()
    clock.now += 20

    assert leased.expire_idle()
    assert leased.owner is None and leased.status.status is Status.IDLE


def test_a_chunk_now_and_then_does_not_hold_the_device_for_ever(leased, ca, clock):
    # GIVEN an app that keeps its lease alive with one chunk every 19 s
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "intruder")
    chunks = protocol.split_chunks(payload, 23)
    for chunk in chunks[:6]:
        clock.now += 19
        assert busy(lambda: leased.write_control(protocol.encode_begin(payload), "owner"))
        leased.write_data(chunk, "intruder")

    # THEN 120 s after its BEGIN the session is dropped anyway
    clock.now += 7
    assert deliver(leased, payload, connection="owner").status is Status.PROVISIONED


def test_a_steady_transfer_keeps_its_session(leased, ca, clock):
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "phone")
    chunks = protocol.split_chunks(payload, 517)
    assert len(chunks) * 15 < 120  # slow, but within the lease and the session's limit
    for chunk in chunks:
        clock.now += 15
        leased.write_data(chunk, "phone")
    leased.write_control(protocol.encode_commit(), "phone")
    assert leased.status.status is Status.PROVISIONED


def test_app_error_from_another_connection_does_not_touch_the_session(leased, ca):
    # GIVEN the owner's app in the middle of a transfer
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "phone")

    # WHEN another connection writes APP_ERROR
    intruder_error = protocol.encode_app_error(409, "DEVICE_OWNED", "give up")
    assert busy(lambda: leased.write_control(intruder_error, "intruder"))

    # THEN the transfer goes on and provisions the device
    assert leased.status.status is Status.RECEIVING
    for chunk in protocol.split_chunks(payload, 185):
        leased.write_data(chunk, "phone")
    leased.write_control(protocol.encode_commit(), "phone")
    assert leased.status.status is Status.PROVISIONED


def test_the_owners_app_error_ends_its_session(leased, ca):
    payload, _ = good_answer(leased, ca)
    leased.write_control(protocol.encode_begin(payload), "phone")
    leased.write_control(protocol.encode_app_error(502, "UPSTREAM", "try later"), "phone")

    assert leased.status.status is Status.ERR_APP and leased.owner is None
    assert deliver(leased, payload, connection="other").status is Status.PROVISIONED


def test_what_the_app_says_cannot_forge_log_or_event_lines(leased, caplog, capsys):
    from onboarding_ble import events

    # GIVEN an APP_ERROR whose code and message carry line breaks and a forged event line
    caplog.set_level(logging.INFO)
    forged = "oops\nPROVISIONED thing=device_SN-unit-1 cert=00\r\x1b[2Kok"
    value = protocol.encode_app_error(409, "X\nPROVISIONED", forged + "é" + "A" * 300)

    leased.write_control(value, "phone")
    events.emit(events.StatusChanged(leased.status.status.name, leased.status.detail))

    # THEN no log record and no output line starts the forged event, and the log is bounded
    lines = caplog.text.splitlines() + capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("PROVISIONED")]
    logged = [r.getMessage() for r in caplog.records if "API error" in r.getMessage()]
    assert len(logged) == 1
    assert all(" " <= c <= "~" for c in logged[0]) and len(logged[0]) < 250
    assert leased.status.detail == "409 X?PROVISIONED"


# --- no downgrade (issue 11, item 4) -------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "advertised"),
    [
        ("fernet-x25519", ("fernet-x25519", "x25519-hkdf-sha256-aes256gcm")),
        ("x25519-hkdf-sha256-aes256gcm", ("x25519-hkdf-sha256-aes256gcm",)),
    ],
)
def test_device_info_v2_advertises_the_schemes_the_device_accepts(
    tmp_path, ca, minimum, advertised
):
    session = ProvisioningSession("SN-A", [ca[1]], tmp_path, minimum_scheme=minimum)

    info = protocol.DeviceInfo.decode(session.device_info_v2())

    assert info.version == 2 and info.schemes == advertised
    assert info.dsn == "SN-A" and info.public_key == session.public_key
    assert protocol.DeviceInfo.decode(session.device_info()).schemes is None  # version 1 as was


def test_an_old_apps_answer_without_encryption_field_provisions_a_default_device(session, ca):
    # GIVEN the answer a version-1 app relays from an API that names no scheme
    payload, _ = good_answer(session, ca)
    body = json.loads(payload)
    del body["encryption"]

    assert deliver(session, json.dumps(body).encode()).status is Status.PROVISIONED


def test_the_gatt_service_drops_a_silent_session_with_nobody_writing(tmp_path, ca):
    import asyncio

    from onboarding_ble.gatt import OnboardingService

    class Radio:
        """What OnboardingService needs of a bumble Device: notifications go nowhere."""

        async def notify_subscribers(self, _characteristic, _value):
            return None

    async def scenario():
        # GIVEN a device whose session has a short lease, and an app that sent BEGIN only
        session = ProvisioningSession("SN-unit-1", [ca[1]], tmp_path / "state", lease=0.1)
        service = OnboardingService(Radio(), session)
        session.write_control(protocol.encode_begin(b"{}"), "intruder")
        assert session.owner == "intruder"
        # WHEN nobody writes anything, THEN the service itself ends the session
        async with asyncio.timeout(10):
            while session.owner is not None:
                await asyncio.sleep(0.05)
        service.provisioned.cancel()
        return session.status.status

    assert asyncio.run(scenario()) is Status.IDLE


def test_begin_again_from_the_same_app_does_not_restart_the_sessions_cap(leased, ca, clock):
    # GIVEN an app that sends BEGIN again every 19 s (inside its lease) instead of any chunk,
    # its last one 19 s ago and its first 133 s ago
    payload, _ = good_answer(leased, ca)
    for _ in range(7):
        leased.write_control(protocol.encode_begin(payload), "intruder")
        clock.now += 19
    # THEN 120 s after its first BEGIN the session is dropped anyway: the owner provisions
    assert deliver(leased, payload, connection="owner").status is Status.PROVISIONED


def _self_signed(subject: str, extensions=()):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()), key


def test_hostile_answers_are_refused_and_free_the_session(session):
    # GIVEN answers a relay could send that no check foresaw: JSON nested past the parser's
    # limit, and a certificate whose extended key usage does not parse
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    garbled = x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x03\x06\x01")
    cert, key = _self_signed("x", [garbled])
    hostile = [b"[" * 5000 + b"]" * 5000, answer(session.public_key, session.dsn, cert, key)]
    for payload in hostile:
        # WHEN one is delivered THEN the device refuses it: a verdict, never a hang
        status = deliver(session, payload, mtu=517, connection="relay")
        assert status.status not in (Status.VERIFYING, Status.PROVISIONED), status
        assert session.owner is None
    # ... and the next app is served
    assert session.credentials is None


def test_a_refusal_quoting_the_certificate_cannot_forge_a_log_or_event_line(session, caplog):
    # GIVEN a client certificate (no CA we pin made it) whose name carries line breaks and a
    # fake verdict: the path check, which quotes the name in its refusal, is what refuses it
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    forged = "x\nWARNING gatt: status PROVISIONED\rPROVISIONED thing=t cert=c"
    cert, key = _self_signed(
        forged,
        [
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            x509.BasicConstraints(ca=False, path_length=None),
        ],
    )
    with caplog.at_level(logging.INFO):
        status = deliver(session, answer(session.public_key, session.dsn, cert, key))
    # THEN it is refused, and what the device reports and logs stays on one printable line
    assert status.status is Status.ERR_UNTRUSTED_CA
    assert all(report.detail.isprintable() for report in session.reports)
    assert "PROVISIONED" not in [r.status.name for r in session.reports]
    assert all(record.getMessage().isprintable() for record in caplog.records)
