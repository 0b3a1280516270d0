"""What a device does with the answer, written from the API spec, not from the server code."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"iot-device-onboarding/x25519-hkdf-sha256-aes256gcm/v1"


def device_decrypts_gcm(
    device: x25519.X25519PrivateKey, server_public: bytes, token: str, dsn: str
) -> bytes:
    """x25519-hkdf-sha256-aes256gcm: HKDF-SHA256(secret, info = label || server public ||
    device public || DSN) as the AES-256-GCM key; token = base64(nonce(12) || ciphertext+tag);
    the DSN is the associated data."""
    shared = device.exchange(x25519.X25519PublicKey.from_public_bytes(server_public))
    device_public = device.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    info = LABEL + server_public + device_public + dsn.encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    raw = base64.b64decode(token)
    return AESGCM(key).decrypt(raw[:12], raw[12:], dsn.encode())
