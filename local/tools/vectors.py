"""Test vectors for firmware teams: ``docs/test-vectors/*.json``, derived from fixed inputs.

    PYTHONPATH=local:example:provisioning_lambda:. python -m tools.vectors [--out DIR] [--check]

Every value is computed by the code that runs the product: the provisioning function's
(``provisioning/domain/crypto.py``: ``seal_private_key``; ``attestation.py``: ``message``;
``models.py``: ``ProvisionResult``; ``usecases/renew.py``: the renewal answers) and the example
device's and app's (``example/onboarding_ble``: the GATT session, DEVICE_INFO_V2, the renewal
topics and CSR). Randomness is the only input fixed here: the X25519 keys (RFC 7748 section 6.1's,
so an engineer can check the agreement against the RFC first), the key the service makes for the
device, the nonce, Fernet's IV and timestamp, the challenge, the attestation and renewal keys, and
a stand-in for the product's two-level AWS Private CA: a root (the CA the device pins) that signs
only an issuing CA (SubordinateCACertificate_PathLen0/V1), which signs the device certificates with
the profile ACM PCA issues (EndEntityClientAuthCertificate/V1); all valid for decades, so the
vectors keep verifying. The answers carry ``certificateChainPem`` (the issuing CA, then the root)
as the service's do. ECDSA signatures use RFC 6979 (deterministic), so the files are the same on
every run; ``tests/unit/test_vectors.py`` checks that they are, and that the device, the app
and the service each reproduce or accept them.

The intermediates a C engineer debugs with (shared secret, HKDF PRK, Fernet's keys, ...) come
from the standard primitives, and the test holds them to what the product's code produced.
Fernet takes no IV from its caller, so its token is assembled here by the Fernet specification
(version, timestamp, IV, AES-128-CBC, HMAC-SHA256); the device's Fernet opens it, and the
service's own Fernet token under the same keys opens with the same key (the test checks both).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onboarding_ble import credentials, gatt, protocol, renewal, rules
from onboarding_ble.protocol import Status
from provisioning.domain import attestation, crypto
from provisioning.domain.models import ProvisionResult
from provisioning.lifecycle.lease import iso
from provisioning.usecases.renew import RenewalResult, answer_topic, rejection

DEFAULT_OUT = Path("docs/test-vectors")

# --- the fixed inputs -------------------------------------------------------------------------

DSN = "SN-0001"
THING_PREFIX = "device"
THING = rules.thing_name(THING_PREFIX, DSN)
IOT_ENDPOINT = "example-ats.iot.eu-west-1.amazonaws.com"  # the answer's; the device ignores it
# RFC 7748 section 6.1: Alice's key is the device's, Bob's the server's ephemeral key.
DEVICE_X25519 = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
SERVER_X25519 = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
GCM_NONCE = bytes(range(0x20, 0x2C))
FERNET_IV = bytes(range(0x10, 0x20))
FERNET_TIME = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
CHALLENGE = bytes(range(0xA0, 0xC0))  # as in docs/ble-protocol.md 3.1.2's worked example
MTU = protocol.PREFERRED_MTU
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
RENEWED_NOT_BEFORE = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
ROOT_CA_NAME = "Test Vector Root CA"
ISSUING_CA_NAME = "Test Vector Issuing CA"
CA_SERIAL, DEVICE_SERIAL, RENEWED_SERIAL = 0x7E57_0001, 0x7E57_0002, 0x7E57_0003
ISSUING_CA_SERIAL = 0x7E57_0004
RETRY_AFTER = 3600  # the rejection example's retryAfterSeconds


def p256_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A fixed EC P-256 key: the scalar is SHA-256 of ``label`` (below the group order)."""
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")
    return ec.derive_private_key(scalar, ec.SECP256R1())


DEVICE_KEY_LABEL = "iot-device-onboarding test vectors: device key"
ATTESTATION_KEY_LABEL = "iot-device-onboarding test vectors: attestation key"
RENEWAL_KEY_LABEL = "iot-device-onboarding test vectors: renewal key"
CA_KEY_LABEL = "iot-device-onboarding test vectors: CA key"  # the root's
ISSUING_CA_KEY_LABEL = "iot-device-onboarding test vectors: issuing CA key"


def device_x25519() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(DEVICE_X25519)


def server_x25519() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(SERVER_X25519)


