"""Device keys, the CSR, and the encryption of the private key to the device's X25519 key.

The private key exists only in this process's memory: it is serialised once, encrypted to the
device, and never logged, stored or returned in the clear.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from provisioning.domain.errors import BadRequest
from provisioning.domain.models import CertificateNames

DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


FERNET_X25519 = "fernet-x25519"
HKDF_AES_GCM = "x25519-hkdf-sha256-aes256gcm"
HKDF_LABEL = b"iot-device-onboarding/" + HKDF_AES_GCM.encode() + b"/v1"


# The certificate names its device: a SAN URI the device compares exactly with its own DSN
# (example/onboarding_ble/rules.py has the device's copy; tests/unit/test_shared_rules.py keeps
# them equal). The service gives ACM PCA the subject and this SAN through ApiPassthrough
# (EndEntityClientAuthCertificate_APIPassthrough/V1), which take priority over the CSR's.
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


def device_names(
    thing_name: str, dsn: str, o: str = "", ou: str = "", c: str = ""
) -> CertificateNames:
    """What every device certificate names, whatever its CSR says: CN = the thing name
    (shortened past 64 characters), O/OU/C as configured, SAN URI = the DSN (the exact name)."""
    return CertificateNames(
        common_name=common_name_for(thing_name),
        organization=o,
        organizational_unit=ou,
        country=c,
        san_uri=DSN_URI_PREFIX + dsn,
    )


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


def seal_private_key(
    key: DeviceKey,
    device_public_key: bytes,
    scheme: str,
    dsn: str,
    *,
    server_key: x25519.X25519PrivateKey | None = None,
    nonce: bytes | None = None,
) -> SealedKey:
    """The PKCS#8 PEM private key, encrypted so that only the device can read it.

    The server's ephemeral key and the shared secret exist only inside this call: it runs at
    the end of the request, after every AWS call.

    ``server_key`` and ``nonce`` are for the published test vectors only (local/tools/vectors.py
    fixes them to make docs/test-vectors/ reproducible): the service never passes them, so every
    answer has a fresh ephemeral key and a fresh nonce.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server_key = server_key or x25519.X25519PrivateKey.generate()
    server_public = server_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = server_key.exchange(x25519.X25519PublicKey.from_public_bytes(device_public_key))
    if scheme == HKDF_AES_GCM:
        info = HKDF_LABEL + server_public + device_public_key + dsn.encode()
        aead_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        nonce = nonce or os.urandom(12)
        if len(nonce) != 12:
            raise ValueError("the AES-GCM nonce is 12 bytes")
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


def issuer_certificate(chain_pem: str) -> str:
    """The first certificate of an ACM PCA chain (the CA that signed the certificate, then up
    to the root): what IoT's RegisterCertificate takes as the CA certificate. "" for none."""
    if not chain_pem.strip():
        return ""
    first = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))[0]
    return first.public_bytes(serialization.Encoding.PEM).decode("ascii")


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


# A device's CSR: PEM PKCS#10, at most this many bytes (an RSA-4096 CSR with a long subject and
# a few extensions is under 3 KiB).
MAX_CSR_BYTES = 6144
# PKCS#1 v1.5 RSA or ECDSA, with SHA-256/384/512: what Private CA's own signing algorithms are
# made of. Not RSA-PSS, SHA-1 or SHA-224.
CSR_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
# The RSA sizes Private CA issues for (RSA_2048, RSA_3072, RSA_4096), with exponent 65537.
RSA_BITS = (2048, 3072, 4096)
EC_CURVES = {"secp256r1": "EC_prime256v1", "secp384r1": "EC_secp384r1"}
_PEM_BEGIN = b"-----BEGIN CERTIFICATE REQUEST-----"
_PEM_END = b"-----END CERTIFICATE REQUEST-----"
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class CheckedCsr:
    """A CSR whose signature proves possession of its key, and whose key the fleet accepts.

    Only the key is used: the subject and extensions the device asked for are ignored.
    """

    pem: bytes  # re-encoded from the parsed DER: never the caller's text
    public_key_der: bytes  # SubjectPublicKeyInfo, DER
    key_algorithm: str  # EC_prime256v1, EC_secp384r1 or RSA_<2048|3072|4096>


