"""Device-side handling of the provisioning answer: decrypt, verify, store, load.

The private key is held only in memory and in `private_key.pem` (0600) inside the per-device
state directory (0700); it is never logged and never part of an exception message.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from onboarding_ble import rules
from onboarding_ble.protocol import ProtocolError, Status

CERT_FILE = "certificate.pem"
KEY_FILE = "private_key.pem"
META_FILE = "device.json"


@dataclass(frozen=True)
class Credentials:
    """What the device keeps after provisioning (paths, not key bytes)."""

    directory: Path
    thing_name: str
    certificate_id: str
    iot_endpoint: str
    not_after: str

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE


@dataclass(frozen=True)
class Answer:
    """A verified provisioning answer, ready to store."""

    certificate: x509.Certificate
    private_key_pem: bytes
    thing_name: str
    certificate_id: str
    iot_endpoint: str


def fernet_key(device_private: X25519PrivateKey, server_public: bytes) -> bytes:
    """Key of the `fernet-x25519` scheme: urlsafe base64 of the X25519 shared secret."""
    shared = device_private.exchange(X25519PublicKey.from_public_bytes(server_public))
    return base64.urlsafe_b64encode(shared)


FERNET_X25519, HKDF_AES_GCM = rules.FERNET_X25519, rules.HKDF_AES_GCM
SCHEMES = rules.ENCRYPTION_SCHEMES


def decrypt_private_key(
    scheme: str, device_private: X25519PrivateKey, server_public: bytes, token: bytes, dsn: str
) -> bytes:
    """The PEM private key from `encryptedPrivateKey`, by the answer's `encryption` scheme.

    fernet-x25519: Fernet(urlsafe_b64(X25519 secret)) (the original sample's devices).
    x25519-hkdf-sha256-aes256gcm: AES-256-GCM under HKDF-SHA256(secret, info = label ||
    server public || device public || DSN); token = base64(nonce(12) || ciphertext+tag), AAD =
    DSN. Raises InvalidToken / InvalidTag / ValueError when it does not open.
    """
    if scheme == FERNET_X25519:
        return Fernet(fernet_key(device_private, server_public)).decrypt(token)
    shared = device_private.exchange(X25519PublicKey.from_public_bytes(server_public))
    device_public = device_private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    info = rules.HKDF_LABEL + server_public + device_public + dsn.encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    raw = base64.b64decode(token, validate=True)
    return AESGCM(key).decrypt(raw[:12], raw[12:], dsn.encode())


def load_ca(pem: bytes) -> list[x509.Certificate]:
    cas = x509.load_pem_x509_certificates(pem)
    if not cas:
        raise ValueError("no certificate in the pinned CA file")
    return cas


def chains_to(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    """Whether `cert` is directly issued (name and signature) by one of the pinned CAs."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def public_keys_match(cert: x509.Certificate, private_key: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(
        cert.public_key().public_bytes(enc, fmt) == private_key.public_key().public_bytes(enc, fmt)
    )


def _valid_now(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def verify_answer(
    payload: bytes,
    device_private: X25519PrivateKey,
    dsn: str,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
) -> Answer:
    """Check a provisioning answer end to end; raise ProtocolError with the status to report."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        body = json.loads(payload)
        cert_pem = body["certificatePem"].encode("ascii")
        token = body["encryptedPrivateKey"].encode("ascii")
        server_public = base64.b64decode(body["publicKey"], validate=True)
        thing_name = str(body.get("thingName") or "")
        certificate_id = str(body.get("certificateId") or "")
        iot_endpoint = str(body.get("iotEndpoint") or "")
        scheme = body.get("encryption", rules.ENCRYPTION_SCHEMES[0])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(Status.ERR_FORMAT, "answer is not a provisioning response") from exc
    if scheme not in SCHEMES:
        raise ProtocolError(Status.ERR_FORMAT, f"unsupported encryption {str(scheme)[:40]!r}")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ProtocolError(Status.ERR_FORMAT, "certificatePem is not a certificate") from exc
    if thing_name and thing_name != dsn and not thing_name.endswith("_" + dsn):
        raise ProtocolError(Status.ERR_DSN_MISMATCH, "thing name is not for this DSN")
    if not chains_to(cert, cas):
        raise ProtocolError(Status.ERR_UNTRUSTED_CA, "certificate is not issued by the pinned CA")
    if not _valid_now(cert, now):
        raise ProtocolError(Status.ERR_CERT_EXPIRED, "certificate is not valid now")
    try:
        key_pem = decrypt_private_key(scheme, device_private, server_public, token, dsn)
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (InvalidToken, InvalidTag, ValueError, TypeError) as exc:
        # No detail from the exception: it may quote key material.
        raise ProtocolError(Status.ERR_DECRYPT, "private key does not decrypt") from exc
    if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ProtocolError(Status.ERR_DECRYPT, "unsupported private key type")
    if not public_keys_match(cert, private_key):
        raise ProtocolError(Status.ERR_KEY_MISMATCH, "private key does not match the certificate")
    if not certificate_id:
        certificate_id = certificate_id_of(cert)
    return Answer(
        certificate=cert,
        private_key_pem=private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        thing_name=thing_name or dsn,
        certificate_id=certificate_id,
        iot_endpoint=iot_endpoint,
    )


def certificate_id_of(cert: x509.Certificate) -> str:
    """The IoT certificate id: lowercase hex SHA-256 of the DER certificate."""
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def _write_private(directory: Path, name: str, data: bytes) -> None:
    """Write `name` atomically with mode 0600 (created so, never widened)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_state_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)


def store(directory: Path, answer: Answer) -> Credentials:
    """Key, then certificate, then device.json last: device.json marks a complete store."""
    ensure_state_dir(directory)
    (directory / META_FILE).unlink(missing_ok=True)
    _write_private(directory, KEY_FILE, answer.private_key_pem)
    _write_private(
        directory, CERT_FILE, answer.certificate.public_bytes(serialization.Encoding.PEM)
    )
    meta = {
        "thingName": answer.thing_name,
        "certificateId": answer.certificate_id,
        "iotEndpoint": answer.iot_endpoint,
        "notAfter": answer.certificate.not_valid_after_utc.isoformat(),
    }
    _write_private(directory, META_FILE, json.dumps(meta, indent=2).encode("utf-8"))
    return Credentials(
        directory, answer.thing_name, answer.certificate_id, answer.iot_endpoint, meta["notAfter"]
    )


def load_valid(
    directory: Path, cas: list[x509.Certificate], now: dt.datetime | None = None
) -> Credentials | None:
    """Stored credentials if complete, matching, chained to the pinned CA and in date."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        cert = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return None
    if not (chains_to(cert, cas) and _valid_now(cert, now) and public_keys_match(cert, key)):
        return None
    return Credentials(
        directory,
        str(meta["thingName"]),
        str(meta["certificateId"]),
        str(meta.get("iotEndpoint", "")),
        str(meta.get("notAfter", "")),
    )