# --- encodings --------------------------------------------------------------------------------


def raw_public(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def pkcs8_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scalar_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return f"{key.private_numbers().private_value:064x}"


def deterministic_ecdsa(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


# --- the stand-in CAs (ACM PCA's part) --------------------------------------------------------

Authority = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ca() -> Authority:
    """The root CA, the one the device pins: self-signed, the extensions AWS Private CA gives a
    root (CA:TRUE with no path length). It signs only the issuing CA."""
    key = p256_key(CA_KEY_LABEL)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(CA_SERIAL)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return key, certificate


def issuing_ca() -> Authority:
    """The issuing CA, signed by the root as ACM PCA signs with
    SubordinateCACertificate_PathLen0/V1 (critical CA:TRUE pathlen:0; critical key usage
    digitalSignature, keyCertSign, cRLSign; AKI from the root's key, SKI from its own)."""
    root_key, root = ca()
    key = p256_key(ISSUING_CA_KEY_LABEL)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUING_CA_NAME)]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(ISSUING_CA_SERIAL)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(root_key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return key, certificate


def chain_pem() -> str:
    """``certificateChainPem`` as ACM PCA's GetCertificate answers it for a device certificate:
    the issuing CA's certificate, then the root's."""
    return pem(issuing_ca()[1]) + pem(ca()[1])


def issue(
    authority: Authority,
    subject: ec.EllipticCurvePublicKey,
    serial: int,
    not_before: dt.datetime,
) -> x509.Certificate:
    """A device certificate as ACM PCA issues it for the service (EndEntityClientAuthCertificate/V1
    with the service's APIPassthrough names: CN = the thing name, SAN URI = the DSN)."""
    ca_key, ca_certificate = authority
    names = crypto.device_names(THING, DSN)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(subject)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject), False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(names.san_uri)]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    )


# --- the vectors ------------------------------------------------------------------------------


def ca_vector() -> dict[str, Any]:
    root_key, root = ca()
    issuing_key, issuing = issuing_ca()
    return {
        "description": (
            "The root CA the device pins in firmware for every other vector: a stand-in for the "
            "deployment's AWS Private CA root (EC P-256, self-signed, CA:TRUE with no path "
            "length). Load certificatePem as the only trust anchor. The root signs only the "
            "issuing CA (issuingCa: CA:TRUE pathlen:0, as ACM PCA's "
            "SubordinateCACertificate_PathLen0/V1 makes it), and the issuing CA signs the device "
            "certificates of gatt-exchange.json and renewal.json. Never pin the issuing CA: the "
            "answers carry it in certificateChainPem (issuingCa's certificatePem, then this "
            "certificatePem), the device validates the path certificate -> issuing CA -> this "
            "root and stores the issuing CA beside its certificate (chain.pem). All are valid "
            "from 2026-01-01 to 2099-12-31, so the vectors keep verifying. The private keys are "
            "published test keys, for issuing your own test certificates: never ship them."
        ),
        "certificatePem": pem(root),
        "certificateDerSha256Hex": root.fingerprint(hashes.SHA256()).hex(),
        "privateKeyScalarHex": scalar_hex(root_key),
        "issuingCa": {
            "certificatePem": pem(issuing),
            "certificateDerSha256Hex": issuing.fingerprint(hashes.SHA256()).hex(),
            "privateKeyScalarHex": scalar_hex(issuing_key),
        },
    }


def fernet_token(key: bytes, plaintext: bytes) -> dict[str, Any]:
    """A Fernet token with the fixed IV and time, by the Fernet specification, with its parts."""
    signing_key, encryption_key = key[:16], key[16:]
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(encryption_key), modes.CBC(FERNET_IV)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    signed = b"\x80" + FERNET_TIME.to_bytes(8, "big") + FERNET_IV + ciphertext
    tag = hmac.digest(signing_key, signed, "sha256")
    return {
        "fernetKey": base64.urlsafe_b64encode(key).decode("ascii"),
        "signingKeyHex": signing_key.hex(),
        "encryptionKeyHex": encryption_key.hex(),
        "versionHex": "80",
        "timestamp": FERNET_TIME,
        "timestampHex": FERNET_TIME.to_bytes(8, "big").hex(),
        "ivHex": FERNET_IV.hex(),
        "paddedPlaintextLength": len(padded),
        "ciphertextHex": ciphertext.hex(),
        "hmacSha256Hex": tag.hex(),
        "encryptedPrivateKey": base64.urlsafe_b64encode(signed + tag).decode("ascii"),
    }


