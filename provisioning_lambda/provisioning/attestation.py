"""Device attestation: the device's factory key vouches for the key the service certifies.

The message a device signs (ECDSA P-256 with SHA-256, its factory attestation key; the
signature travels DER-encoded, in standard base64, as the request's ``attestation``)::

    b"iot-device-onboarding/attestation/v1\\x00" + DSN (ASCII) + b"\\x00" + SPKI DER

where SPKI DER is the SubjectPublicKeyInfo (DER) of the key being certified: in publicKey mode
the device's X25519 key (``x25519_spki_der``), in CSR mode the CSR's public key
(``crypto.load_device_csr(...).public_key_der``). Binding the key stops a captured attestation
from being replayed for an attacker's key; binding the DSN stops it from being moved to
another serial number. The DSN never holds ``\\x00`` (models.DSN_PATTERN), so the parts split
one way only.

The decision (``check``) runs before the device's lease is taken or anything is written:

- a DSN the allowlist marks BLOCKED is refused, attestation on or off (``DEVICE_BLOCKED``);
- attestation on: no ``attestation`` -> ``ATTESTATION_REQUIRED``; a DSN not in the allowlist
  (or listed without a key) -> ``DEVICE_NOT_ALLOWED``; a signature that does not verify with
  the listed key -> ``ATTESTATION_INVALID``;
- attestation off: an ``attestation`` for a DSN listed with a key is verified (a wrong one is
  refused: it is evidence of tampering, not of an old device); otherwise it is ignored, since
  there is no key to check it against and unlisted devices are allowed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .errors import BadRequest, Forbidden

if TYPE_CHECKING:
    from .ports import Services

MESSAGE_PREFIX = b"iot-device-onboarding/attestation/v1\x00"
# A DER ECDSA P-256 signature is at most 72 bytes; base64 of that is 96 characters.
MAX_SIGNATURE_BYTES = 72
MAX_SIGNATURE_TEXT = 96
# A PEM or base64 SPKI of a P-256 key is well under this; anything longer is not one.
MAX_PUBLIC_KEY_TEXT = 512

ALLOWED = "ALLOWED"
BLOCKED = "BLOCKED"


@dataclass(frozen=True)
class AllowlistEntry:
    """One manufactured device: its DSN and factory attestation public key (SPKI DER)."""

    dsn: str
    public_key_der: bytes = b""  # empty: blocked before it was ever listed
    status: str = ALLOWED
    created_at: str = ""
    updated_at: str = ""
    blocked_at: str = ""

    @property
    def blocked(self) -> bool:
        return self.status == BLOCKED

    def to_response(self) -> dict[str, str]:
        return {
            "DSN": self.dsn,
            "attestationPublicKey": public_key_pem(self.public_key_der)
            if self.public_key_der
            else "",
            "status": self.status,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "blockedAt": self.blocked_at,
        }


def message(dsn: str, public_key_der: bytes) -> bytes:
    """The exact bytes a device signs."""
    return MESSAGE_PREFIX + dsn.encode("ascii") + b"\x00" + public_key_der


def x25519_spki_der(raw_public_key: bytes) -> bytes:
    """The device's 32-byte X25519 public key as SubjectPublicKeyInfo DER (RFC 8410)."""
    return x25519.X25519PublicKey.from_public_bytes(raw_public_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private_key: ec.EllipticCurvePrivateKey, dsn: str, public_key_der: bytes) -> str:
    """What a device sends as ``attestation`` (the factory's and the tests' side)."""
    signature = private_key.sign(message(dsn, public_key_der), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def parse_signature(text: str) -> bytes:
    """The request's ``attestation``: standard base64 of a DER signature (shape only)."""
    if len(text) > MAX_SIGNATURE_TEXT:
        raise BadRequest("attestation is too long for an ECDSA P-256 signature.", "FIELD_TYPE")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("attestation is not valid base64.", "ATTESTATION_MALFORMED") from None
    if not 8 <= len(raw) <= MAX_SIGNATURE_BYTES:
        raise BadRequest(
            "attestation must be the base64 of a DER ECDSA P-256 signature.",
            "ATTESTATION_MALFORMED",
        )
    return raw


def load_attestation_public_key(text: str) -> bytes:
    """An operator's attestation key (PEM, or base64 of SPKI DER): its SPKI DER, EC P-256 only.

    Raises ValueError with a sentence (never the key) when it is not one.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PUBLIC_KEY_TEXT:
        raise ValueError("attestationPublicKey must be a PEM or base64 SPKI, EC P-256")
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(stripped, validate=True))
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error):
        raise ValueError("attestationPublicKey is not a public key (PEM or base64 SPKI)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("attestationPublicKey must be an EC P-256 key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(public_key_der: bytes) -> str:
    key = serialization.load_der_public_key(public_key_der)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def verifies(entry: AllowlistEntry, dsn: str, public_key_der: bytes, signature: bytes) -> bool:
    if not entry.public_key_der:
        return False
    key = serialization.load_der_public_key(entry.public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message(dsn, public_key_der), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def check(
    *,
    required: bool,
    entry: AllowlistEntry | None,
    dsn: str,
    public_key_der: bytes,
    signature: bytes | None,
) -> None:
    """Raise Forbidden (403, stable code) unless this device may have this key certified.

    ``public_key_der`` is the SPKI DER of the key being certified: ``x25519_spki_der`` of the
    request's publicKey, or, in CSR mode, ``CheckedCsr.public_key_der``.
    """
    if entry is not None and entry.blocked:
        raise Forbidden("This device is blocked and cannot be provisioned.", "DEVICE_BLOCKED")
    listed = entry is not None and bool(entry.public_key_der)
    if required:
        if signature is None:
            raise Forbidden("This service needs the device's attestation.", "ATTESTATION_REQUIRED")
        if not listed:
            raise Forbidden(
                "This device is not in the manufacturer allowlist.", "DEVICE_NOT_ALLOWED"
            )
    if signature is None or not listed or entry is None:
        return
    if not verifies(entry, dsn, public_key_der, signature):
        raise Forbidden(
            "The device's attestation does not verify for this device and key.",
            "ATTESTATION_INVALID",
        )


def authorise_device(
    services: Services, dsn: str, public_key_der: bytes, signature: bytes | None
) -> None:
    """The check POST /certificate makes before it takes the device's lease (``check``).

    ``public_key_der``: SPKI DER of the key to be certified. publicKey mode passes
    ``x25519_spki_der(request.device_public_key)``; CSR mode passes
    ``crypto.load_device_csr(...).public_key_der``.
    """
    entry = services.allowlist.get(dsn) if services.allowlist is not None else None
    check(
        required=services.settings.require_attestation,
        entry=entry,
        dsn=dsn,
        public_key_der=public_key_der,
        signature=signature,
    )
