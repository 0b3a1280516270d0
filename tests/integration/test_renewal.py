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

from onboarding_ble import trust
from provisioning.adapters.composition import get_services
from provisioning.domain.budget import Budget
from provisioning.domain.crypto import certificate_facts
from provisioning.lifecycle.sweep import sweep
from provisioning.ports import Services
from provisioning.usecases.renew import UNCONFIRMED_HOLD_SECONDS
from tests.support.csr import ec_key, make_csr, with_bad_signature
from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn
from tests.support.rule_events import rule_event

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

    @property
    def min_interval(self) -> int:
        return int(self.env["RENEWAL_MIN_INTERVAL_SECONDS"])

    def later(self, seconds: int | None = None) -> None:
        """Let time pass: by default past the minimum renewal interval and the unconfirmed hold
        (a device renews days after it got its certificate, not within seconds)."""
        default = max(self.min_interval, UNCONFIRMED_HOLD_SECONDS) + 1
        self.offset += timedelta(seconds=default if seconds is None else seconds)

    def provision(self, device: Device, sub: str = ALICE) -> str:
        from provisioning.handlers.api import lambda_handler

        response = lambda_handler(api_event(device.body(), sub), FakeLambdaContext())
        assert response["statusCode"] == 200, response["body"]
        return str(json.loads(response["body"])["certificateId"])

    def revoke(self, device: Device) -> None:
        from provisioning.handlers.api import lambda_handler

        event = api_event(None, ALICE, method="DELETE", path=f"/devices/{device.dsn}/certificate")
        assert lambda_handler(event, FakeLambdaContext())["statusCode"] == 200

    def publish(
        self, dsn: str, principal: str, context: FakeLambdaContext | None = None, **payload: str
    ) -> dict[str, str]:
        """What the topic rule hands the function when the device publishes ``payload``
        (``context``: the invocation's, e.g. a re-delivery's, with its request id)."""
        return self.publish_raw(
            dsn,
            principal,
            json.dumps(payload).encode(),
            context,
            confirm=set(payload) == {"certificateId"},
        )

    def publish_raw(
        self,
        dsn: str,
        principal: str,
        raw: bytes,
        context: FakeLambdaContext | None = None,
        *,
        confirm: bool = False,
    ) -> dict[str, str]:
        """The same for a message of any bytes, through the template's own rule SQL."""
        from provisioning.handlers.renewal import lambda_handler

        event = rule_event(self.thing(dsn), principal, raw, confirm=confirm)
        return lambda_handler(event, context or FakeLambdaContext(function_name="RenewalFunction"))

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
    fleet.later()

    # WHEN it publishes the CSR on its renew topic, connected with its certificate
    result = fleet.renew(device.dsn, old, csr)

    # THEN it receives the new certificate on renew/accepted ...
    assert result["result"] == "ACCEPTED", result
    ((topic, answer),) = fleet.answers(device.dsn)
    assert topic == "accepted"
    assert set(answer) == {"certificatePem", "certificateChainPem", "certificateId", "notAfter"}
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
    assert abs(row.grace_until - (fleet.services.clock().timestamp() + grace)) < 60
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
    fleet.later()
    new = fleet.renew(device.dsn, old)["certificateId"]
    grace = int(fleet.env["RENEWAL_GRACE_HOURS"]) * 3600

    # WHEN the sweeper runs before the deadline, nothing changes
    fleet.later(grace - 5 * 60)
    fleet.sweep()
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")

    # WHEN it runs after the deadline
    fleet.later(6 * 60)
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
    fleet.later()
    lost = fleet.renew(device.dsn, old)["certificateId"]

    # WHEN, once no request published before the answer can still be on its way, it renews
    # again with a new key (the one it was waiting with is gone too), still with its old
    # certificate
    fleet.later(UNCONFIRMED_HOLD_SECONDS)
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
    fleet.later()
    second = fleet.renew(device.dsn, first)["certificateId"]
    # WHEN it renews again with the new certificate, once it may
    fleet.later()
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
    fleet.later()
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