def key_wrapping_vector() -> dict[str, Any]:
    device, server = device_x25519(), server_x25519()
    device_public, server_public = raw_public(device), raw_public(server)
    shared = server.exchange(device.public_key())
    issued_key = p256_key(DEVICE_KEY_LABEL)
    plaintext = pkcs8_pem(issued_key)

    sealed_gcm = crypto.seal_private_key(
        issued_key,
        device_public,
        crypto.HKDF_AES_GCM,
        DSN,
        server_key=server,
        nonce=GCM_NONCE,
    )
    raw = base64.b64decode(sealed_gcm.encrypted_private_key)
    nonce, ciphertext, tag = raw[:12], raw[12:-16], raw[-16:]
    info = crypto.HKDF_LABEL + server_public + device_public + DSN.encode("ascii")
    prk = hmac.digest(bytes(32), shared, "sha256")  # HKDF-Extract, salt absent = 32 zero bytes
    okm = hmac.digest(prk, info + b"\x01", "sha256")  # HKDF-Expand, one block (L = 32)

    return {
        "description": (
            "The device's X25519 key pair (DEVICE_INFO_V2), the service's ephemeral X25519 key "
            "(the answer's publicKey; a fresh one per answer in the service, fixed here), and "
            "the private key the service made for the device (PKCS#8 PEM) sealed in each "
            "scheme. X25519 keys are raw RFC 7748 bytes (little-endian u-coordinate and scalar); "
            "these are RFC 7748 section 6.1's keys, so sharedSecretHex is its shared secret. "
            "Decrypt encryptedPrivateKey with the device private key and compare with "
            "plaintextPem byte for byte; every intermediate is given to find the step that differs."
        ),
        "dsn": DSN,
        "dsnHex": DSN.encode("ascii").hex(),
        "device": {
            "x25519PrivateHex": DEVICE_X25519.hex(),
            "x25519PublicHex": device_public.hex(),
        },
        "server": {
            "x25519PrivateHex": SERVER_X25519.hex(),
            "x25519PublicHex": server_public.hex(),
            "publicKey": b64(server_public),
        },
        "sharedSecretHex": shared.hex(),
        "plaintextPem": plaintext.decode("ascii"),
        "plaintextLength": len(plaintext),
        "plaintextSha256Hex": hashlib.sha256(plaintext).hexdigest(),
        crypto.FERNET_X25519: {
            "description": (
                "encryption = fernet-x25519 (the API's default): Fernet key = base64url(shared "
                "secret), i.e. signing key = secret[0:16], encryption key = secret[16:32]. Token "
                "= base64url(0x80 || timestamp u64 big-endian || IV (16) || AES-128-CBC(PKCS7 "
                "padded PEM) || HMAC-SHA256(signing key, everything before it)), with '=' "
                "padding. The service's Fernet picks its own IV and the current time, so its "
                "tokens differ from this one; they open with the same key."
            ),
            **fernet_token(shared, plaintext),
        },
        crypto.HKDF_AES_GCM: {
            "description": (
                "encryption = x25519-hkdf-sha256-aes256gcm: key = HKDF-SHA256(IKM = shared "
                "secret, salt absent (RFC 5869: 32 zero bytes), info = label || server public || "
                "device public || DSN, L = 32); encryptedPrivateKey = standard base64(nonce (12) "
                "|| AES-256-GCM ciphertext || tag (16)), associated data = the DSN (ASCII). This "
                "token is exactly what the service's seal_private_key answers with this server "
                "key and nonce."
            ),
            "hkdf": {
                "hash": "SHA-256",
                "ikmHex": shared.hex(),
                "saltHex": "",
                "extractSaltHex": bytes(32).hex(),
                "labelAscii": crypto.HKDF_LABEL.decode("ascii"),
                "labelHex": crypto.HKDF_LABEL.hex(),
                "infoHex": info.hex(),
                "infoLength": len(info),
                "prkHex": prk.hex(),
                "length": 32,
                "keyHex": okm.hex(),
            },
            "nonceHex": nonce.hex(),
            "aadHex": DSN.encode("ascii").hex(),
            "ciphertextHex": ciphertext.hex(),
            "tagHex": tag.hex(),
            "encryptedPrivateKey": sealed_gcm.encrypted_private_key,
        },
    }


