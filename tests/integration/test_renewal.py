"""A device renews its own certificate over MQTT, authenticated by the certificate it connects
with: the renewal function (as the topic rule invokes it) through the real adapters on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from moto.acmpca.models import acmpca_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from provisioning.budget import Budget
from provisioning.crypto import certificate_facts
from provisioning.dependencies import get_services
from provisioning.ports import Services
from provisioning.sweeper import sweep
from tests.support.csr import ec_key, make_csr, with_bad_signature
from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn

ALICE, BOB = "sub-alice", "sub-bob"
REGION = "us-east-1"


class Fleet:
    """The stack's functions as devices and their owners use them, with a clock to move on."""

    def __init__(self, services: Services, env: dict[str, str]) -> None:
        self.services, self.env = services, env
        self.offset = timedelta()
        self.iot = boto3.client("iot")
        services.clock = lambda: datetime.now(UTC) + self.offset

    def thing(self, dsn: str) -> str:
        return f"{self.env['THING_PREFIX']}_{dsn}"

    def provision(self, device: Device, sub: str = ALICE) -> str:
        from provisioning.handler import lambda_handler

        response = lambda_handler(api_event(device.body(), sub), FakeLambdaContext())
        assert response["statusCode"] == 200, response["body"]
        return str(json.loads(response["body"])["certificateId"])

    def revoke(self, device: Device) -> None:
        from provisioning.handler import lambda_handler

        event = api_event(None, ALICE, method="DELETE", path=f"/devices/{device.dsn}/certificate")
        assert lambda_handler(event, FakeLambdaContext())["statusCode"] == 200

    def publish(self, dsn: str, principal: str, **payload: str) -> dict[str, str]:
        """What the topic rule hands the function when the device publishes ``payload``."""
        from provisioning.renewal_handler import lambda_handler

        thing = self.thing(dsn)
        event = {**payload, "thingName": thing, "principal": principal, "clientId": thing}
        return lambda_handler(event, FakeLambdaContext(function_name="RenewalFunction"))

    def renew(self, dsn: str, principal: str, csr: str | None = None) -> dict[str, str]:
        return self.publish(dsn, principal, csr=csr or make_csr())

    def answers(self, dsn: str) -> list[tuple[str, dict[str, Any]]]:
        """What the device received on its renew/accepted and renew/rejected topics."""
        prefix = f"things/{self.thing(dsn)}/certificate/renew/"
        return [
            (topic.removeprefix(prefix), json.loads(body))
            for topic, body in iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads
            if topic.startswith(prefix)
        ]

    def status(self, certificate_id: str) -> str:
        description = self.iot.describe_certificate(certificateId=certificate_id)
        return str(description["certificateDescription"]["status"])

    def attached(self, dsn: str) -> set[str]:
        principals = self.iot.list_thing_principals(thingName=self.thing(dsn))["principals"]
        return {arn.rsplit("/", 1)[1] for arn in principals}

    def revoked_in_pca(self, certificate_id: str) -> bool:
        pem = self.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"][
            "certificatePem"
        ]
        ca = acmpca_backends[DEFAULT_ACCOUNT_ID][REGION].certificate_authorities[self.env["CA_ARN"]]
        return certificate_facts(pem).serial_hex in ca.revoked_certificates

    def audit(self, dsn: str) -> list[tuple[str, str]]:
        items = boto3.client("dynamodb").query(
            TableName=self.env["AUDIT_TABLE"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"device#{dsn}"}},
        )["Items"]
        return [(i["event"]["S"], i.get("certificate_id", {}).get("S", "")) for i in items]

    def sweep(self) -> None:
        sweep(self.services, Budget(FakeLambdaContext(60).get_remaining_time_in_millis), "run")

    def issued_count(self) -> int:
        ca = acmpca_backends[DEFAULT_ACCOUNT_ID][REGION].certificate_authorities[self.env["CA_ARN"]]
        return len(ca.issued_certificates)


