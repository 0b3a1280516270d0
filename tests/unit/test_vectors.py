"""The firmware test vectors (docs/test-vectors/): the committed files are what the generator
(local/tools/vectors.py) makes, and the device, the app and the service each reproduce or accept
every one of them, read from the files as a firmware team reads them."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import provisioning_app
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from onboarding_ble import credentials, gatt, protocol, renewal, rules, trust
from onboarding_ble.protocol import ProtocolError, Status
from provisioning.domain import attestation, crypto
from provisioning.domain.models import parse_provision_request
from provisioning.usecases.renew import (
    RenewalResult,
    answer_topic,
    parse_renewal_event,
    rejection,
)
from tools import vectors

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "test-vectors"
# RFC 7748 section 6.1's shared secret for Alice's and Bob's keys (the device's and the server's).
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def wrapping() -> dict[str, Any]:
    return load("key-wrapping.json")


@pytest.fixture(scope="module")
def attested() -> dict[str, Any]:
    return load("attestation.json")


def device_key(wrapping: dict[str, Any]) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(
        bytes.fromhex(wrapping["device"]["x25519PrivateHex"])
    )


def server_key(wrapping: dict[str, Any]) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(
        bytes.fromhex(wrapping["server"]["x25519PrivateHex"])
    )


def pinned_ca() -> list[x509.Certificate]:
    """What the vectors' device pins: ca.json's certificatePem (the root)."""
    return credentials.load_ca(load("ca.json")["certificatePem"].encode())


def issuing_ca() -> x509.Certificate:
    return x509.load_pem_x509_certificate(load("ca.json")["issuingCa"]["certificatePem"].encode())


def without_chain(payload: str) -> bytes:
    """The answer as an integrator who drops ``certificateChainPem`` relays it."""
    body = json.loads(payload)
    del body["certificateChainPem"]
    return json.dumps(body).encode()


def factory_key(attested: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    scalar = int(attested["attestationKey"]["privateScalarHex"], 16)
    return ec.derive_private_key(scalar, ec.SECP256R1())


# --- the files are the generator's --------------------------------------------------------------


def test_the_committed_vectors_are_exactly_what_the_generator_makes() -> None:
    files = vectors.build()
    assert sorted(files) == sorted(p.name for p in VECTORS.glob("*.json"))
    assert vectors.stale(VECTORS, files) == []
    for content in files.values():
        assert content["description"]


def test_check_mode_names_a_file_that_drifted(tmp_path: Path, capsys: Any) -> None:
    assert vectors.main(["--out", str(tmp_path)]) == 0
    assert vectors.main(["--out", str(tmp_path), "--check"]) == 0
    drifted = tmp_path / "renewal.json"
    drifted.write_text(drifted.read_text().replace("SN-0001", "SN-0002"))
    assert vectors.main(["--out", str(tmp_path), "--check"]) == 1
    assert "renewal.json" in capsys.readouterr().err


# --- the CAs: a pinned root, an issuing CA that signs the devices ------------------------------


def test_ca_json_pins_a_root_that_signs_only_the_issuing_ca() -> None:
    vector = load("ca.json")
    (root,) = pinned_ca()
    issuing = issuing_ca()
    # the pinned certificate is a self-signed root, with no path length
    assert root.subject == root.issuer != issuing.subject
    root.verify_directly_issued_by(root)
    root_constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (root_constraints.value.ca, root_constraints.value.path_length) == (True, None)
    # the issuing CA is the root's, as SubordinateCACertificate_PathLen0/V1 makes it
    issuing.verify_directly_issued_by(root)
    constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (constraints.critical, constraints.value.ca, constraints.value.path_length) == (
        True,
        True,
        0,
    )
    usage = issuing.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert (usage.value.digital_signature, usage.value.key_cert_sign, usage.value.crl_sign) == (
        True,
        True,
        True,
    )
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    # the fingerprints and the published keys are these certificates'
    for certificate, entry in ((root, vector), (issuing, vector["issuingCa"])):
        assert certificate.fingerprint(hashes.SHA256()).hex() == entry["certificateDerSha256Hex"]
        key = ec.derive_private_key(int(entry["privateKeyScalarHex"], 16), ec.SECP256R1())
        assert trust.public_keys_match(certificate, key)


def test_the_answers_chain_is_the_issuing_ca_then_the_root_and_it_signed_the_devices() -> None:
    vector = load("ca.json")
    expected = vector["issuingCa"]["certificatePem"] + vector["certificatePem"]
    answers = {
        "provisioning": load("gatt-exchange.json")["api"]["answer"],
        "renewal": json.loads(load("renewal.json")["accepted"]["payload"]),
    }
    for name, answer in answers.items():
        assert answer["certificateChainPem"] == expected, name
        leaf = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
        leaf.verify_directly_issued_by(issuing_ca())


# --- key wrapping -------------------------------------------------------------------------------


def test_the_agreement_is_rfc_7748s(wrapping: dict[str, Any]) -> None:
    device, server = device_key(wrapping), server_key(wrapping)
    assert device.public_key().public_bytes_raw().hex() == wrapping["device"]["x25519PublicHex"]
    assert server.public_key().public_bytes_raw().hex() == wrapping["server"]["x25519PublicHex"]
    shared = device.exchange(server.public_key())
    assert shared.hex() == wrapping["sharedSecretHex"] == RFC7748_SHARED


@pytest.mark.parametrize("scheme", rules.ENCRYPTION_SCHEMES)
def test_the_device_opens_each_wrapped_key(wrapping: dict[str, Any], scheme: str) -> None:
    opened = credentials.decrypt_private_key(
        scheme,
        device_key(wrapping),
        base64.b64decode(wrapping["server"]["publicKey"]),
        wrapping[scheme]["encryptedPrivateKey"].encode(),
        wrapping["dsn"],
    )
    assert opened.decode() == wrapping["plaintextPem"]
    assert len(opened) == wrapping["plaintextLength"]


def test_the_device_refuses_the_gcm_token_for_another_dsn(wrapping: dict[str, Any]) -> None:
    with pytest.raises(InvalidTag):  # the DSN is the associated data
        credentials.decrypt_private_key(
            crypto.HKDF_AES_GCM,
            device_key(wrapping),
            base64.b64decode(wrapping["server"]["publicKey"]),
            wrapping[crypto.HKDF_AES_GCM]["encryptedPrivateKey"].encode(),
            "SN-0002",
        )


def test_the_service_seals_exactly_the_gcm_vector(wrapping: dict[str, Any]) -> None:
    gcm = wrapping[crypto.HKDF_AES_GCM]
    issued = serialization.load_pem_private_key(wrapping["plaintextPem"].encode(), None)
    assert isinstance(issued, ec.EllipticCurvePrivateKey)
    sealed = crypto.seal_private_key(
        issued,
        bytes.fromhex(wrapping["device"]["x25519PublicHex"]),
        crypto.HKDF_AES_GCM,
        wrapping["dsn"],
        server_key=server_key(wrapping),
        nonce=bytes.fromhex(gcm["nonceHex"]),
    )
    assert sealed.encrypted_private_key == gcm["encryptedPrivateKey"]
    assert base64.b64encode(sealed.server_public_key).decode() == wrapping["server"]["publicKey"]


def test_the_gcm_intermediates_lead_to_the_token(wrapping: dict[str, Any]) -> None:
    gcm, dsn = wrapping[crypto.HKDF_AES_GCM], wrapping["dsn"].encode()
    hkdf = gcm["hkdf"]
    info = (
        crypto.HKDF_LABEL
        + bytes.fromhex(wrapping["server"]["x25519PublicHex"])
        + bytes.fromhex(wrapping["device"]["x25519PublicHex"])
        + dsn
    )
    assert hkdf["infoHex"] == info.hex() and hkdf["labelHex"] == rules.HKDF_LABEL.hex()
    key = HKDF(hashes.SHA256(), 32, None, info).derive(bytes.fromhex(wrapping["sharedSecretHex"]))
    assert key.hex() == hkdf["keyHex"]
    nonce = bytes.fromhex(gcm["nonceHex"])
    sealed = AESGCM(key).encrypt(nonce, wrapping["plaintextPem"].encode(), dsn)
    assert sealed.hex() == gcm["ciphertextHex"] + gcm["tagHex"]
    assert base64.b64encode(nonce + sealed).decode() == gcm["encryptedPrivateKey"]
    assert gcm["aadHex"] == dsn.hex()


def test_the_services_fernet_token_opens_with_the_vectors_key(wrapping: dict[str, Any]) -> None:
    # Fernet draws its own IV and time, so the service's token is not the vector's; its key is.
    issued = serialization.load_pem_private_key(wrapping["plaintextPem"].encode(), None)
    assert isinstance(issued, ec.EllipticCurvePrivateKey)
    sealed = crypto.seal_private_key(
        issued,
        bytes.fromhex(wrapping["device"]["x25519PublicHex"]),
        crypto.FERNET_X25519,
        wrapping["dsn"],
        server_key=server_key(wrapping),
    )
    fernet = Fernet(wrapping[crypto.FERNET_X25519]["fernetKey"])
    assert fernet.decrypt(sealed.encrypted_private_key).decode() == wrapping["plaintextPem"]


def test_the_fernet_intermediates_lead_to_the_token(wrapping: dict[str, Any]) -> None:
    vector = wrapping[crypto.FERNET_X25519]
    secret = bytes.fromhex(wrapping["sharedSecretHex"])
    assert base64.urlsafe_b64decode(vector["fernetKey"]) == secret
    assert (vector["signingKeyHex"], vector["encryptionKeyHex"]) == (
        secret[:16].hex(),
        secret[16:].hex(),
    )
    token = vector["encryptedPrivateKey"]
    assert Fernet(vector["fernetKey"]).extract_timestamp(token) == vector["timestamp"]
    raw = base64.urlsafe_b64decode(token)
    assert raw.hex() == (
        vector["versionHex"]
        + vector["timestampHex"]
        + vector["ivHex"]
        + vector["ciphertextHex"]
        + vector["hmacSha256Hex"]
    )
    decryptor = Cipher(
        algorithms.AES(secret[16:]), modes.CBC(bytes.fromhex(vector["ivHex"]))
    ).decryptor()
    padded = decryptor.update(bytes.fromhex(vector["ciphertextHex"])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert (unpadder.update(padded) + unpadder.finalize()).decode() == wrapping["plaintextPem"]


# --- attestation --------------------------------------------------------------------------------


def test_the_service_and_the_device_sign_the_same_bytes(attested: dict[str, Any]) -> None:
    wrapping = load("key-wrapping.json")
    certified = attestation.x25519_spki_der(bytes.fromhex(wrapping["device"]["x25519PublicHex"]))
    assert certified.hex() == attested["certifiedKeySpkiDerHex"]
    challenge = bytes.fromhex(attested["challengeHex"])
    message = attestation.message(attested["dsn"], challenge, certified)
    assert message.hex() == attested["messageHex"]
    assert rules.attestation_message(attested["dsn"], challenge, certified) == message
    assert "".join(part["hex"] for part in attested["messageParts"]) == attested["messageHex"]
    assert len(message) == attested["messageLength"]


def test_the_services_verifier_accepts_the_signature(attested: dict[str, Any]) -> None:
    listed = attestation.load_attestation_public_key(attested["attestationKey"]["publicKeyPem"])
    assert listed.hex() == attested["attestationKey"]["publicSpkiDerHex"]
    entry = attestation.AllowlistEntry(attested["dsn"], listed)
    signature = base64.b64decode(attested["signature"]["attestation"])
    challenge = bytes.fromhex(attested["challengeHex"])
    certified = bytes.fromhex(attested["certifiedKeySpkiDerHex"])
    assert signature.hex() == attested["signature"]["derHex"]
    assert attestation.verifies(entry, attested["dsn"], challenge, certified, signature)
    attestation.check(
        required=True,
        entry=entry,
        dsn=attested["dsn"],
        public_key_der=certified,
        signature=signature,
        challenge=challenge,
    )
    # ... and only over these bytes: another challenge does not verify
    other = bytes(32)
    assert not attestation.verifies(entry, attested["dsn"], other, certified, signature)


def test_the_signature_is_rfc_6979s_and_a_random_one_is_as_good(
    attested: dict[str, Any], tmp_path: Path
) -> None:
    key = factory_key(attested)
    message = bytes.fromhex(attested["messageHex"])
    deterministic = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert deterministic.hex() == attested["signature"]["derHex"]
    r, s = decode_dss_signature(deterministic)
    assert (f"{r:064x}", f"{s:064x}") == (
        attested["signature"]["rHex"],
        attested["signature"]["sHex"],
    )
    # The example device signs with a random nonce: its signature differs and still verifies.
    wrapping = load("key-wrapping.json")
    session = gatt.ProvisioningSession(
        attested["dsn"],
        pinned_ca(),
        tmp_path,
        private_key=device_key(wrapping),
        attestation_key=key,
    )
    session.write_challenge(bytes.fromhex(attested["challengeHex"]), "phone")
    served = session.attestation("phone")
    entry = attestation.AllowlistEntry(
        attested["dsn"], bytes.fromhex(attested["attestationKey"]["publicSpkiDerHex"])
    )
    certified = bytes.fromhex(attested["certifiedKeySpkiDerHex"])
    challenge = bytes.fromhex(attested["challengeHex"])
    assert attestation.verifies(entry, attested["dsn"], challenge, certified, served)


# --- DEVICE_INFO_V2 -----------------------------------------------------------------------------


def test_the_app_parses_the_device_info_dump_and_the_device_serves_it(tmp_path: Path) -> None:
    vector, wrapping = load("device-info-v2.json"), load("key-wrapping.json")
    value = bytes.fromhex(vector["valueHex"])
    info = protocol.DeviceInfo.decode(value)
    decoded = vector["decoded"]
    assert (
        info.version,
        info.key_type,
        info.public_key.hex(),
        info.dsn,
        list(info.schemes or ()),
    ) == (
        decoded["version"],
        decoded["keyType"],
        decoded["publicKeyHex"],
        decoded["dsn"],
        decoded["schemes"],
    )
    for field in vector["fields"]:
        raw = value[field["offset"] : field["offset"] + field["size"]]
        expected = field["value"]
        if isinstance(expected, int):
            assert raw == bytes([expected]), field["name"]
        elif field["name"] == "dsn":
            assert raw == expected.encode("ascii")
        else:
            assert raw == bytes.fromhex(expected), field["name"]
    assert sum(field["size"] for field in vector["fields"]) == len(value) == vector["length"]
    # the app asks for the strongest scheme both know
    assert provisioning_app.choose_scheme(info.schemes) == crypto.HKDF_AES_GCM
    session = gatt.ProvisioningSession(
        info.dsn, pinned_ca(), tmp_path, private_key=device_key(wrapping)
    )
    assert session.device_info_v2() == value
    assert session.device_info().hex() == vector["deviceInfoV1Hex"]
    assert protocol.DeviceInfo.decode(bytes.fromhex(vector["deviceInfoV1Hex"])).schemes is None


# --- the GATT exchange --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exchange() -> dict[str, Any]:
    return load("gatt-exchange.json")


def test_the_app_frames_the_answer_as_the_trace_does(exchange: dict[str, Any]) -> None:
    payload = json.dumps(exchange["api"]["answer"]).encode()
    assert payload.decode() == exchange["payload"]
    assert f"{protocol.crc32(payload):08x}" == exchange["payloadCrc32Hex"]
    writes = [s for s in exchange["steps"] if s["operation"] == "write"]
    control = [bytes.fromhex(s["valueHex"]) for s in writes if s["characteristic"] == "CONTROL"]
    data = [bytes.fromhex(s["valueHex"]) for s in writes if s["characteristic"] == "DATA"]
    assert control == [protocol.encode_begin(payload), protocol.encode_commit()]
    assert data == protocol.split_chunks(payload, exchange["mtu"])
    begin = protocol.decode_control(control[0])
    assert isinstance(begin, protocol.Begin)
    assert (begin.total_length, begin.crc32) == (len(payload), int(exchange["payloadCrc32Hex"], 16))
    assert b"".join(chunk[2:] for chunk in data) == payload


def test_the_device_answers_the_trace_byte_for_byte(
    exchange: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN the device of the vectors: their X25519 key, factory key, pinned CA, thing prefix
    wrapping, attested = load("key-wrapping.json"), load("attestation.json")
    notified: list[bytes] = []
    session = gatt.ProvisioningSession(
        exchange["firmware"]["dsn"],
        pinned_ca(),
        tmp_path,
        lambda report: notified.append(report.encode()),
        private_key=device_key(wrapping),
        thing_prefix=exchange["firmware"]["thingPrefix"],
        minimum_scheme=exchange["firmware"]["minimumScheme"],
        attestation_key=factory_key(attested),
    )
    handlers = {
        "ATTESTATION_CHALLENGE": session.write_challenge,
        "CONTROL": session.write_control,
        "DATA": session.write_data,
    }
    expected_notifications: list[str] = []
    # WHEN the app's writes are replayed in order, and its reads made
    for step in exchange["steps"]:
        value = bytes.fromhex(step["valueHex"])
        if step["operation"] == "write":
            handlers[step["characteristic"]](value, "phone")
            assert session.status.encode().hex() == step["statusReadHex"], step["step"]
        elif step["characteristic"] == "DEVICE_INFO_V2":
            assert session.device_info_v2() == value
        elif step["characteristic"] == "DEVICE_ATTESTATION":
            entry = attestation.AllowlistEntry(
                attested["dsn"], bytes.fromhex(attested["attestationKey"]["publicSpkiDerHex"])
            )
            served = session.attestation("phone")
            assert attestation.verifies(
                entry,
                attested["dsn"],
                bytes.fromhex(attested["challengeHex"]),
                session.certified_key_der,
                served,
            )
        else:
            expected_notifications.append(step["valueHex"])
    # THEN it notified exactly the trace's STATUS values, and stored the sealed key
    assert [n.hex() for n in notified] == expected_notifications
    assert session.status.status is Status.PROVISIONED
    assert session.credentials is not None
    assert session.credentials.thing_name == exchange["provisioned"]["thingName"]
    assert session.credentials.certificate_id == exchange["provisioned"]["certificateId"]
    assert session.credentials.key_path.read_text() == wrapping["plaintextPem"]
    # ... and the issuing CA of its validated path beside the certificate, not the pinned root
    stored_chain = (session.credentials.directory / credentials.CHAIN_FILE).read_text()
    assert stored_chain == exchange["provisioned"]["chainPem"]
    assert stored_chain == load("ca.json")["issuingCa"]["certificatePem"]


def test_the_device_validates_the_answer_to_the_pinned_root_through_the_issuing_ca(
    exchange: dict[str, Any],
) -> None:
    wrapping = load("key-wrapping.json")
    answer = credentials.verify_answer(
        exchange["payload"].encode(),
        device_key(wrapping),
        exchange["firmware"]["dsn"],
        pinned_ca(),
        thing_prefix=exchange["firmware"]["thingPrefix"],
    )
    assert answer.intermediates == (issuing_ca(),)
    # the path checked is certificate -> issuing CA -> the pinned root
    trusted = trust.verify_device_certificate(
        exchange["api"]["answer"]["certificatePem"],
        load("ca.json")["certificatePem"],
        exchange["firmware"]["dsn"],
        serialization.load_pem_private_key(wrapping["plaintextPem"].encode(), None),
        chain_pem=exchange["api"]["answer"]["certificateChainPem"],
    )
    assert trusted.chain == (issuing_ca(), *pinned_ca())


def test_the_device_refuses_the_answer_without_its_chain(
    exchange: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN the trace's answer relayed without certificateChainPem
    wrapping = load("key-wrapping.json")
    payload = without_chain(exchange["payload"])
    session = gatt.ProvisioningSession(
        exchange["firmware"]["dsn"],
        pinned_ca(),
        tmp_path,
        private_key=device_key(wrapping),
        thing_prefix=exchange["firmware"]["thingPrefix"],
    )
    # WHEN the app sends it over GATT
    session.write_control(protocol.encode_begin(payload), "phone")
    for chunk in protocol.split_chunks(payload, exchange["mtu"]):
        session.write_data(chunk, "phone")
    session.write_control(protocol.encode_commit(), "phone")
    # THEN the device finds no path to the pinned root, says so, and stores nothing
    assert session.status.status is Status.ERR_UNTRUSTED_CA
    assert session.credentials is None
    assert not (tmp_path / credentials.CERT_FILE).exists()


def test_a_corrupted_frame_of_the_trace_is_refused(
    exchange: dict[str, Any], tmp_path: Path
) -> None:
    wrapping = load("key-wrapping.json")
    session = gatt.ProvisioningSession(
        exchange["firmware"]["dsn"], pinned_ca(), tmp_path, private_key=device_key(wrapping)
    )
    writes = [s for s in exchange["steps"] if s["characteristic"] in ("CONTROL", "DATA")]
    for step in writes[:-1]:
        value = bytearray.fromhex(step["valueHex"])
        if step["characteristic"] == "DATA" and value[:2] == b"\x01\x00":
            value[-1] ^= 0x01  # one bit of the second chunk flipped in transit
        handler = (
            session.write_control if step["characteristic"] == "CONTROL" else session.write_data
        )
        handler(bytes(value), "phone")
    session.write_control(protocol.encode_commit(), "phone")
    assert session.status.status is Status.ERR_CHECKSUM


def test_the_app_sends_the_vectors_request_and_the_service_accepts_it(
    exchange: dict[str, Any],
) -> None:
    wrapping, attested = load("key-wrapping.json"), load("attestation.json")
    with api_answering(exchange["api"]["answer"]) as (url, received):
        result = provisioning_app.request_certificate(
            url,
            "token",
            exchange["firmware"]["dsn"],
            bytes.fromhex(wrapping["device"]["x25519PublicHex"]),
            crypto.HKDF_AES_GCM,
            timeout=5,
            attestation=provisioning_app.Attestation(
                bytes.fromhex(attested["challengeHex"]),
                bytes.fromhex(attested["signature"]["derHex"]),
            ),
        )
    assert result.ok and result.body == exchange["api"]["answer"]
    assert json.loads(received[0]) == exchange["api"]["certificateRequest"]
    request = parse_provision_request(received[0].decode())
    assert (request.dsn, request.encryption) == (exchange["firmware"]["dsn"], crypto.HKDF_AES_GCM)
    assert request.device_public_key.hex() == wrapping["device"]["x25519PublicHex"]
    assert request.attestation is not None
    assert request.attestation.hex() == attested["signature"]["derHex"]
    assert request.attestation_challenge.hex() == attested["challengeHex"]


@contextmanager
def api_answering(answer: dict[str, Any]) -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP server on 127.0.0.1 that records the bodies POSTed to it and answers ``answer``."""
    received: list[bytes] = []
    body = json.dumps(answer).encode()

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