def attestation_vector() -> dict[str, Any]:
    key = p256_key(ATTESTATION_KEY_LABEL)
    certified = spki(device_x25519().public_key())
    message = attestation.message(DSN, CHALLENGE, certified)
    signature = deterministic_ecdsa(key, message)
    r, s = decode_dss_signature(signature)
    public = key.public_key()
    prefix = attestation.MESSAGE_PREFIX
    return {
        "description": (
            "DEVICE_ATTESTATION (docs/ble-protocol.md 3.1.2): the device's factory key signs, "
            "with ECDSA P-256 over SHA-256, the message prefix || DSN || 0x00 || the 32-byte "
            "challenge the app wrote to ATTESTATION_CHALLENGE || the SPKI DER of the key to "
            "certify (here the device's X25519 key of key-wrapping.json). DEVICE_ATTESTATION "
            "is the DER signature; the app sends it as attestation (standard base64). ECDSA is "
            "randomised: this signature is RFC 6979's (deterministic) one; a device may send "
            "any valid signature, and the service (and any test harness) must accept any "
            "signature that verifies, never compare signature bytes. Compare messageHex byte "
            "for byte, then check that your signature verifies with publicKeyPem."
        ),
        "dsn": DSN,
        "challengeHex": CHALLENGE.hex(),
        "attestationChallenge": b64(CHALLENGE),
        "certifiedKeySpkiDerHex": certified.hex(),
        "messageParts": [
            {"name": "prefix", "hex": prefix.hex(), "ascii": prefix[:-1].decode() + "\\0"},
            {"name": "dsn", "hex": DSN.encode("ascii").hex(), "ascii": DSN},
            {"name": "separator", "hex": "00"},
            {"name": "challenge", "hex": CHALLENGE.hex()},
            {"name": "certifiedKeySpkiDer", "hex": certified.hex()},
        ],
        "messageHex": message.hex(),
        "messageLength": len(message),
        "messageSha256Hex": hashlib.sha256(message).hexdigest(),
        "attestationKey": {
            "privateScalarHex": scalar_hex(key),
            "publicUncompressedHex": public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ).hex(),
            "publicSpkiDerHex": spki(public).hex(),
            "publicKeyPem": attestation.public_key_pem(spki(public)),
        },
        "signature": {
            "algorithm": "ECDSA P-256 with SHA-256, DER (RFC 3279 Ecdsa-Sig-Value)",
            "nonce": "RFC 6979 (deterministic); any valid signature is accepted",
            "derHex": signature.hex(),
            "rHex": f"{r:064x}",
            "sHex": f"{s:064x}",
            "attestation": b64(signature),
        },
    }


def device_session(state_dir: Path) -> gatt.ProvisioningSession:
    """The example device's GATT session, on the fixed keys, with its firmware configuration
    (the root pinned)."""
    _, ca_certificate = ca()
    return gatt.ProvisioningSession(
        DSN,
        [ca_certificate],
        state_dir,
        private_key=device_x25519(),
        thing_prefix=THING_PREFIX,
        attestation_key=p256_key(ATTESTATION_KEY_LABEL),
    )


def device_info_vector() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        session = device_session(Path(state))
        value, value_v1 = session.device_info_v2(), session.device_info()
    info = protocol.DeviceInfo.decode(value)
    n = len(DSN)
    fields = [
        (0, 1, "version", value[0]),
        (1, 1, "keyType", value[1]),
        (2, 32, "x25519PublicKey", value[2:34].hex()),
        (34, 1, "dsnLength", value[34]),
        (35, n, "dsn", DSN),
        (35 + n, 1, "schemes", value[35 + n]),
    ]
    return {
        "description": (
            "DEVICE_INFO_V2's value as the example device serves it (docs/ble-protocol.md "
            "3.1): version 2, key type 1 (X25519), the device's X25519 public key of "
            "key-wrapping.json, the DSN, and the schemes bit mask (0x01 fernet-x25519 | 0x02 "
            "x25519-hkdf-sha256-aes256gcm: a device whose firmware minimum is fernet-x25519). "
            "Single bytes, no multi-byte integers. Serve valueHex byte for byte; "
            "deviceInfoV1Hex is DEVICE_INFO (version 1) for the same device."
        ),
        "characteristicUuid": protocol.DEVICE_INFO_V2_UUID,
        "valueHex": value.hex(),
        "length": len(value),
        "fields": [
            {"offset": offset, "size": size, "name": name, "value": field_value}
            for offset, size, name, field_value in fields
        ],
        "decoded": {
            "version": info.version,
            "keyType": info.key_type,
            "publicKeyHex": info.public_key.hex(),
            "dsn": info.dsn,
            "schemes": list(info.schemes or ()),
        },
        "deviceInfoV1Uuid": protocol.DEVICE_INFO_UUID,
        "deviceInfoV1Hex": value_v1.hex(),
    }