@pytest.fixture
def fleet(
    provisioning_env: dict[str, str], stack: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    # The renewal function's own environment (its grace period among it).
    for name, value in stack.functions["RenewalFunction"].environment.items():
        monkeypatch.setenv(name, value)
    get_services.cache_clear()
    services = get_services()
    services.sleep = lambda _seconds: None
    yield Fleet(services, provisioning_env | dict(stack.functions["RenewalFunction"].environment))
    get_services.cache_clear()


def test_a_device_renews_with_its_current_certificate_and_keeps_it_until_it_confirms(
    fleet: Fleet,
) -> None:
    # GIVEN a provisioned device that made a new key and a CSR naming someone else
    device = Device(unique_dsn())
    old = fleet.provision(device)
    key = ec_key()
    csr = make_csr(key, common_name="device_OTHER", san_uris=("urn:iot-device-onboarding:dsn:X",))

    # WHEN it publishes the CSR on its renew topic, connected with its certificate
    result = fleet.renew(device.dsn, old, csr)

    # THEN it receives the new certificate on renew/accepted ...
    assert result["result"] == "ACCEPTED", result
    ((topic, answer),) = fleet.answers(device.dsn)
    assert topic == "accepted"
    assert set(answer) == {"certificatePem", "certificateId", "notAfter"}
    new = answer["certificateId"]
    assert new == result["certificateId"] != old
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    # ... for its new key, naming its own thing and DSN only, whatever the CSR asked for
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    thing = fleet.thing(device.dsn)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == thing
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.UniformResourceIdentifier(f"urn:iot-device-onboarding:dsn:{device.dsn}")
    ]
    # ... both certificates work until it confirms: the old one is not cut off mid-switch
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")
    assert fleet.attached(device.dsn) == {old, new}
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == new
    assert row.superseded is not None and row.superseded.certificate_id == old
    grace = int(fleet.env["RENEWAL_GRACE_HOURS"]) * 3600
    assert abs(row.grace_until - (datetime.now(UTC).timestamp() + grace)) < 60
    assert ("RENEW", new) in fleet.audit(device.dsn)

    # WHEN it confirms, connected with the new certificate
    assert fleet.publish(device.dsn, new, certificateId=new)["result"] == "CONFIRMED"

    # THEN the old one is retired everywhere, audited, and the row names only the new one
    assert fleet.status(old) == "REVOKED"
    assert fleet.attached(device.dsn) == {new}
    assert fleet.revoked_in_pca(old)
    assert ("REVOKE", old) in fleet.audit(device.dsn)
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.superseded is None and row.certificate_id == new
    # ... and a repeated confirm changes nothing
    assert fleet.publish(device.dsn, new, certificateId=new)["result"] == "CONFIRMED"
    assert fleet.status(new) == "ACTIVE"


def test_the_sweeper_retires_the_old_certificate_when_the_grace_period_ends(fleet: Fleet) -> None:
    # GIVEN a device that renewed and never confirmed
    device = Device(unique_dsn())
    old = fleet.provision(device)
    new = fleet.renew(device.dsn, old)["certificateId"]
    grace = timedelta(hours=int(fleet.env["RENEWAL_GRACE_HOURS"]))

    # WHEN the sweeper runs before the deadline, nothing changes
    fleet.offset = grace - timedelta(minutes=5)
    fleet.sweep()
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")

    # WHEN it runs after the deadline
    fleet.offset = grace + timedelta(minutes=1)
    fleet.sweep()

    # THEN the old certificate is retired, the new one stays, and the row is settled
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "ACTIVE")
    assert fleet.attached(device.dsn) == {new}
    assert fleet.revoked_in_pca(old)
    assert ("REVOKE", old) in fleet.audit(device.dsn)
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.superseded is None and not row.retiring
    # ... and the row left the sweeper's index: the next run does not see it
    assert device.dsn not in fleet.services.store.due(
        int(fleet.services.clock().timestamp()) + 10**6, 100
    )