def test_a_message_with_a_repeated_key_is_refused(fleet: Fleet) -> None:
    # GIVEN a provisioned device
    device = Device(unique_dsn())
    cert = fleet.provision(device)
    issued = fleet.issued_count()
    # WHEN it publishes a renewal whose JSON names csr twice (a parser could read either)
    raw = b'{"csr": %s, "csr": %s}' % (
        json.dumps(make_csr()).encode(),
        json.dumps(make_csr()).encode(),
    )
    # THEN it is refused, told why on renew/rejected, and nothing is issued
    assert fleet.publish_raw(device.dsn, cert, raw) == {
        "result": "REJECTED",
        "code": "DUPLICATE_FIELD",
    }
    assert fleet.answers(device.dsn)[-1] == (
        "rejected",
        {"code": "DUPLICATE_FIELD", "msg": "A field appears more than once in the body."},
    )
    assert fleet.issued_count() == issued


def test_device_a_cannot_renew_as_device_b_by_naming_b_in_its_payload(fleet: Fleet) -> None:
    # GIVEN two provisioned devices, A and B
    a, b = Device(unique_dsn()), Device(unique_dsn())
    cert_a, cert_b = fleet.provision(a), fleet.provision(b, BOB)
    fleet.later()
    rows = {d.dsn: fleet.services.store.get(d.dsn) for d in (a, b)}
    issued = fleet.issued_count()
    # WHEN A publishes on its own renew topic, with its certificate, a payload that names B's
    # thing, B's certificate and B's client id beside its CSR
    forged = {
        "csr": make_csr(),
        "thingName": fleet.thing(b.dsn),
        "principal": cert_b,
        "clientId": fleet.thing(b.dsn),
    }
    result = fleet.publish_raw(a.dsn, cert_a, json.dumps(forged).encode())
    # THEN it is refused, nothing is issued, neither row changes, and B hears nothing
    assert result == {"result": "REJECTED", "code": "MESSAGE_INVALID"}
    assert fleet.issued_count() == issued
    assert {d.dsn: fleet.services.store.get(d.dsn) for d in (a, b)} == rows
    assert fleet.answers(b.dsn) == []
    assert (fleet.status(cert_a), fleet.status(cert_b)) == ("ACTIVE", "ACTIVE")


def test_an_unknown_device_or_a_missing_principal_is_refused(fleet: Fleet) -> None:
    from provisioning.handlers.renewal import lambda_handler

    assert fleet.renew(unique_dsn(), "ab" * 32)["code"] == "DEVICE_NOT_FOUND"
    device = Device(unique_dsn())
    fleet.provision(device)
    thing = fleet.thing(device.dsn)
    event = rule_event(thing, "ab" * 32, {"csr": make_csr()})
    del event["principal"]  # published without a certificate (IoT's principal() is undefined)
    assert lambda_handler(event, FakeLambdaContext())["code"] == "PRINCIPAL_INVALID"
    # A thing of no device of this fleet gets no answer at all
    event = rule_event("other_X", "ab" * 32, {"csr": make_csr()})
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
    b_old = fleet.provision(revoked)
    fleet.later()
    a_new = fleet.renew(rotated.dsn, a_old)["certificateId"]
    b_new = fleet.renew(revoked.dsn, b_old)["certificateId"]
    # WHEN the owner provisions one again over BLE and revokes the other
    a_latest = fleet.provision(rotated)
    fleet.revoke(revoked)
    # THEN only the latest certificate of the first is ACTIVE, and none of the second's
    assert [fleet.status(c) for c in (a_old, a_new, a_latest)] == ["REVOKED", "REVOKED", "ACTIVE"]
    assert [fleet.status(c) for c in (b_old, b_new)] == ["REVOKED", "REVOKED"]
    assert fleet.attached(rotated.dsn) == {a_latest}
    assert fleet.attached(revoked.dsn) == set()


