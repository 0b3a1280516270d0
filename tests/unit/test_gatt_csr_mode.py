"""CSR mode over BLE (docs/ble-protocol.md): the device makes its own key and CSR, announces it
in DEVICE_INFO_V2, and accepts only a certificate for that key that passes the trust checks."""

import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from provisioning_app import csr_pem, request_certificate

from onboarding_ble import credentials, protocol
from onboarding_ble.gatt import ProvisioningSession
from onboarding_ble.protocol import DeviceInfo, ProtocolError, Status
from tests.support.device_answers import answer, issue, make_ca

DSN = "SN-csr-1"


@pytest.fixture
def session(tmp_path, ca):
    return ProvisioningSession(DSN, [ca[1]], tmp_path / "state", csr_mode=True)


def deliver(session, payload):
    session.write_control(protocol.encode_begin(payload), "phone")
    for chunk in protocol.split_chunks(payload, 185):
        session.write_data(chunk, "phone")
    session.write_control(protocol.encode_commit(), "phone")
    return session.status


class _CsrKey:
    def __init__(self, csr):
        self._csr = csr

    def public_key(self):
        return self._csr.public_key()


def signed_answer(session, ca, dsn=DSN):
    """What the API answers in CSR mode: the certificate for the CSR's key, and no key."""
    csr = x509.load_der_x509_csr(session.csr_der)
    cert = issue(ca, _CsrKey(csr), dsn=dsn)
    return json.dumps(
        {
            "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "thingName": f"device_{DSN}",
            "certificateId": "ignored",
            "notAfter": cert.not_valid_after_utc.isoformat(),
            "iotEndpoint": "ignored.example.com",
        }
    ).encode()


def test_device_info_v2_announces_csr_mode_with_the_csrs_digest(session):
    info = DeviceInfo.decode(session.device_info_v2())
    assert info.csr_mode and info.dsn == DSN
    assert info.public_key == hashlib.sha256(session.csr_der).digest()
    csr = x509.load_der_x509_csr(session.csr_der)
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.public_key().curve.name == "secp256r1"
    # the app turns it into the PEM the API takes
    assert csr_pem(session.csr_der).startswith("-----BEGIN CERTIFICATE REQUEST-----")


def test_a_version_1_reader_never_sees_csr_mode(session):
    # key type CSR exists only in DEVICE_INFO_V2; a version-1 value with it is refused
    value = bytearray(session.device_info_v2())
    value[0] = protocol.PROTOCOL_VERSION
    with pytest.raises(ProtocolError):
        DeviceInfo.decode(bytes(value[:-1]))


def test_the_certificate_for_the_devices_own_key_is_stored_with_that_key(session, ca):
    final = deliver(session, signed_answer(session, ca))
    assert final.status is Status.PROVISIONED
    stored = credentials.load_valid(session.state_dir, [ca[1]], dsn=DSN)
    assert stored is not None and stored.thing_name == f"device_{DSN}"
    key = serialization.load_pem_private_key(stored.key_path.read_bytes(), None)
    csr = x509.load_der_x509_csr(session.csr_der)
    assert key.public_key() == csr.public_key()


@pytest.mark.parametrize(
    ("bend", "status"),
    [
        ("foreign-ca", Status.ERR_UNTRUSTED_CA),
        ("other-dsn", Status.ERR_DSN_MISMATCH),
        ("other-key", Status.ERR_KEY_MISMATCH),
        ("with-key", Status.ERR_FORMAT),
    ],
)
def test_an_answer_failing_the_trust_checks_is_refused(session, ca, bend, status):
    if bend == "foreign-ca":
        payload = signed_answer(session, make_ca("Foreign"))
    elif bend == "other-dsn":
        payload = signed_answer(session, ca, dsn="SN-other")
    elif bend == "other-key":
        key = ec.generate_private_key(ec.SECP256R1())
        body = json.loads(signed_answer(session, ca))
        body["certificatePem"] = (
            issue(ca, key, dsn=DSN).public_bytes(serialization.Encoding.PEM).decode()
        )
        payload = json.dumps(body).encode()
    else:  # a publicKey-mode answer: a key made elsewhere is never accepted in CSR mode
        key = ec.generate_private_key(ec.SECP256R1())
        payload = answer(b"\x09" * 32, DSN, issue(ca, key, dsn=DSN), key)
    assert deliver(session, payload).status is status
    assert not (session.state_dir / credentials.META_FILE).exists()


def test_the_app_asks_the_api_with_the_csr_and_no_key_fields(monkeypatch):
    sent = {}

    class _Response:
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"{}"

    def fake_urlopen(request, timeout):
        sent["body"] = json.loads(request.data)
        return _Response()

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    request_certificate("http://api.test", "token", DSN, b"\x00" * 32, csr="PEM")
    assert sent["body"] == {"DSN": DSN, "csr": "PEM"}
