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


# The certificate names its device: a SAN URI the device compares exactly with its own DSN
# (example/onboarding_ble/rules.py has the device's copy; tests/unit/test_shared_rules.py keeps
# them equal). ACM PCA's EndEntityClientAuthCertificate/V1 copies the CSR's SAN and subject.
DSN_URI_PREFIX = "urn:iot-device-onboarding:dsn:"
X25519_P = 2**255 - 19


def is_canonical_x25519(public_key: bytes) -> bool:
    """32 bytes encoding a u-coordinate below p (so the top bit is clear).

    RFC 7748 has a receiver mask the top bit; here (and on the device) such a key is refused
    instead, so the bytes each side puts in the HKDF context are the bytes the agreement used.
    """
    return len(public_key) == 32 and int.from_bytes(public_key, "little") < X25519_P


def check_device_public_key(device_public_key: bytes) -> None:
    """Refuse, before anything is created, a key the agreement at the end would fail on.

    The agreement runs here on a throw-away key and its result is dropped: a low-order point
    gives the all-zero secret whatever the private half (X25519 clamps scalars to multiples of
    the cofactor), so this is exactly the check the real agreement makes, and no secret lives
    through the AWS calls.
    """
    if not is_canonical_x25519(device_public_key):
        raise BadRequest(
            "publicKey is not a canonical X25519 public key (top bit set or out of range).",
            "PUBLIC_KEY_INVALID",
        )
    try:
        device_key = x25519.X25519PublicKey.from_public_bytes(device_public_key)
        x25519.X25519PrivateKey.generate().exchange(device_key)
    except ValueError:
        # OpenSSL refuses an all-zero shared secret, i.e. a low-order point.
        raise BadRequest(
            "publicKey is not a usable X25519 key (low-order point).", "PUBLIC_KEY_LOW_ORDER"
        ) from None


@dataclass(frozen=True)
class SealedKey:
    """The encrypted private key and the server's ephemeral X25519 public key (both public)."""

    encrypted_private_key: str
    server_public_key: bytes


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


def build_csr(
    key: DeviceKey, thing_name: str, dsn: str, o: str = "", ou: str = "", c: str = ""
) -> bytes:
    """CN = the thing name (shortened past 64 characters), SAN URI = the DSN (the exact name)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name_for(thing_name))]
    for oid, value in ((NameOID.ORGANIZATION_NAME, o), (NameOID.ORGANIZATIONAL_UNIT_NAME, ou)):
        if value:
            attributes.append(x509.NameAttribute(oid, value))
    if c:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, c))
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(DSN_URI_PREFIX + dsn)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def seal_private_key(key: DeviceKey, device_public_key: bytes, scheme: str, dsn: str) -> SealedKey:
    """The PKCS#8 PEM private key, encrypted so that only the device can read it.

    The server's ephemeral key and the shared secret exist only inside this call: it runs at
    the end of the request, after every AWS call.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server_key = x25519.X25519PrivateKey.generate()
    server_public = server_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = server_key.exchange(x25519.X25519PublicKey.from_public_bytes(device_public_key))
    if scheme == HKDF_AES_GCM:
        info = HKDF_LABEL + server_public + device_public_key + dsn.encode()
        aead_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        nonce = os.urandom(12)
        sealed = AESGCM(aead_key).encrypt(nonce, pem, dsn.encode())
        # base64(nonce(12) || AES-256-GCM ciphertext and tag), the DSN as associated data.
        return SealedKey(base64.b64encode(nonce + sealed).decode("ascii"), server_public)
    # fernet-x25519, the original sample's scheme (the default): Fernet(base64url(secret)).
    token = Fernet(base64.urlsafe_b64encode(shared)).encrypt(pem)
    return SealedKey(token.decode("ascii"), server_public)


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