def provisioning_answer() -> dict[str, str]:
    """POST /certificate's 200 body for the fixed device (x25519-hkdf-sha256-aes256gcm)."""
    issued_key = p256_key(DEVICE_KEY_LABEL)
    certificate = issue(issuing_ca(), issued_key.public_key(), DEVICE_SERIAL, NOT_BEFORE)
    certificate_pem = pem(certificate)
    facts = crypto.certificate_facts(certificate_pem)
    sealed = crypto.seal_private_key(
        issued_key,
        raw_public(device_x25519()),
        crypto.HKDF_AES_GCM,
        DSN,
        server_key=server_x25519(),
        nonce=GCM_NONCE,
    )
    result = ProvisionResult(
        certificate_pem=certificate_pem,
        encrypted_private_key=sealed.encrypted_private_key,
        server_public_key=b64(sealed.server_public_key),
        thing_name=THING,
        certificate_id=facts.iot_certificate_id,
        not_after=iso(facts.not_after),
        iot_endpoint=IOT_ENDPOINT,
        encryption=crypto.HKDF_AES_GCM,
        certificate_chain_pem=chain_pem(),
    )
    return result.to_response()


def _step(
    number: int, actor: str, operation: str, uuid: str, value: bytes, meaning: str
) -> dict[str, Any]:
    """One line of the trace; a write's ``statusReadHex`` is what STATUS reads after it."""
    names = {
        protocol.DEVICE_INFO_V2_UUID: "DEVICE_INFO_V2",
        protocol.ATTESTATION_CHALLENGE_UUID: "ATTESTATION_CHALLENGE",
        protocol.DEVICE_ATTESTATION_UUID: "DEVICE_ATTESTATION",
        protocol.CONTROL_UUID: "CONTROL",
        protocol.DATA_UUID: "DATA",
        protocol.STATUS_UUID: "STATUS",
    }
    return {
        "step": number,
        "from": actor,
        "operation": operation,
        "characteristic": names[uuid],
        "uuid": uuid,
        "valueHex": value.hex(),
        "meaning": meaning,
    }


class _Trace:
    """The exchange as it happens at the device: each read, write and notification, in order."""

    def __init__(self, session: gatt.ProvisioningSession) -> None:
        self.session = session
        self.steps: list[dict[str, Any]] = []
        self._notified: list[protocol.StatusReport] = []
        session.on_status = self._notified.append
        self.link = object()  # the app's one connection

    def _add(self, actor: str, operation: str, uuid: str, value: bytes, meaning: str) -> None:
        self.steps.append(_step(len(self.steps) + 1, actor, operation, uuid, value, meaning))

    def read(self, uuid: str, value: bytes, meaning: str) -> None:
        self._add("device", "read", uuid, value, meaning)

    def write(
        self,
        uuid: str,
        value: bytes,
        meaning: str,
        handler: Callable[[bytes, object], None],
        *,
        refusal_expected: bool = False,
    ) -> None:
        """The app's write, handled by the device, then what the device notified. A refused
        write's ``attErrorHex`` is the ATT application error of its Write Response."""
        refused: Status | None = None
        try:
            handler(value, self.link)
        except protocol.ProtocolError as exc:
            if not refusal_expected:
                raise
            refused = exc.status
        self._add("app", "write", uuid, value, meaning)
        self.steps[-1]["attErrorHex"] = None if refused is None else f"{refused:02x}"
        self.steps[-1]["statusReadHex"] = self.session.status.encode().hex()
        for report in self._notified:
            detail = f", detail {report.detail!r}" if report.detail else ""
            self._add(
                "device",
                "notify",
                protocol.STATUS_UUID,
                report.encode(),
                f"STATUS {report.status.name}: {report.received} bytes received{detail}",
            )
            self.steps[-1]["status"] = f"{report.status:02x}"
        self._notified.clear()


