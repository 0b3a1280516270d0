"""Device keys, the CSR, and the encryption of the private key to the device's X25519 key.

The private key exists only in this process's memory: it is serialised once, encrypted to the
device, and never logged, stored or returned in the clear.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from .errors import BadRequest

DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


FERNET_X25519 = "fernet-x25519"
HKDF_AES_GCM = "x25519-hkdf-sha256-aes256gcm"
HKDF_LABEL = b"iot-device-onboarding/" + HKDF_AES_GCM.encode() + b"/v1"


@dataclass(frozen=True)
class KeyExchange:
    """The server's ephemeral X25519 half, already agreed with the device's public key."""

    server_public_key: bytes
    device_public_key: bytes
    shared_secret: bytes


def agree_with_device(device_public_key: bytes) -> KeyExchange:
    """Run X25519 now, so a low-order device key is refused before anything is created."""
    try:
        device_key = x25519.X25519PublicKey.from_public_bytes(device_public_key)
        server_key = x25519.X25519PrivateKey.generate()
        shared = server_key.exchange(device_key)
    except ValueError:
        # OpenSSL refuses an all-zero shared secret, i.e. a low-order point.
        raise BadRequest(
            "publicKey is not a usable X25519 key (low-order point).", "PUBLIC_KEY_LOW_ORDER"
        ) from None
    return KeyExchange(
        server_public_key=server_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ),
        device_public_key=device_public_key,
        shared_secret=shared,
    )


def generate_device_key(algorithm: str) -> DeviceKey:
    if algorithm == "RSA_2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


COMMON_NAME_MAX = 64  # RFC 5280 ub-common-name


def common_name_for(thing_name: str) -> str:
    """The thing name, or for names past X.509's 64 characters a unique shortened form."""
    if len(thing_name) <= COMMON_NAME_MAX:
        return thing_name
    digest = hashlib.sha256(thing_name.encode()).hexdigest()[:16]
    return f"{thing_name[: COMMON_NAME_MAX - 17]}~{digest}"


def build_csr(key: DeviceKey, thing_name: str, o: str = "", ou: str = "", c: str = "") -> bytes:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name_for(thing_name))]
    for oid, value in ((NameOID.ORGANIZATION_NAME, o), (NameOID.ORGANIZATIONAL_UNIT_NAME, ou)):
        if value:
            attributes.append(x509.NameAttribute(oid, value))
    if c:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, c))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def encrypt_private_key(key: DeviceKey, exchange: KeyExchange, scheme: str, dsn: str) -> str:
    """The PKCS#8 PEM private key, encrypted so that only the device can read it."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if scheme == HKDF_AES_GCM:
        return _hkdf_aes_gcm(pem, exchange, dsn)
    # fernet-x25519, the original sample's scheme (the default): Fernet(base64url(secret)).
    token = Fernet(base64.urlsafe_b64encode(exchange.shared_secret)).encrypt(pem)
    return token.decode("ascii")


def hkdf_aes_gcm_key(exchange: KeyExchange, dsn: str) -> bytes:
    """HKDF-SHA256 of the X25519 secret, bound to both public keys and the DSN."""
    info = HKDF_LABEL + exchange.server_public_key + exchange.device_public_key + dsn.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        exchange.shared_secret
    )


def _hkdf_aes_gcm(plaintext: bytes, exchange: KeyExchange, dsn: str) -> str:
    """base64(nonce(12) || AES-256-GCM ciphertext and tag), the DSN as associated data."""
    nonce = os.urandom(12)
    sealed = AESGCM(hkdf_aes_gcm_key(exchange, dsn)).encrypt(nonce, plaintext, dsn.encode())
    return base64.b64encode(nonce + sealed).decode("ascii")


@dataclass(frozen=True)
class CertificateFacts:
    serial_hex: str
    not_before: datetime
    not_after: datetime
    # AWS IoT names a certificate by the SHA-256 of its DER: known before it is registered.
    iot_certificate_id: str


def certificate_facts(certificate_pem: str) -> CertificateFacts:
    cert = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    serial = f"{cert.serial_number:x}"
    serial = serial.rjust(len(serial) + len(serial) % 2, "0")
    return CertificateFacts(
        # ACM PCA names serials as colon-separated hex octets.
        serial_hex=":".join(serial[i : i + 2] for i in range(0, len(serial), 2)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        iot_certificate_id=hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    )