def load_device_csr(pem: bytes) -> CheckedCsr:
    """Check a device's CSR fully; raise BadRequest CSR_INVALID or CSR_KEY_UNSUPPORTED.

    Exactly one PEM block and nothing else (no headers, no text around it), base64 of strict
    DER; signed by its own key with PKCS#1 v1.5 RSA or ECDSA over SHA-256/384/512; that key EC
    P-256 or P-384 naming its curve (no explicit parameters), or RSA of 2048, 3072 or 4096 bits
    with exponent 65537. What goes on to Private CA is PEM made again from the parsed DER.
    """
    if len(pem) > MAX_CSR_BYTES:
        raise BadRequest(f"csr is larger than {MAX_CSR_BYTES} bytes.", "CSR_INVALID")
    der = _pem_body(pem)
    try:
        csr = x509.load_der_x509_csr(der)
        exact = csr.public_bytes(serialization.Encoding.DER) == der
        signature = csr.signature_algorithm_oid
        key = csr.public_key()
        carried_key = _subject_public_key_info(der)
    except (ValueError, TypeError, IndexError, x509.UnsupportedGeneralNameType):
        raise BadRequest("csr is not a valid PKCS#10 certificate request.", "CSR_INVALID") from None
    except Exception:  # cryptography's UnsupportedAlgorithm and the like
        raise BadRequest("csr uses an unsupported algorithm.", "CSR_KEY_UNSUPPORTED") from None
    if not exact:
        raise BadRequest("csr is not a valid PKCS#10 certificate request.", "CSR_INVALID")
    algorithm = _accepted_key(key)
    public_key_der = standard_spki(key, carried_key)
    if public_key_der is None:
        raise BadRequest(
            "csr's key must be encoded in its standard form (an EC key names its curve).",
            "CSR_KEY_UNSUPPORTED",
        )
    if signature not in CSR_SIGNATURES:
        raise BadRequest(
            "csr must be signed with RSA (PKCS#1 v1.5) or ECDSA, with SHA-256, -384 or -512.",
            "CSR_INVALID",
        )
    try:
        signed = csr.is_signature_valid
    except Exception:  # a signature cryptography cannot even check
        signed = False
    if not signed:
        raise BadRequest("csr's signature does not verify.", "CSR_INVALID")
    return CheckedCsr(
        pem=csr.public_bytes(serialization.Encoding.PEM),
        public_key_der=public_key_der,
        key_algorithm=algorithm,
    )


def standard_spki(key: PublicKeyTypes, carried: bytes) -> bytes | None:
    """The key's SubjectPublicKeyInfo DER, if ``carried`` (the SPKI as it was sent) is exactly
    that standard form; else None. cryptography reads an EC key with explicit curve parameters
    and writes it back naming its curve, so such a key (RFC 5480 says to name the curve) is not
    in standard form. CSR mode and the allowlist's attestation keys refuse it alike."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der if der == carried else None


def _pem_body(pem: bytes) -> bytes:
    """The DER of a text that is one PEM certificate request and nothing else."""
    lines = [line.strip() for line in pem.strip().splitlines()]
    body = lines[1:-1]
    if (
        len(lines) < 3
        or lines[0] != _PEM_BEGIN
        or lines[-1] != _PEM_END
        or not all(_BASE64_LINE.fullmatch(line) for line in body)
    ):
        raise BadRequest("csr must be one PEM PKCS#10 certificate request.", "CSR_INVALID")
    text = b"".join(body)
    try:
        der = base64.b64decode(text, validate=True)
    except ValueError:
        raise BadRequest(
            "csr must be one PEM PKCS#10 certificate request.", "CSR_INVALID"
        ) from None
    if base64.b64encode(der) != text:  # padding inside, or bits after the last byte
        raise BadRequest("csr must be one PEM PKCS#10 certificate request.", "CSR_INVALID")
    return der


def _subject_public_key_info(der: bytes) -> bytes:
    """The subjectPKInfo of a DER CertificationRequest as the request encodes it (after its
    version and subject, inside certificationRequestInfo; RFC 2986)."""
    _, info, _ = _der_item(der, 0)  # CertificationRequest
    _, offset, _ = _der_item(der, info)  # certificationRequestInfo
    for _ in range(2):  # version, subject
        _, _, offset = _der_item(der, offset)
    _, _, end = _der_item(der, offset)
    return der[offset:end]


def _der_item(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, where its content starts, where it ends) of the DER item at ``offset``."""
    tag, length, start = der[offset], der[offset + 1], offset + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start : start + count]), start + count
    if start + length > len(der):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _accepted_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_CURVES:
        return EC_CURVES[key.curve.name]
    if (
        isinstance(key, rsa.RSAPublicKey)
        and key.key_size in RSA_BITS
        and key.public_numbers().e == 65537
    ):
        return f"RSA_{key.key_size}"
    raise BadRequest(
        "csr's key must be EC P-256 or P-384, or RSA of 2048, 3072 or 4096 bits.",
        "CSR_KEY_UNSUPPORTED",
    )