def gatt_vector() -> dict[str, Any]:
    """The whole exchange, played against the device's session: what it notifies is recorded."""
    body = provisioning_answer()
    payload = json.dumps(body).encode()  # as the app relays it (provisioning_app.provision)
    crc = protocol.crc32(payload)
    begin = protocol.encode_begin(payload)
    signature = bytes.fromhex(attestation_vector()["signature"]["derHex"])
    with tempfile.TemporaryDirectory() as state:
        session = device_session(Path(state))
        trace = _Trace(session)
        trace.read(
            protocol.DEVICE_INFO_V2_UUID,
            session.device_info_v2(),
            "the app reads DEVICE_INFO_V2 (device-info-v2.json): DSN, X25519 key, schemes",
        )
        trace.write(
            protocol.ATTESTATION_CHALLENGE_UUID,
            CHALLENGE,
            "the challenge POST /certificate/challenge gave the app (attestation.json)",
            session.write_challenge,
        )
        trace.read(
            protocol.DEVICE_ATTESTATION_UUID,
            signature,
            "the DER signature over attestation.json's message; ECDSA is randomised, so any "
            "valid signature (this one is RFC 6979's). Then the app calls POST /certificate "
            "(api.certificateRequest) and relays the answer",
        )
        trace.write(
            protocol.CONTROL_UUID,
            begin,
            f"BEGIN: opcode 0x01, version 1, total length {len(payload)} (u32 LE), CRC-32 "
            f"0x{crc:08x} (u32 LE)",
            session.write_control,
        )
        for chunk in protocol.split_chunks(payload, MTU):
            seq = int.from_bytes(chunk[:2], "little")
            trace.write(
                protocol.DATA_UUID,
                chunk,
                f"DATA seq {seq} (u16 LE), {len(chunk) - 2} payload bytes; STATUS is not "
                "notified, a read gives statusReadHex",
                session.write_data,
            )
        trace.write(
            protocol.CONTROL_UUID,
            protocol.encode_commit(),
            "COMMIT: the device checks length, CRC-32, then the answer (section 1.1, the path "
            "to the pinned root through certificateChainPem's issuing CA), stores it",
            session.write_control,
        )
        steps = trace.steps
        if session.credentials is None:
            raise RuntimeError("the example device refused the vectors' answer")
        stored_chain = credentials.stored_chain(session.credentials.directory).decode("ascii")
    return {
        "description": (
            "A whole provisioning exchange over the onboarding GATT service at ATT MTU "
            f"{MTU} (DATA chunks of {protocol.chunk_size_for_mtu(MTU)} bytes), in order, as "
            "the example device answered it: reads, writes (ATT Write Requests, with response) "
            "and STATUS notifications. The payload is the API's 200 body (answer), "
            "x25519-hkdf-sha256-aes256gcm, sealed to key-wrapping.json's device key; its "
            "certificate is signed by ca.json's issuing CA, which certificateChainPem carries "
            "(then the root), so its path leads to ca.json's pinned root; it names the DSN and "
            "thing, and is valid until 2099. Replay the app's writes against your device with "
            "key-wrapping.json's X25519 key, attestation.json's factory key, ca.json's root "
            "(certificatePem) pinned and thing prefix 'device': "
            "every write must succeed, and the STATUS values must equal these byte for byte. "
            "provisioned says what the device keeps: the thing and certificate id read from the "
            "certificate, and chainPem, the validated path's issuing CA (chain.pem beside "
            "certificate.pem; never the root). Integers are little-endian; CRC-32 is "
            "CRC-32/ISO-HDLC (zlib) over the whole payload."
        ),
        "mtu": MTU,
        "chunkSize": protocol.chunk_size_for_mtu(MTU),
        "serviceUuid": protocol.SERVICE_UUID,
        "firmware": {
            "dsn": DSN,
            "thingPrefix": THING_PREFIX,
            "minimumScheme": rules.FERNET_X25519,
            "pinnedCa": "ca.json",
        },
        "api": {
            "challengeRequest": {"DSN": DSN},
            "certificateRequest": {
                "DSN": DSN,
                "publicKey": b64(raw_public(device_x25519())),
                "encryption": crypto.HKDF_AES_GCM,
                "attestation": b64(signature),
                "attestationChallenge": b64(CHALLENGE),
            },
            "answer": body,
        },
        "payload": payload.decode("ascii"),
        "payloadLength": len(payload),
        "payloadCrc32Hex": f"{crc:08x}",
        "provisioned": {
            "thingName": THING,
            "certificateId": body["certificateId"],
            "chainPem": stored_chain,
        },
        "steps": steps,
    }


