"""Stand-in CAs, certificates and POST /certificate answers, built without the server code
(for the device's checks in unit tests and a tampering relay in the BLE end-to-end tests)."""

from __future__ import annotations

import base64
import datetime as dt
import json

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.UTC)


def make_ca(name="Device CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca, subject_key, days=30):
    ca_key, ca_cert = ca
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
        .issuer_name(ca_cert.subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .sign(ca_key, hashes.SHA256())
    )


def pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def answer(device_public, dsn, cert, key):
    """What POST /certificate returns (fernet-x25519), for `cert` and `key`."""
    server = X25519PrivateKey.generate()
    shared = server.exchange(X25519PublicKey.from_public_bytes(device_public))
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return json.dumps(
        {
            "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "encryptedPrivateKey": Fernet(base64.urlsafe_b64encode(shared))
            .encrypt(pem_key(key))
            .decode(),
            "publicKey": base64.b64encode(server.public_key().public_bytes(*raw)).decode(),
            "thingName": f"device_{dsn}",
            "certificateId": cert.fingerprint(hashes.SHA256()).hex(),
            "notAfter": cert.not_valid_after_utc.isoformat(),
            "iotEndpoint": "example-ats.iot.eu-west-1.amazonaws.com",
            "encryption": "fernet-x25519",
        }
    ).encode()