def test_a_device_that_lost_the_answer_renews_again_and_holds_at_most_two(fleet: Fleet) -> None:
    # GIVEN a device whose renewal was accepted but whose answer never arrived
    device = Device(unique_dsn())
    old = fleet.provision(device)
    lost = fleet.renew(device.dsn, old)["certificateId"]

    # WHEN it renews again, still with its old certificate
    result = fleet.renew(device.dsn, old)

    # THEN it gets a fresh certificate; the one it never received is retired; the old one stays
    assert result["result"] == "ACCEPTED", result
    fresh = result["certificateId"]
    assert fresh not in (old, lost)
    assert (fleet.status(old), fleet.status(lost), fleet.status(fresh)) == (
        "ACTIVE",
        "REVOKED",
        "ACTIVE",
    )
    assert fleet.attached(device.dsn) == {old, fresh}
    assert fleet.revoked_in_pca(lost)
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == fresh
    assert row.superseded is not None and row.superseded.certificate_id == old


def test_renewing_again_from_the_new_certificate_retires_the_old_one(fleet: Fleet) -> None:
    # GIVEN a device that switched to its new certificate but whose confirm was lost
    device = Device(unique_dsn())
    first = fleet.provision(device)
    second = fleet.renew(device.dsn, first)["certificateId"]
    # WHEN it renews again with the new certificate
    third = fleet.renew(device.dsn, second)["certificateId"]
    # THEN the first is retired, the second is superseded, the third is current
    assert [fleet.status(c) for c in (first, second, third)] == ["REVOKED", "ACTIVE", "ACTIVE"]
    assert fleet.attached(device.dsn) == {second, third}


def test_a_revoked_device_cannot_renew(fleet: Fleet) -> None:
    # GIVEN a device its owner revoked (its connection not yet closed)
    device = Device(unique_dsn())
    cert = fleet.provision(device)
    fleet.revoke(device)
    issued = fleet.issued_count()
    # WHEN it publishes a renewal
    result = fleet.renew(device.dsn, cert)
    # THEN it is refused with a stable code, and nothing is issued
    assert result == {"result": "REJECTED", "code": "DEVICE_REVOKED"}
    assert fleet.answers(device.dsn)[-1] == (
        "rejected",
        {"code": "DEVICE_REVOKED", "msg": "The device's certificate is revoked."},
    )
    assert fleet.issued_count() == issued
    assert fleet.status(cert) == "REVOKED"


def test_a_blocked_device_cannot_renew_while_its_certificate_still_connects(fleet: Fleet) -> None:
    # GIVEN a device whose DSN an administrator blocked, its certificate not yet revoked
    # (blocking revokes it next; that step failed or has not run)
    device = Device(unique_dsn())
    cert = fleet.provision(device)
    assert fleet.services.allowlist is not None
    fleet.services.allowlist.block(device.dsn, "2026-11-29T00:00:00Z", "sub-admin")
    issued = fleet.issued_count()
    # WHEN it publishes a renewal with that certificate
    result = fleet.renew(device.dsn, cert)
    # THEN it is refused, nothing is issued, and the certificate it has is all it keeps
    assert result == {"result": "REJECTED", "code": "DEVICE_BLOCKED"}
    assert fleet.answers(device.dsn)[-1][1]["code"] == "DEVICE_BLOCKED"
    assert fleet.issued_count() == issued
    row = fleet.services.store.get(device.dsn)
    assert row is not None and (row.certificate_id, row.superseded) == (cert, None)