def gatt_errors_vector() -> dict[str, Any]:
    """Short exchanges the device refuses or tolerates, each from a fresh boot."""
    body = provisioning_answer()
    payload = json.dumps(body).encode()
    begin = protocol.encode_begin(payload)
    chunks = protocol.split_chunks(payload, MTU)
    wrong_crc = begin[:6] + (protocol.crc32(payload) ^ 1).to_bytes(4, "little")
    data, control = protocol.DATA_UUID, protocol.CONTROL_UUID
    cases: list[tuple[str, list[tuple[str, bytes, str]]]] = [
        (
            "DATA before BEGIN: refused with ERR_STATE (0x8D) in the Write Response",
            [(data, chunks[0], "DATA seq 0 with no transfer")],
        ),
        (
            "a chunk out of order: refused with ERR_SEQUENCE (0x81); the transfer is dropped",
            [(control, begin, "BEGIN"), (data, chunks[1], "DATA seq 1 where seq 0 is due")],
        ),
        (
            "a chunk sent twice (its Write Response was lost): accepted, counted once",
            [
                (control, begin, "BEGIN"),
                (data, chunks[0], "DATA seq 0"),
                (data, chunks[0], "DATA seq 0 again, the same bytes"),
            ],
        ),
        (
            "a CRC-32 that does not match: COMMIT is acknowledged, STATUS says ERR_CHECKSUM (0x80)",
            [
                (control, wrong_crc, "BEGIN announcing the CRC-32 with its lowest bit flipped"),
                *[(data, chunk, f"DATA seq {n}") for n, chunk in enumerate(chunks)],
                (control, protocol.encode_commit(), "COMMIT"),
            ],
        ),
        (
            "BEGIN of an unknown transfer version: refused with ERR_VERSION (0x8C)",
            [(control, begin[:1] + b"\x02" + begin[2:], "BEGIN, version 2")],
        ),
        (
            "the API refused the app: APP_ERROR (HTTP status u16 LE, code length, code, "
            "message); STATUS says ERR_APP (0x8A) with '<status> <code>'",
            [
                (
                    control,
                    protocol.encode_app_error(
                        409, "DEVICE_OWNED", "The device is provisioned by another account."
                    ),
                    "APP_ERROR 409 DEVICE_OWNED",
                )
            ],
        ),
    ]
    out = []
    for title, writes in cases:
        with tempfile.TemporaryDirectory() as state:
            session = device_session(Path(state))
            trace = _Trace(session)
            handlers = {data: session.write_data, control: session.write_control}
            for uuid, value, meaning in writes:
                trace.write(uuid, value, meaning, handlers[uuid], refusal_expected=True)
            out.append({"case": title, "steps": trace.steps})
    return {
        "description": (
            "What the device does with writes it must refuse or tolerate (docs/ble-protocol.md "
            "3.2-4), each case from a fresh boot with gatt-exchange.json's firmware and payload. "
            "attErrorHex is the ATT application error code of the Write Response (null: the "
            "write succeeds); status is the code a STATUS notification carries. Compare those "
            "two. On an error the example reports 0 bytes received and a detail in its own "
            "words, which firmware need not copy, except ERR_APP's '<HTTP status> <code>'."
        ),
        "cases": out,
    }


