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
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)


def make_ca(name="Device CA", issuer=None, path_length=None, days=365):
    """A CA with the extensions AWS Private CA gives one; self-signed unless ``issuer`` (a
    (key, certificate) pair) signs it, which makes it an intermediate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_name, signer_public = key, subject, key.public_key()
    if issuer is not None:
        signer_key, signer_name = issuer[0], issuer[1].subject
        signer_public = issuer[1].public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), False)
        .sign(signer_key, hashes.SHA256())
    )
    return key, cert


def _key_usage(cert_sign=False):
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    ca,
    subject_key,
    days=30,
    *,
    dsn=None,
    thing_prefix="device",
    eku=CLIENT_AUTH,
    is_ca=False,
    common_name=None,
    uris=None,
):
    """A device certificate with AWS's EndEntityClientAuthCertificate/V1 profile (key usage
    critical digitalSignature + keyEncipherment, EKU clientAuth, CA:FALSE, key identifiers) and
    the service's names: CN = the thing name, SAN URI = the DSN. Each keyword bends one part:
    ``eku=None`` leaves the EKU out, ``is_ca`` makes it CA:TRUE, ``uris`` replaces the SAN."""
    ca_key, ca_cert = ca
    if common_name is None:
        common_name = f"{thing_prefix}_{dsn}" if dsn is not None else "device"
    if uris is None:
        uris = [f"urn:iot-device-onboarding:dsn:{dsn}"] if dsn is not None else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=is_ca)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), False)
        .add_extension(_key_usage(cert_sign=is_ca), critical=True)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if uris:
        names = [x509.UniformResourceIdentifier(uri) for uri in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def answer(device_public, dsn, cert, key, chain_pem=None):
    """What POST /certificate returns (fernet-x25519), for `cert` and `key` (and the issuing
    CA's chain, when given)."""
    server = X25519PrivateKey.generate()
    shared = server.exchange(X25519PublicKey.from_public_bytes(device_public))
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    chain = {} if chain_pem is None else {"certificateChainPem": chain_pem}
    return json.dumps(
        {
            **chain,
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