# --- renewal ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renewing() -> dict[str, Any]:
    return load("renewal.json")


def renewal_key(renewing: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(
        int(renewing["renewalKey"]["privateScalarHex"], 16), ec.SECP256R1()
    )


def check_renewal(renewing: dict[str, Any], payload: bytes, key: Any = None) -> Any:
    """The device's check of a renewal answer (with the vectors' renewal key unless ``key``)."""
    return renewal.check_answer(
        payload,
        renewal_key(renewing) if key is None else key,
        dsn=renewing["dsn"],
        thing_name=renewing["thingName"],
        cas=pinned_ca(),
        thing_prefix=vectors.THING_PREFIX,
        iot_endpoint="",
    )


def test_the_device_and_the_service_agree_on_the_topics(renewing: dict[str, Any]) -> None:
    topics = renewal.Topics(renewing["thingName"])
    assert topics.renew == renewing["request"]["topic"]
    assert (
        topics.accepted
        == renewing["accepted"]["topic"]
        == answer_topic(renewing["thingName"], True)
    )
    assert topics.rejected == renewing["rejectedExample"]["topic"]
    assert topics.rejected == answer_topic(renewing["thingName"], False)
    assert topics.confirm == renewing["confirm"]["topic"]
    assert renewing["subscriptions"] == [topics.accepted, topics.rejected, topics.due]


def test_the_service_parses_the_renewal_request(renewing: dict[str, Any]) -> None:
    event = renewing["request"]["ruleEvent"]
    assert base64.b64decode(event["payload"]).decode() == renewing["request"]["payload"]
    message = parse_renewal_event(event, vectors.THING_PREFIX)
    assert (message.thing_name, message.dsn, message.principal, message.is_confirm) == (
        renewing["thingName"],
        renewing["dsn"],
        renewing["currentCertificateId"],
        False,
    )
    checked = crypto.load_device_csr(message.csr_pem)
    assert checked.public_key_der.hex() == renewing["renewalKey"]["publicSpkiDerHex"]
    assert checked.key_algorithm == "EC_prime256v1"
    # the device connected with the certificate gatt-exchange.json provisioned
    assert (
        renewing["currentCertificateId"]
        == load("gatt-exchange.json")["provisioned"]["certificateId"]
    )


def test_the_devices_csr_has_the_vectors_shape(renewing: dict[str, Any]) -> None:
    _key, csr_pem = renewal.new_key_and_csr(renewing["dsn"])
    ours = x509.load_pem_x509_csr(csr_pem.encode())
    vector = x509.load_pem_x509_csr(json.loads(renewing["request"]["payload"])["csr"].encode())
    assert ours.subject == vector.subject
    assert list(ours.extensions) == list(vector.extensions) == []
    assert vector.is_signature_valid
    assert json.loads(renewing["request"]["payload"]).keys() == {"csr"}


def test_the_service_answers_as_the_vector_and_the_device_accepts_it(
    renewing: dict[str, Any],
) -> None:
    answer = json.loads(renewing["accepted"]["payload"])
    facts = crypto.certificate_facts(answer["certificatePem"])
    result = RenewalResult(
        answer["certificatePem"],
        facts.iot_certificate_id,
        answer["notAfter"],
        answer["certificateChainPem"],
    )
    assert result.to_message() == answer
    checked = check_renewal(renewing, renewing["accepted"]["payload"].encode())
    assert checked.certificate_id == answer["certificateId"]
    assert checked.intermediates == (issuing_ca(),)  # what the device stores as chain.pem
    assert json.loads(renewing["confirm"]["payload"]) == {"certificateId": checked.certificate_id}
    # an answer for another key (the old one) is not this request's
    wrapping = load("key-wrapping.json")
    old_key = serialization.load_pem_private_key(wrapping["plaintextPem"].encode(), None)
    assert isinstance(old_key, ec.EllipticCurvePrivateKey)
    with pytest.raises(trust.TrustError) as refused:
        check_renewal(renewing, renewing["accepted"]["payload"].encode(), old_key)
    assert refused.value.reason is trust.Refusal.KEY_MISMATCH
    # an answer without its chain has no path to the pinned root
    with pytest.raises(trust.TrustError) as unchained:
        check_renewal(renewing, without_chain(renewing["accepted"]["payload"]))
    assert unchained.value.reason is trust.Refusal.UNTRUSTED


def test_the_rejection_and_the_confirm_read_as_documented(renewing: dict[str, Any]) -> None:
    rejected = json.loads(renewing["rejectedExample"]["payload"])
    assert rejected == rejection(rejected["code"], rejected["msg"], rejected["retryAfterSeconds"])
    raw = renewing["rejectedExample"]["payload"].encode()
    assert renewal._rejected_code(raw) == "RENEWAL_TOO_SOON"
    assert renewal._retry_after(raw, cap=86400) == rejected["retryAfterSeconds"]
    confirm = dict(renewing["request"]["ruleEvent"])
    confirm["payload"] = base64.b64encode(renewing["confirm"]["payload"].encode()).decode()
    message = parse_renewal_event(confirm, vectors.THING_PREFIX)
    assert message.is_confirm
    assert message.certificate_id == json.loads(renewing["accepted"]["payload"])["certificateId"]


def test_the_traces_status_values_decode_as_their_meaning_says(exchange: dict[str, Any]) -> None:
    for step in exchange["steps"]:
        if step["characteristic"] == "STATUS":
            report = protocol.StatusReport.decode(bytes.fromhex(step["valueHex"]))
            assert step["meaning"].startswith(f"STATUS {report.status.name}: {report.received} ")
            assert not report.status.is_error


def test_the_device_refuses_and_tolerates_as_the_error_cases_say(tmp_path: Path) -> None:
    wrapping, exchange = load("key-wrapping.json"), load("gatt-exchange.json")
    cases = load("gatt-errors.json")["cases"]
    assert len(cases) >= 5
    for number, case in enumerate(cases):
        notified: list[str] = []

        def on_status(report: protocol.StatusReport, seen: list[str] = notified) -> None:
            seen.append(report.encode().hex())

        session = gatt.ProvisioningSession(
            exchange["firmware"]["dsn"],
            pinned_ca(),
            tmp_path / str(number),
            on_status,
            private_key=device_key(wrapping),
            thing_prefix=exchange["firmware"]["thingPrefix"],
        )
        handlers = {"CONTROL": session.write_control, "DATA": session.write_data}
        expected: list[str] = []
        for step in case["steps"]:
            if step["operation"] == "notify":
                expected.append(step["valueHex"])
                assert step["valueHex"][:2] == step["status"]
                continue
            refused = None
            try:
                handlers[step["characteristic"]](bytes.fromhex(step["valueHex"]), "phone")
            except ProtocolError as exc:
                refused = f"{exc.status:02x}"
            assert refused == step["attErrorHex"], case["case"]
            assert session.status.encode().hex() == step["statusReadHex"], case["case"]
        assert notified == expected, case["case"]
        assert session.credentials is None


def test_the_protocol_doc_quotes_the_trace_as_it_is(exchange: dict[str, Any]) -> None:
    doc = (VECTORS.parent / "ble-protocol.md").read_text(encoding="utf-8")
    crc = exchange["payloadCrc32Hex"]
    little_endian = bytes.fromhex(crc)[::-1].hex()
    assert f"`payloadCrc32Hex` as the number (`{crc}` for the trace)" in doc
    assert f"little-endian (`{little_endian}`)" in doc
    for name in vectors.build():
        assert f"`{name}`" in doc, name