def renewal_vector() -> dict[str, Any]:
    authority = issuing_ca()
    old = issue(authority, p256_key(DEVICE_KEY_LABEL).public_key(), DEVICE_SERIAL, NOT_BEFORE)
    old_id = crypto.certificate_facts(pem(old)).iot_certificate_id
    key = p256_key(RENEWAL_KEY_LABEL)
    # The device's CSR (renewal.new_key_and_csr's shape: subject CN = the DSN, a hint), signed
    # with RFC 6979 so that it is the same on every run.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DSN)]))
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
        .public_bytes(serialization.Encoding.PEM)
        .decode("ascii")
    )
    request = {"csr": csr}
    request_payload = json.dumps(request)
    renewed = issue(authority, key.public_key(), RENEWED_SERIAL, RENEWED_NOT_BEFORE)
    facts = crypto.certificate_facts(pem(renewed))
    accepted = RenewalResult(
        pem(renewed), facts.iot_certificate_id, iso(facts.not_after), chain_pem()
    )
    accepted_payload = json.dumps(accepted.to_message())
    rejected = rejection(
        "RENEWAL_TOO_SOON",
        f"The device's certificate is 60 s old; renew again in {RETRY_AFTER} s.",
        RETRY_AFTER,
    )
    confirm = {"certificateId": facts.iot_certificate_id}
    topics = renewal.Topics(THING)
    return {
        "description": (
            "Renewal over MQTT (docs/ble-protocol.md 6.1), by the device provisioned in "
            "gatt-exchange.json (connected with that certificate, id currentCertificateId): "
            "it makes a new EC P-256 key, publishes a CSR for it, and gets the new certificate "
            "(signed by ca.json's issuing CA, with certificateChainPem: the issuing CA, then the "
            "root; naming the same DSN and thing) on renew/accepted, or a "
            "refusal on renew/rejected; once connected with the new certificate it publishes "
            "renew/confirm. Payloads are UTF-8 JSON, as published (payload strings). The CSR's "
            "ECDSA signature is RFC 6979's; any valid one is accepted. ruleEvent is what the "
            "IoT topic rule hands the renewal function (payload in base64, principal = the id "
            "of the certificate the device is connected with): for cloud-side tests."
        ),
        "thingName": THING,
        "dsn": DSN,
        "currentCertificateId": old_id,
        "renewalKey": {
            "privateScalarHex": scalar_hex(key),
            "privateKeyPem": pkcs8_pem(key).decode("ascii"),
            "publicSpkiDerHex": spki(key.public_key()).hex(),
        },
        "request": {
            "topic": topics.renew,
            "payload": request_payload,
            "ruleEvent": {
                "payload": b64(request_payload.encode()),
                "thingName": THING,
                "principal": old_id,
                "clientId": THING,
            },
        },
        "accepted": {
            "topic": answer_topic(THING, True),
            "payload": accepted_payload,
        },
        "rejectedExample": {
            "topic": answer_topic(THING, False),
            "payload": json.dumps(rejected),
            "meaning": (
                "refused: the device keeps its certificate and retries no sooner than "
                "retryAfterSeconds (and after its own backoff)"
            ),
        },
        "confirm": {
            "topic": topics.confirm,
            "payload": json.dumps(confirm),
        },
        "subscriptions": [topics.accepted, topics.rejected, topics.due],
    }


def build() -> dict[str, dict[str, Any]]:
    """File name -> content, for every file of docs/test-vectors/."""
    return {
        "ca.json": ca_vector(),
        "key-wrapping.json": key_wrapping_vector(),
        "attestation.json": attestation_vector(),
        "device-info-v2.json": device_info_vector(),
        "gatt-exchange.json": gatt_vector(),
        "gatt-errors.json": gatt_errors_vector(),
        "renewal.json": renewal_vector(),
    }


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, ensure_ascii=True) + "\n"


def stale(out: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """The files under ``out`` that differ from what ``build`` makes (or are missing)."""
    differ = []
    for name, content in files.items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(content):
            differ.append(name)
    return differ


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.vectors",
        description=(
            "Write the firmware test vectors (docs/test-vectors/*.json) from fixed inputs, "
            "with the service's and the example device's own code. Run from the repository "
            "root with PYTHONPATH=local:example:provisioning_lambda:."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"the folder to write to (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming the files that differ from what would be written",
    )
    args = parser.parse_args(argv)
    # The device's own log lines (an APP_ERROR it is fed, say) are not part of the vectors.
    device_logger = logging.getLogger("onboarding_ble")
    level = device_logger.level
    device_logger.setLevel(logging.ERROR)
    try:
        files = build()
    finally:
        device_logger.setLevel(level)
    if args.check:
        differ = stale(args.out, files)
        for name in differ:
            print(f"{args.out / name} is not what the generator makes", file=sys.stderr)
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_text(render(content), encoding="utf-8")
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
