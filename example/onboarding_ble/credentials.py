"""Device-side handling of the provisioning answer: decrypt, verify, store, load.

What the device believes about the certificate is decided by ``trust`` (client-auth path to the
pinned CA, the certificate names this DSN, the key is its key); the thing name and certificate
id come from the certificate, never from the relay's JSON. The private key is held only in
memory and in `private_key.pem` (0600) inside the per-device state directory (0700); it is
never logged, never in a repr and never part of an exception message.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from onboarding_ble import rules, trust
from onboarding_ble.protocol import MAX_PAYLOAD_LEN, ProtocolError, Status
from onboarding_ble.trust import Refusal, TrustError

CERT_FILE = "certificate.pem"
CHAIN_FILE = "chain.pem"  # the CAs between the certificate and the pinned root (the issuing CA)
# An answer is at most MAX_PAYLOAD_LEN (16 KiB): nothing stored from it is larger.
MAX_CHAIN_BYTES = MAX_PAYLOAD_LEN
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
    """A verified provisioning answer, ready to store. Its repr leaves the key out."""

    certificate: x509.Certificate
    private_key_pem: bytes = field(repr=False)
    thing_name: str
    certificate_id: str
    iot_endpoint: str
    # The validated path's CAs between the certificate and the pinned root (the issuing CA).
    intermediates: tuple[x509.Certificate, ...] = ()


def chain_of(body: dict[str, Any]) -> bytes | None:
    """An answer's ``certificateChainPem`` (the issuing CA's certificate, then up to the root),
    or None when it has none; TypeError when it is not a string."""
    chain = body.get("certificateChainPem")
    if chain is None:
        return None
    if not isinstance(chain, str):
        raise TypeError("certificateChainPem")
    return chain.encode("ascii")


def intermediates_of(trusted: trust.TrustedCertificate) -> tuple[x509.Certificate, ...]:
    """The CAs of a validated path between the certificate and the pinned CA it ends at."""
    return trusted.chain[:-1]


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
    if not rules.is_canonical_x25519(server_public):
        raise ValueError("server public key is not a canonical X25519 key")  # as the Lambda
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


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def public_keys_match(cert: x509.Certificate, private_key: Any) -> bool:
    return trust.public_keys_match(cert, private_key)


# Each refusal of ``trust`` as the status the device reports over GATT.
_STATUS_OF = {
    Refusal.MALFORMED: Status.ERR_FORMAT,
    Refusal.EXPIRED: Status.ERR_CERT_EXPIRED,
    Refusal.NOT_CLIENT_CERTIFICATE: Status.ERR_UNTRUSTED_CA,
    Refusal.UNTRUSTED: Status.ERR_UNTRUSTED_CA,
    Refusal.WRONG_DEVICE: Status.ERR_DSN_MISMATCH,
    Refusal.KEY_MISMATCH: Status.ERR_KEY_MISMATCH,
    Refusal.SCHEME: Status.ERR_FORMAT,
    Refusal.PUBLIC_KEY: Status.ERR_FORMAT,
}


def _refused(error: TrustError) -> ProtocolError:
    return ProtocolError(_STATUS_OF[error.reason], str(error))


def verify_answer(
    payload: bytes,
    device_private: X25519PrivateKey,
    dsn: str,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
    *,
    thing_prefix: str | None = None,
    minimum_scheme: str = rules.FERNET_X25519,
    iot_endpoint: str | None = None,
) -> Answer:
    """Check a provisioning answer end to end; raise ProtocolError with the status to report.

    Firmware configuration, when given, wins over the relay: ``thing_prefix`` (the fleet's
    ThingPrefix), ``minimum_scheme`` (the weakest key encryption accepted; an answer without
    ``encryption`` is fernet-x25519) and ``iot_endpoint`` (the pinned MQTT endpoint, what is
    stored: the answer's ``iotEndpoint`` is never used). ``thingName`` and
    ``certificateId`` in the answer are ignored: both are read from the certificate.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        body = json.loads(payload)
        cert_pem = body["certificatePem"].encode("ascii")
        chain_pem = chain_of(body)
        token = body["encryptedPrivateKey"].encode("ascii")
        server_public = base64.b64decode(body["publicKey"], validate=True)
        answered_scheme = body.get("encryption")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ProtocolError(Status.ERR_FORMAT, "answer is not a provisioning response") from exc
    try:
        scheme = trust.check_scheme(answered_scheme, minimum_scheme)
        trust.check_x25519_public_key(server_public)
        trust.load_certificates(cert_pem)
    except TrustError as exc:
        raise _refused(exc) from exc
    try:
        key_pem = decrypt_private_key(scheme, device_private, server_public, token, dsn)
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (InvalidToken, InvalidTag, ValueError, TypeError) as exc:
        # No detail from the exception: it may quote key material.
        raise ProtocolError(Status.ERR_DECRYPT, "private key does not decrypt") from exc
    if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ProtocolError(Status.ERR_DECRYPT, "unsupported private key type")
    return _trusted_answer(
        cert_pem, chain_pem, private_key, dsn, cas, now, thing_prefix, iot_endpoint
    )


def verify_csr_answer(
    payload: bytes,
    private_key: ec.EllipticCurvePrivateKey,
    dsn: str,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
    *,
    thing_prefix: str | None = None,
    iot_endpoint: str | None = None,
) -> Answer:
    """Check a CSR-mode answer (``certificatePem`` for the device's own key); ProtocolError
    with the status to report. The same ``trust`` checks as ``verify_answer``; an answer
    carrying a private key is refused: in CSR mode the key never comes from outside."""
    try:
        body = json.loads(payload)
        cert_pem = body["certificatePem"].encode("ascii")
        chain_pem = chain_of(body)
        has_key = "encryptedPrivateKey" in body
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ProtocolError(Status.ERR_FORMAT, "answer is not a provisioning response") from exc
    if has_key:
        raise ProtocolError(Status.ERR_FORMAT, "CSR mode: the answer must carry no key")
    return _trusted_answer(
        cert_pem, chain_pem, private_key, dsn, cas, now, thing_prefix, iot_endpoint
    )


def _trusted_answer(
    cert_pem: bytes,
    chain_pem: bytes | None,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    dsn: str,
    cas: list[x509.Certificate],
    now: dt.datetime | None,
    thing_prefix: str | None,
    iot_endpoint: str | None,
) -> Answer:
    """The trust checks on an answer's certificate (ProtocolError with the status to report),
    then what the device stores: the endpoint it was configured with, never the relay's."""
    try:
        trusted = trust.verify_device_certificate(
            cert_pem,
            _pem(cas),
            dsn,
            private_key,
            chain_pem=chain_pem,
            thing_prefix=thing_prefix,
            now=now,
        )
    except TrustError as exc:
        raise _refused(exc) from exc
    return Answer(
        certificate=trusted.certificate,
        private_key_pem=private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        thing_name=trusted.thing_name,
        certificate_id=trusted.certificate_id,
        iot_endpoint=iot_endpoint or "",
        intermediates=intermediates_of(trusted),
    )


def certificate_id_of(cert: x509.Certificate) -> str:
    """The IoT certificate id: lowercase hex SHA-256 of the DER certificate."""
    return trust.certificate_id_of(cert)


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
    """Key, certificate, its chain, then device.json last: device.json marks a complete store."""
    ensure_state_dir(directory)
    (directory / META_FILE).unlink(missing_ok=True)
    _write_private(directory, KEY_FILE, answer.private_key_pem)
    _write_private(
        directory, CERT_FILE, answer.certificate.public_bytes(serialization.Encoding.PEM)
    )
    _write_private(directory, CHAIN_FILE, _pem(list(answer.intermediates)))
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
    directory: Path,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
    *,
    dsn: str | None = None,
    thing_prefix: str | None = None,
) -> Credentials | None:
    """Stored credentials if complete, matching, a valid client certificate of the pinned CA.

    With ``dsn`` the certificate must also name this device (and the thing name is read from
    it); without, the DSN check made when the answer was stored stands.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        meta = json.loads(read_stored(directory / META_FILE).decode("utf-8"))
        cert_pem = read_stored(directory / CERT_FILE)
        cert = x509.load_pem_x509_certificate(cert_pem)
        chain_pem = stored_chain(directory)
        key = serialization.load_pem_private_key(read_stored(directory / KEY_FILE), None)
        thing_name = str(meta["thingName"])
        if dsn is None:
            intermediates = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
            trust.check_client_certificate(cert, cas, intermediates, now=now)
            if not trust.public_keys_match(cert, key):
                return None
        else:
            thing_name = trust.verify_device_certificate(
                cert_pem,
                _pem(cas),
                dsn,
                key,
                chain_pem=chain_pem or None,
                thing_prefix=thing_prefix,
                now=now,
            ).thing_name
    except (OSError, ValueError, TypeError, KeyError):  # TrustError is a ValueError
        return None
    return Credentials(
        directory,
        thing_name,
        trust.certificate_id_of(cert),
        str(meta.get("iotEndpoint", "")),
        str(meta.get("notAfter", "")),
    )


def stored_chain(directory: Path) -> bytes:
    """The stored chain (empty for credentials stored before answers carried one, or signed by
    the pinned CA itself). ValueError past MAX_CHAIN_BYTES: not a chain this device stored."""
    try:
        return read_stored(directory / CHAIN_FILE)
    except FileNotFoundError:
        return b""


def read_stored(path: Path, limit: int = MAX_PAYLOAD_LEN) -> bytes:
    """A file the device stored: a regular file of at most ``limit`` bytes (no answer it came
    from is larger). Anything else, a FIFO, a device or a larger file, is not what the device
    stored: ValueError, and never a read that blocks or fills the memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than anything the device stores")
    return data


def load_expired(
    directory: Path,
    cas: list[x509.Certificate],
    now: dt.datetime | None = None,
    *,
    dsn: str,
    thing_prefix: str | None = None,
    skew: dt.timedelta = dt.timedelta(),
) -> Credentials | None:
    """Stored credentials that ``load_valid`` would accept but for time: their certificate has
    run out by ``now`` (or runs out within ``skew``, for a clock behind the broker's). None when
    there are none, they are still valid, or they fail any other check."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(read_stored(directory / CERT_FILE))
    except (OSError, ValueError):
        return None
    end = cert.not_valid_after_utc
    if end > now + skew:
        return None
    # Every other check, as at the certificate's last valid second.
    last = max(end - dt.timedelta(seconds=1), cert.not_valid_before_utc)
    return load_valid(directory, cas, last, dsn=dsn, thing_prefix=thing_prefix)