@pytest.mark.parametrize("whose", ["another device's", "its own replaced one", "unknown"])
def test_a_foreign_certificate_cannot_renew_a_device(fleet: Fleet, whose: str) -> None:
    # GIVEN a provisioned device, and a certificate that is not its current one
    device = Device(unique_dsn())
    first = fleet.provision(device)
    if whose == "another device's":
        foreign = fleet.provision(Device(unique_dsn()), BOB)
    elif whose == "its own replaced one":
        foreign, _ = first, fleet.provision(device)  # rotated away over BLE
    else:
        foreign = "ab" * 32
    issued = fleet.issued_count()
    row_before = fleet.services.store.get(device.dsn)

    # WHEN a renewal for the device arrives published with that certificate
    result = fleet.renew(device.dsn, foreign)

    # THEN it is refused, nothing is issued and the device's row is as it was
    assert result == {"result": "REJECTED", "code": "CERTIFICATE_NOT_CURRENT"}
    assert fleet.answers(device.dsn)[-1][1]["code"] == "CERTIFICATE_NOT_CURRENT"
    assert fleet.issued_count() == issued
    row_after = fleet.services.store.get(device.dsn)
    assert row_after is not None and row_before is not None
    assert (row_after.certificate_id, row_after.superseded) == (row_before.certificate_id, None)


def test_a_confirm_from_the_old_certificate_retires_nothing(fleet: Fleet) -> None:
    device = Device(unique_dsn())
    old = fleet.provision(device)
    new = fleet.renew(device.dsn, old)["certificateId"]
    result = fleet.publish(device.dsn, old, certificateId=new)
    assert result == {"result": "REJECTED", "code": "CERTIFICATE_NOT_CURRENT"}
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"csr": "not a csr"}, "CSR_INVALID"),
        ({"csr": with_bad_signature(make_csr())}, "CSR_INVALID"),
        ({"csr": make_csr(), "certificateId": "ab" * 32}, "MESSAGE_INVALID"),
        ({}, "MESSAGE_INVALID"),
        ({"csr": make_csr(), "extra": "x"}, "MESSAGE_INVALID"),
    ],
)
def test_a_malformed_renewal_is_refused_with_a_stable_code(
    fleet: Fleet, payload: dict[str, str], code: str
) -> None:
    device = Device(unique_dsn())
    cert = fleet.provision(device)
    issued = fleet.issued_count()
    assert fleet.publish(device.dsn, cert, **payload) == {"result": "REJECTED", "code": code}
    assert fleet.answers(device.dsn)[-1][1]["code"] == code
    assert fleet.issued_count() == issued


def test_an_unknown_device_or_a_missing_principal_is_refused(fleet: Fleet) -> None:
    from provisioning.renewal_handler import lambda_handler

    assert fleet.renew(unique_dsn(), "ab" * 32)["code"] == "DEVICE_NOT_FOUND"
    device = Device(unique_dsn())
    fleet.provision(device)
    thing = fleet.thing(device.dsn)
    event = {"csr": make_csr(), "thingName": thing, "clientId": thing}
    assert lambda_handler(event, FakeLambdaContext())["code"] == "PRINCIPAL_INVALID"
    # A thing of no device of this fleet gets no answer at all
    event = {"csr": make_csr(), "thingName": "other_X", "principal": "ab" * 32}
    assert lambda_handler(event, FakeLambdaContext())["code"] == "THING_INVALID"
    assert not [
        t
        for t, _ in iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads
        if "other_X" in t
    ]


def test_an_owner_rotation_or_revocation_during_the_grace_period_retires_both(
    fleet: Fleet,
) -> None:
    # GIVEN two devices that renewed and have not confirmed yet
    rotated, revoked = Device(unique_dsn()), Device(unique_dsn())
    a_old = fleet.provision(rotated)
    a_new = fleet.renew(rotated.dsn, a_old)["certificateId"]
    b_old = fleet.provision(revoked)
    b_new = fleet.renew(revoked.dsn, b_old)["certificateId"]
    # WHEN the owner provisions one again over BLE and revokes the other
    a_latest = fleet.provision(rotated)
    fleet.revoke(revoked)
    # THEN only the latest certificate of the first is ACTIVE, and none of the second's
    assert [fleet.status(c) for c in (a_old, a_new, a_latest)] == ["REVOKED", "REVOKED", "ACTIVE"]
    assert [fleet.status(c) for c in (b_old, b_new)] == ["REVOKED", "REVOKED"]
    assert fleet.attached(rotated.dsn) == {a_latest}
    assert fleet.attached(revoked.dsn) == set()
