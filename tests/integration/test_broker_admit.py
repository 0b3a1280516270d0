"""The offline broker admits a device as IoT Core would, and its refusal says why: a revoked
certificate is refused as REVOKED (revoking also detaches it), not as "not attached"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from devstack.iot.broker import admit

THING = "device_SN-ADMIT"


def self_signed(name: str) -> tuple[str, bytes]:
    """A certificate (PEM as ACM PCA gives it, and DER as the TLS peer presents it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM).decode(),
        certificate.public_bytes(serialization.Encoding.DER),
    )


@pytest.fixture
def iot(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("iot", region_name="us-east-1")
        client.create_thing(thingName=THING)
        yield client


def registered(iot: Any, status: str = "ACTIVE", attached: bool = True) -> tuple[str, bytes]:
    pem, der = self_signed(THING)
    answer = iot.register_certificate_without_ca(certificatePem=pem, status=status)
    if attached:
        iot.attach_thing_principal(thingName=THING, principal=answer["certificateArn"])
    return answer["certificateId"], der


def test_an_active_attached_certificate_is_admitted(iot: Any) -> None:
    cert_id, der = registered(iot)
    assert admit(iot, THING, der) == (True, f"certificate {cert_id} ACTIVE for {THING!r}")


def test_a_revoked_certificate_is_refused_as_revoked(iot: Any) -> None:
    # GIVEN a device's certificate revoked the way the API revokes it: REVOKED, then detached
    cert_id, der = registered(iot)
    iot.update_certificate(certificateId=cert_id, newStatus="REVOKED")
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    iot.detach_thing_principal(thingName=THING, principal=arn["certificateArn"])
    # WHEN the device reconnects with it, THEN the broker says it is revoked
    assert admit(iot, THING, der) == (False, f"certificate {cert_id} of {THING!r} is REVOKED")


@pytest.mark.parametrize(
    ("status", "attached", "reason"),
    [
        ("INACTIVE", True, "of 'device_SN-ADMIT' is INACTIVE"),
        ("ACTIVE", False, "is not attached to thing 'device_SN-ADMIT'"),
    ],
)
def test_other_refusals_say_what_is_wrong(
    iot: Any, status: str, attached: bool, reason: str
) -> None:
    cert_id, der = registered(iot, status, attached)
    assert admit(iot, THING, der) == (False, f"certificate {cert_id} {reason}")


def test_a_certificate_iot_does_not_hold_is_not_registered(iot: Any) -> None:
    registered(iot)
    _, stranger = self_signed(THING)
    ok, reason = admit(iot, THING, stranger)
    assert not ok and reason.endswith("is not registered in AWS IoT")


def test_an_active_certificate_of_another_thing_is_not_attached_to_this_one(iot: Any) -> None:
    cert_id, der = registered(iot)
    iot.create_thing(thingName="device_SN-OTHER")
    assert admit(iot, "device_SN-OTHER", der) == (
        False,
        f"certificate {cert_id} is not attached to thing 'device_SN-OTHER'",
    )
    assert admit(iot, "device_SN-NONE", der) == (
        False,
        f"certificate {cert_id}: no thing named 'device_SN-NONE'",
    )
