"""The device's factory attestation key: an EC P-256 key that vouches for the key it asks to
have certified (docs/ble-protocol.md 3.1.2; the service checks it when RequireAttestation is on).

A real device makes this key inside its secure element at manufacture and exports only the
public half. The example stands in for that: ``load_or_create`` makes the key on the first run
in the device's state folder (``attestation-key.pem``, mode 0600, never overwritten) and writes
the public half beside it (``attestation-public.pem``, 0600 too), which the manufacturer loads
into the service's allowlist (``make demo`` does, through POST /allowlist).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import rules

KEY_FILE = "attestation-key.pem"
PUBLIC_FILE = "attestation-public.pem"


class AttestationKeyError(Exception):
    """The state folder's attestation key is unreadable or not EC P-256."""


def load_or_create(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = state_dir / KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return _create(state_dir)
    except ValueError as exc:
        raise AttestationKeyError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationKeyError(f"{path} is not an EC P-256 key")
    return key


def _create(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: a key that exists is never overwritten (another process made it first: use it).
    try:
        fd = os.open(state_dir / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create(state_dir)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    # Not secret, but the state folder holds nothing others may read (0600 like the rest).
    public = os.open(state_dir / PUBLIC_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(public, "w", encoding="ascii") as out:
        out.write(public_pem(key))
    return key


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def sign(
    key: ec.EllipticCurvePrivateKey, dsn: str, challenge: bytes, public_key_der: bytes
) -> bytes:
    """The DER signature a device serves in DEVICE_ATTESTATION, over the challenge the app
    wrote to ATTESTATION_CHALLENGE."""
    return key.sign(
        rules.attestation_message(dsn, challenge, public_key_der), ec.ECDSA(hashes.SHA256())
    )
