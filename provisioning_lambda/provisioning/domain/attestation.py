"""Device attestation: the device's factory key vouches for the key the service certifies.

The message a device signs (ECDSA P-256 with SHA-256, its factory attestation key; the
signature travels DER-encoded, in standard base64, as the request's ``attestation``)::

    b"iot-device-onboarding/attestation/v2\\x00" + DSN (ASCII) + b"\\x00"
        + challenge (32 bytes) + SPKI DER

where the challenge is the one the service gave the caller for this DSN
(``POST /certificate/challenge``; challenge.py), sent back as the request's
``attestationChallenge``, and SPKI DER is the SubjectPublicKeyInfo (DER) of the key being
certified: in publicKey mode the device's X25519 key (``x25519_spki_der``), in CSR mode the
CSR's public key, the bytes of CertificationRequestInfo.subjectPKInfo in the CSR's DER
(``CheckedCsr.public_key_der``: crypto.load_device_csr accepts a key only in its standard
encoding, so the bytes the CSR carries and their re-encoding are the same).

Binding the key stops a captured attestation from being replayed for an attacker's key; binding
the DSN stops it from being moved to another serial number; binding the challenge, which the
service issued to one caller for one DSN and accepts once, within minutes, stops it from being
replayed from anyone else's account (the BLE link is unpaired: whoever is in range reads what
the device serves). The DSN never holds ``\\x00`` (models.DSN_PATTERN) and the challenge has a
fixed length, so the parts split one way only.

An attested key is certified once: the commit that names the certificate records the SHA-256
of the key's SPKI DER for the DSN (``certified_key_id``; an allowlist-table item of its own, in
the commit's transaction), and an attestation over a key already certified is refused
(``ATTESTATION_REPLAYED``), before the lease is taken and again by the commit's condition. A
captured {DSN, key, attestation} therefore cannot take a released device over later. A device
whose 200 was lost makes a fresh key (and attestation) for its next request, as it must anyway:
the answer it lost held the only copy of what it needed.

The decision (``check``) runs before the device's lease is taken or anything is written:

- a DSN the allowlist marks BLOCKED is refused, attestation on or off (``DEVICE_BLOCKED``);
- attestation on: no ``attestation`` -> ``ATTESTATION_REQUIRED``; a DSN not in the allowlist
  (or listed without a key) -> ``DEVICE_NOT_ALLOWED``; a signature that does not verify with
  the listed key -> ``ATTESTATION_INVALID``;
- attestation off: an ``attestation`` for a DSN listed with a key is verified (a wrong one is
  refused: it is evidence of tampering, not of an old device); otherwise it is ignored, since
  there is no key to check it against and unlisted devices are allowed;
- an attestation that verifies, over a key certified before for the DSN -> ``ATTESTATION_REPLAYED``;
- an attestation that verifies is then the caller's only with its challenge: the challenge is
  consumed (challenge.consume: one conditional write, so two requests cannot both use it), and one
  that is unknown, another caller's or DSN's (``CHALLENGE_INVALID``), used before
  (``CHALLENGE_USED``) or expired (``CHALLENGE_EXPIRED``) refuses the request. An attestation that
  is ignored (attestation off, no key listed) leaves its challenge alone.

Provisioning's commit checks the entry once more, in its own transaction (a guard): a block
that landed while the request was working rolls the request back (``DEVICE_BLOCKED``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from provisioning.domain.challenge import CHALLENGE_BYTES
from provisioning.domain.crypto import standard_spki
from provisioning.domain.errors import Forbidden

MESSAGE_PREFIX = b"iot-device-onboarding/attestation/v2\x00"
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
    blocked_by: str = ""  # audit only, never answered
    loaded_by: str = ""  # audit only, never answered

    @property
    def blocked(self) -> bool:
        return self.status == BLOCKED


def message(dsn: str, challenge: bytes, public_key_der: bytes) -> bytes:
    """The exact bytes a device signs (docs/ble-protocol.md 3.1.2 has a worked example)."""
    if len(challenge) != CHALLENGE_BYTES:
        raise ValueError(f"the challenge is {CHALLENGE_BYTES} bytes")
    return MESSAGE_PREFIX + dsn.encode("ascii") + b"\x00" + challenge + public_key_der


def x25519_spki_der(raw_public_key: bytes) -> bytes:
    """The device's 32-byte X25519 public key as SubjectPublicKeyInfo DER (RFC 8410)."""
    return x25519.X25519PublicKey.from_public_bytes(raw_public_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(
    private_key: ec.EllipticCurvePrivateKey, dsn: str, challenge: bytes, public_key_der: bytes
) -> str:
    """What a device sends as ``attestation`` (the factory's and the tests' side)."""
    signature = private_key.sign(message(dsn, challenge, public_key_der), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def load_attestation_public_key(text: str) -> bytes:
    """An operator's attestation key (PEM, or base64 of SPKI DER): its SPKI DER, EC P-256 only,
    naming its curve (crypto.standard_spki: refused with explicit parameters, as in CSR mode).

    Raises ValueError with a sentence (never the key) when it is not one.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PUBLIC_KEY_TEXT:
        raise ValueError("attestationPublicKey must be a PEM or base64 SPKI, EC P-256")
    stripped = text.strip()
    if stripped.startswith("-----BEGIN") and (
        stripped.count("-----BEGIN") != 1 or not stripped.endswith("-----END PUBLIC KEY-----")
    ):
        # One PEM block and nothing after it: a second block would be silently ignored.
        raise ValueError("attestationPublicKey must be one PEM public key and nothing else")
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
            # the PEM loaded, so its lines between the BEGIN and END lines are its base64 DER
            carried = base64.b64decode("".join(stripped.splitlines()[1:-1]))
        else:
            carried = base64.b64decode(stripped, validate=True)
            key = serialization.load_der_public_key(carried)
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error, UnsupportedAlgorithm):
        # UnsupportedAlgorithm: a key of an algorithm the crypto library does not know
        raise ValueError("attestationPublicKey is not a public key (PEM or base64 SPKI)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("attestationPublicKey must be an EC P-256 key")
    der = standard_spki(key, carried)
    if der is None:
        raise ValueError("attestationPublicKey must name its curve (no explicit parameters)")
    return der


def public_key_pem(public_key_der: bytes) -> str:
    key = serialization.load_der_public_key(public_key_der)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def verifies(
    entry: AllowlistEntry, dsn: str, challenge: bytes, public_key_der: bytes, signature: bytes
) -> bool:
    if not entry.public_key_der or len(challenge) != CHALLENGE_BYTES:
        return False
    key = serialization.load_der_public_key(entry.public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message(dsn, challenge, public_key_der), ec.ECDSA(hashes.SHA256()))
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
    challenge: bytes = b"",
    certified: bool = False,
) -> None:
    """Raise Forbidden (403, stable code) unless this device may have this key certified.

    ``certified``: the allowlist records this key as certified for the DSN before.
    ``challenge``: the request's ``attestationChallenge`` (the signature covers it); whether it
    is the caller's, unused and in time is challenge.consume's to say, after this.

    ``public_key_der`` is the SPKI DER of the key being certified: ``x25519_spki_der`` of the
    request's publicKey, or, in CSR mode, ``CheckedCsr.public_key_der``.
    """
    refuse_if_blocked(entry)
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
    if not verifies(entry, dsn, challenge, public_key_der, signature):
        raise Forbidden(
            "The device's attestation does not verify for this device and key.",
            "ATTESTATION_INVALID",
        )
    if certified:
        raise replayed()


def device_blocked() -> Forbidden:
    """The one refusal for a DSN the allowlist blocks, whoever asks: it is never provisioned,
    renewed or handed to a new owner again (one that changed hands could never come online)."""
    return Forbidden(
        "This device is blocked: it cannot be provisioned, renewed or change hands.",
        "DEVICE_BLOCKED",
    )


def refuse_if_blocked(entry: AllowlistEntry | None) -> None:
    if entry is not None and entry.blocked:
        raise device_blocked()


def replayed() -> Forbidden:
    return Forbidden(
        "This attested key was certified before; the device must make a new key.",
        "ATTESTATION_REPLAYED",
    )


def certified_key_id(public_key_der: bytes) -> str:
    """What the allowlist table records of a certified attested key: SHA-256 of its SPKI DER."""
    return hashlib.sha256(public_key_der).hexdigest()


@dataclass(frozen=True)
class AttestedKey:
    """What a provisioning request says about the key to certify and who vouches for it."""

    dsn: str
    public_key_der: bytes
    signature: bytes | None = None
    challenge: bytes = b""