def _same_arn_for_the_same_token(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """ACM PCA answers an IssueCertificate whose IdempotencyToken it saw in the last 5 minutes
    with the certificate it issued then (its documented behaviour; moto ignores the token)."""
    issue, seen = fleet.services.pca.issue, {}

    def idempotent(csr: bytes, days: int, token: str, names: Any) -> str:
        if token not in seen:
            seen[token] = issue(csr, days, token, names)
        return seen[token]

    monkeypatch.setattr(fleet.services.pca, "issue", idempotent)


def _spki(certificate_pem: str) -> bytes:
    return (
        x509.load_pem_x509_certificate(certificate_pem.encode())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def test_an_event_lambda_delivers_twice_gets_the_same_certificate_and_retires_nothing(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a device that may renew, and ACM PCA honouring idempotency tokens
    _same_arn_for_the_same_token(fleet, monkeypatch)
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    csr = make_csr()
    issued = fleet.issued_count()
    # WHEN Lambda runs its renewal event twice, with the same request id (a retry after a
    # timeout, or a duplicate delivery)
    context = FakeLambdaContext(function_name="RenewalFunction")
    first = fleet.publish(device.dsn, old, context, csr=csr)
    again = fleet.publish(device.dsn, old, context, csr=csr)

    # THEN both runs answer the same certificate, and one certificate was issued
    assert first["result"] == again["result"] == "ACCEPTED", (first, again)
    new = first["certificateId"]
    assert again["certificateId"] == new
    assert fleet.issued_count() == issued + 1
    (_, one), (_, two) = fleet.answers(device.dsn)
    assert [t for t, _ in fleet.answers(device.dsn)] == ["accepted", "accepted"]
    assert one == two and one["certificateId"] == new
    # ... the new certificate the row names stays ACTIVE (not revoked by the second run), and
    # the device's old one keeps working until it confirms
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")
    assert not fleet.revoked_in_pca(new)
    assert fleet.attached(device.dsn) == {old, new}
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == new and not row.retiring
    assert row.superseded is not None and row.superseded.certificate_id == old
    assert ("REVOKE", new) not in fleet.audit(device.dsn)
    # ... and the device switches to it and confirms as usual
    assert fleet.publish(device.dsn, new, certificateId=new)["result"] == "CONFIRMED"
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "ACTIVE")


def test_the_same_csr_published_twice_gets_the_same_certificate_and_the_device_confirms_it(
    fleet: Fleet,
) -> None:
    # GIVEN a device whose renewal request was delivered once and answered
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    key = ec_key()
    csr = make_csr(key)
    issued = fleet.issued_count()
    new = fleet.renew(device.dsn, old, csr)["certificateId"]
    # WHEN the broker delivers the same message again (QoS 1), a little later
    fleet.later(5)
    again = fleet.renew(device.dsn, old, csr)

    # THEN the device is answered with the certificate it already has, nothing else is issued
    # and nothing retired
    assert again == {"result": "ACCEPTED", "certificateId": new}
    ((_, first), (topic, second)) = fleet.answers(device.dsn)
    assert topic == "accepted" and second == first
    assert _spki(second["certificatePem"]) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fleet.issued_count() == issued + 1
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == new and not row.retiring
    # ... so its confirm with that certificate is honoured
    assert fleet.publish(device.dsn, new, certificateId=new)["result"] == "CONFIRMED"
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "ACTIVE")
    # WHEN a copy arrives after the device confirmed, THEN it is refused and changes nothing
    late = fleet.renew(device.dsn, old, csr)
    assert late == {"result": "REJECTED", "code": "CERTIFICATE_NOT_CURRENT"}
    assert fleet.status(new) == "ACTIVE" and fleet.issued_count() == issued + 1


def test_a_stale_request_for_another_key_is_refused_until_the_hold_ends(fleet: Fleet) -> None:
    # GIVEN a device renewed a moment ago (its answer on its way)
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    new = fleet.renew(device.dsn, old)["certificateId"]
    issued = fleet.issued_count()
    # WHEN an older request of the device for another key arrives, from its old certificate
    fleet.later(30)
    stale = fleet.renew(device.dsn, old)

    # THEN it is refused with a stable code and when to retry; nothing is issued or retired
    assert stale == {"result": "REJECTED", "code": "RENEWAL_UNCONFIRMED"}
    topic, answer = fleet.answers(device.dsn)[-1]
    assert (topic, answer["code"]) == ("rejected", "RENEWAL_UNCONFIRMED")
    assert 0 < answer["retryAfterSeconds"] <= UNCONFIRMED_HOLD_SECONDS - 30
    assert fleet.issued_count() == issued
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == new and row.superseded is not None
    assert row.superseded.certificate_id == old and not row.lease_request_id

    # WHEN the device, having really lost its answer and its key, asks again after the hold
    fleet.later(UNCONFIRMED_HOLD_SECONDS - 30)
    result = fleet.renew(device.dsn, old)

    # THEN it gets a fresh certificate; the one it never received is retired
    assert result["result"] == "ACCEPTED", result
    fresh = result["certificateId"]
    assert fleet.issued_count() == issued + 1
    assert [fleet.status(c) for c in (old, new, fresh)] == ["ACTIVE", "REVOKED", "ACTIVE"]
    assert fleet.answers(device.dsn)[-1][1]["certificateId"] == fresh


def test_a_device_renewing_too_soon_is_refused_and_its_owner_is_not_blocked(
    fleet: Fleet,
) -> None:
    # GIVEN a device provisioned a moment ago
    device = Device(unique_dsn())
    old = fleet.provision(device)
    issued = fleet.issued_count()
    fleet.later(10)
    # WHEN it publishes renewal requests in a loop
    results = [fleet.renew(device.dsn, old) for _ in range(5)]

    # THEN each is refused with a stable code saying when it may renew; nothing is issued
    assert results == [{"result": "REJECTED", "code": "RENEWAL_TOO_SOON"}] * 5
    topic, answer = fleet.answers(device.dsn)[-1]
    assert (topic, answer["code"]) == ("rejected", "RENEWAL_TOO_SOON")
    assert 0 < answer["retryAfterSeconds"] <= fleet.min_interval - 10
    assert fleet.issued_count() == issued
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.certificate_id == old and row.superseded is None
    assert not row.lease_request_id  # the owner's requests find the device free

    # WHEN it asks once the interval has passed, THEN it renews
    fleet.later(answer["retryAfterSeconds"])
    new = fleet.renew(device.dsn, old)
    assert new["result"] == "ACCEPTED", new
    # ... and renewing again at once from the new certificate is refused in turn
    assert fleet.renew(device.dsn, new["certificateId"])["code"] == "RENEWAL_TOO_SOON"
    assert fleet.issued_count() == issued + 1
    # ... while its owner can still revoke it at once
    fleet.revoke(device)
    assert fleet.status(new["certificateId"]) == "REVOKED"


def test_a_renewal_whose_outcome_is_the_current_certificate_retires_nothing(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a device that renewed and, past the hold, renews again from its old certificate,
    # and ACM PCA answering that request with the certificate the row names already
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    current = fleet.renew(device.dsn, old)["certificateId"]
    fleet.later(UNCONFIRMED_HOLD_SECONDS)
    row = fleet.services.store.get(device.dsn)
    assert row is not None
    monkeypatch.setattr(fleet.services.pca, "issue", lambda *_: row.pca_certificate_arn)
    # WHEN the renewal runs
    result = fleet.renew(device.dsn, old)
    # THEN the device is answered with that certificate, which stays ACTIVE and named
    assert result == {"result": "ACCEPTED", "certificateId": current}
    assert (fleet.status(old), fleet.status(current)) == ("ACTIVE", "ACTIVE")
    assert not fleet.revoked_in_pca(current)
    after = fleet.services.store.get(device.dsn)
    assert after is not None and after.certificate_id == current
    assert after.intent is None and not after.retiring and not after.lease_request_id
    assert after.superseded is not None and after.superseded.certificate_id == old


def test_a_renewal_from_before_a_ca_rotation_is_held_then_renewed_not_failed(
    fleet: Fleet,
) -> None:
    # GIVEN a device whose unconfirmed certificate came from the CA the stack used before a
    # rotation (its ACM PCA ARN is under another CA: this one cannot fetch it)
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    csr = make_csr()
    current = fleet.renew(device.dsn, old, csr)["certificateId"]
    row = fleet.services.store.get(device.dsn)
    assert row is not None
    earlier_ca = row.pca_certificate_arn.replace(fleet.env["CA_ARN"], fleet.env["CA_ARN"] + "0")
    boto3.client("dynamodb").update_item(
        TableName=fleet.env["DEVICES_TABLE"],
        Key={"dsn": {"S": device.dsn}},
        UpdateExpression="SET pca_certificate_arn = :arn",
        ExpressionAttributeValues={":arn": {"S": earlier_ca}},
    )
    issued = fleet.issued_count()
    # WHEN the device asks again from its old certificate, THEN it is held like a stale request
    # (not failed on a certificate this CA cannot fetch) ...
    assert fleet.renew(device.dsn, old, csr)["code"] == "RENEWAL_UNCONFIRMED"
    assert fleet.issued_count() == issued and fleet.status(current) == "ACTIVE"
    # ... and after the hold it gets a certificate from the CA in use
    fleet.later(UNCONFIRMED_HOLD_SECONDS)
    result = fleet.renew(device.dsn, old)
    assert result["result"] == "ACCEPTED", result
    assert (fleet.status(current), fleet.status(result["certificateId"])) == ("REVOKED", "ACTIVE")


# ------------------------------------------------------- the next issuing CA under the same root

SUBORDINATE = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"


def next_issuing_ca(root_arn: str) -> str:
    """A second issuing CA signed by the stack's root, activated with the root's chain."""
    pca = boto3.client("acm-pca", region_name=REGION)
    arn = pca.create_certificate_authority(
        CertificateAuthorityConfiguration={
            "KeyAlgorithm": "EC_prime256v1",
            "SigningAlgorithm": "SHA256WITHECDSA",
            "Subject": {"CommonName": "IoT Device Onboarding Issuing CA 2"},
        },
        CertificateAuthorityType="SUBORDINATE",
    )["CertificateAuthorityArn"]
    csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
    signed = pca.issue_certificate(
        CertificateAuthorityArn=root_arn,
        Csr=csr.encode(),
        SigningAlgorithm="SHA256WITHECDSA",
        TemplateArn=SUBORDINATE,
        Validity={"Type": "YEARS", "Value": 2},
    )["CertificateArn"]
    certificate = pca.get_certificate(CertificateAuthorityArn=root_arn, CertificateArn=signed)
    pca.import_certificate_authority_certificate(
        CertificateAuthorityArn=arn,
        Certificate=certificate["Certificate"].encode(),
        CertificateChain=certificate["CertificateChain"].encode(),
    )
    return arn


def revoked_at(ca_arn: str, certificate_pem: str) -> bool:
    ca = acmpca_backends[DEFAULT_ACCOUNT_ID][REGION].certificate_authorities[ca_arn]
    return certificate_facts(certificate_pem).serial_hex in ca.revoked_certificates


def pem_of(fleet: Fleet, certificate_id: str) -> str:
    description = fleet.iot.describe_certificate(certificateId=certificate_id)
    return str(description["certificateDescription"]["certificatePem"])


def test_a_device_on_the_old_issuing_ca_renews_onto_the_next_and_its_old_one_ends_at_its_issuer(
    fleet: Fleet, stack: Any
) -> None:
    # GIVEN a device provisioned by the stack's issuing CA, which the device reached through
    # the root it pins
    root_arn = stack.outputs["CertificateAuthorityArn"]
    pca = boto3.client("acm-pca", region_name=REGION)
    root_pem = pca.get_certificate_authority_certificate(CertificateAuthorityArn=root_arn)[
        "Certificate"
    ]
    device = Device(unique_dsn())
    old = fleet.provision(device)
    old_pem = pem_of(fleet, old)
    first_ca = fleet.env["CA_ARN"]
    # ... and then the next issuing CA under the same root, the one the functions issue from
    second_ca = next_issuing_ca(root_arn)
    fleet.services.pca._ca_arn = second_ca  # type: ignore[attr-defined]  # what CA_ARN now says

    # WHEN the device renews with a key of its own
    key = ec_key()
    fleet.later()
    result = fleet.renew(device.dsn, old, make_csr(key))

    # THEN its new certificate is the next issuing CA's, and the answer's chain leads the
    # device from it to the root it already pins: no firmware change
    assert result["result"] == "ACCEPTED", result
    ((_, answer),) = fleet.answers(device.dsn)
    new = answer["certificateId"]
    chain = x509.load_pem_x509_certificates(answer["certificateChainPem"].encode())
    second_pem = pca.get_certificate_authority_certificate(CertificateAuthorityArn=second_ca)
    assert chain[0] == x509.load_pem_x509_certificate(second_pem["Certificate"].encode())
    trusted = trust.verify_device_certificate(
        answer["certificatePem"],
        root_pem,
        device.dsn,
        key,
        chain_pem=answer["certificateChainPem"],
    )
    assert [c.subject for c in trusted.chain] == [
        chain[0].subject,
        x509.load_pem_x509_certificate(root_pem.encode()).subject,
    ]
    # ... and the certificate it had is not the next CA's to fetch: the row names the issuer
    row = fleet.services.store.get(device.dsn)
    assert row is not None and row.pca_certificate_arn.startswith(second_ca + "/")

    # WHEN it confirms, connected with the new certificate
    assert fleet.publish(device.dsn, new, certificateId=new)["result"] == "CONFIRMED"

    # THEN the old certificate is revoked in IoT and at the CA that issued it, the first
    # issuing CA, and the next one revoked nothing
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "ACTIVE")
    assert revoked_at(first_ca, old_pem)
    assert (
        not acmpca_backends[DEFAULT_ACCOUNT_ID][REGION]
        .certificate_authorities[second_ca]
        .revoked_certificates
    )
    # ... and the device's new certificate, asked of the CA that issued it, is the one it has
    fetched = fleet.services.pca.fetch(row.pca_certificate_arn)
    assert fetched is not None
    assert fetched.certificate_pem.strip() == answer["certificatePem"].strip()
