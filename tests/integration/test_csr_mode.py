"""POST /certificate in CSR mode: the device keeps its key and sends a CSR; the service checks it,
ignores what it asks to be named, and answers the certificate without any key fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.test_provision_api import (
    ALICE,
    audit_events,
    invoke,
    provision,
    record,
    thing_certificates,
    thing_name,
)
from tests.support.csr import ec_key, make_csr, public_key_der, with_bad_signature
from tests.support.lambda_support import Device, api_event, unique_dsn


def post(body: dict[str, Any], sub: str = ALICE) -> tuple[int, dict[str, Any]]:
    status, answer, _ = invoke(api_event(json.dumps(body), sub, "Members"))
    return status, answer


def test_a_device_with_its_own_key_gets_a_certificate_naming_only_what_the_service_says(
    services, aws, provisioning_env
) -> None:
    # GIVEN a device that made its own P-384 key and a CSR asking for another name, another
    # device's SAN and CA powers
    dsn, key = unique_dsn(), ec_key(ec.SECP384R1())
    csr = make_csr(
        key,
        common_name="device_SOMEONE-ELSE",
        san_uris=("urn:iot-device-onboarding:dsn:SOMEONE-ELSE", "https://evil.example"),
        ca=True,
    )

    # WHEN the app posts the DSN and the CSR
    status, answer = post({"DSN": dsn, "csr": csr})

    # THEN the answer is the certificate, with no key fields at all
    assert status == 200, answer
    assert set(answer) == {
        "certificatePem",
        "certificateChainPem",
        "thingName",
        "certificateId",
        "notAfter",
        "iotEndpoint",
    }
    thing = thing_name(provisioning_env, dsn)
    assert answer["thingName"] == thing
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    # ... with the chain of the CA that signed it
    issuer = x509.load_pem_x509_certificates(answer["certificateChainPem"].encode())[0]
    cert.verify_directly_issued_by(issuer)
    # ... for the device's own key
    assert public_key_der(key) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # ... naming the service's subject and the DSN's SAN only; nothing of the CSR's extensions
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == thing
    assert not any(a.value == "Mallory Inc" for a in cert.subject)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(f"urn:iot-device-onboarding:dsn:{dsn}")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # ... ACTIVE in IoT on its thing, and the row records the CSR key's algorithm
    assert thing_certificates(aws, thing) == {answer["certificateId"]: "ACTIVE"}
    row = record(aws, provisioning_env, dsn)
    assert row is not None
    assert row["key_algorithm"] == "EC_secp384r1"
    assert row["certificate_id"] == answer["certificateId"]
    assert [e["event"] for e in audit_events(aws, provisioning_env, dsn)] == ["ISSUE"]


def test_a_device_moves_from_public_key_mode_to_its_own_rsa_key(
    services, aws, provisioning_env
) -> None:
    # GIVEN a device provisioned the original way (its key made by the service)
    device = Device(unique_dsn())
    status, first, _ = provision(device)
    assert status == 200, first
    assert "encryptedPrivateKey" in first
    # WHEN it is provisioned again with a CSR of its own RSA key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, second = post({"DSN": device.dsn, "csr": make_csr(key)})
    # THEN the new certificate replaces the old one, which is revoked
    assert status == 200, second
    thing = thing_name(provisioning_env, device.dsn)
    assert thing_certificates(aws, thing) == {second["certificateId"]: "ACTIVE"}
    status_old = aws["iot"].describe_certificate(certificateId=first["certificateId"])
    assert status_old["certificateDescription"]["status"] == "REVOKED"
    row = record(aws, provisioning_env, device.dsn)
    assert row is not None and row["key_algorithm"] == "RSA_2048"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (
            {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"},
            "CSR_INVALID",
        ),
        ({"csr": with_bad_signature(make_csr())}, "CSR_INVALID"),
        (
            {"csr": make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))},  # noqa: S505,
            "CSR_KEY_UNSUPPORTED",
        ),
        ({"csr": make_csr(ec_key(ec.SECP521R1()))}, "CSR_KEY_UNSUPPORTED"),
        ({"csr": make_csr(), "publicKey": Device("x").public_key_b64}, "KEY_FIELDS_CONFLICT"),
        ({}, "FIELD_MISSING"),
        ({"csr": make_csr(), "encryption": "fernet-x25519"}, "ENCRYPTION_NOT_APPLICABLE"),
    ],
)
def test_a_bad_request_is_refused_and_creates_nothing(
    services, aws, provisioning_env, fields: dict[str, str], code: str
) -> None:
    dsn = unique_dsn()
    with_issue: list[Any] = []
    services.pca.client.meta.events.register(
        "before-call.acm-pca.IssueCertificate", lambda **kw: with_issue.append(kw)
    )
    status, answer = post({"DSN": dsn, **fields})
    assert (status, answer["code"]) == (400, code)
    assert with_issue == []
    assert record(aws, provisioning_env, dsn) is None
    assert thing_certificates(aws, thing_name(provisioning_env, dsn)) == {}
