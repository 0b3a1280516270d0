"""A device whose certificate expired while it was offline comes back through the app: its owner
provisions it again (POST /certificate; with the device's attestation when RequireAttestation is
on), and it keeps its thing, its owner and its history. The clock of the function is moved past
the certificate's notAfter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from provisioning.ports import Services
from tests.integration.test_attestation import (
    FactoryDevice,
    attested,
    certificate_status,
    listed,
)
from tests.integration.test_attestation import attesting as attesting  # the fixture
from tests.integration.test_attestation import provision as att_provision
from tests.integration.test_provision_api import (
    ADMIN,
    ALICE,
    BOB,
    audit_events,
    invoke,
    provision,
    record,
    thing_certificates,
    thing_name,
)
from tests.support.lambda_support import Device, api_event, recording, unique_dsn


@pytest.fixture
def expired(services: Services) -> Iterator[None]:
    """The function's clock a day past the end of every certificate issued now."""
    validity = timedelta(days=services.settings.cert_validity_days + 1)
    services.clock = lambda: datetime.now(UTC) + validity
    yield


def provisioned(services: Services, dsn: str) -> str:
    """A device Alice onboarded (at the real time); its certificate id."""
    clock = services.clock
    services.clock = lambda: datetime.now(UTC)
    status, answer, _ = provision(Device(dsn), ALICE)
    services.clock = clock
    assert status == 200, answer
    return str(answer["certificateId"])


def test_the_owner_recovers_an_expired_device(services, aws, provisioning_env, expired) -> None:
    # GIVEN Alice's device, whose certificate has expired (the owner sees it EXPIRED)
    device = Device(unique_dsn())
    old = provisioned(services, device.dsn)
    status, shown, _ = invoke(api_event(None, ALICE, method="GET", path=f"/devices/{device.dsn}"))
    assert (status, shown["expiry"]) == (200, "EXPIRED"), shown

    # WHEN she onboards it again through the app (the device made a new key)
    device.key = x25519.X25519PrivateKey.generate()
    status, answer, _ = provision(device, ALICE)

    # THEN it gets a new certificate for the same thing, the only one attached and ACTIVE ...
    assert status == 200, answer
    thing = thing_name(provisioning_env, device.dsn)
    assert answer["thingName"] == thing
    new = answer["certificateId"]
    assert new != old
    assert thing_certificates(aws, thing) == {new: "ACTIVE"}
    # ... the expired one is retired as a rotation's is
    described = aws["iot"].describe_certificate(certificateId=old)["certificateDescription"]
    assert described["status"] == "REVOKED"
    # ... the device is still Alice's, and the row names the new certificate
    row = record(aws, provisioning_env, device.dsn)
    assert row is not None and (row["owner_sub"], row["certificate_id"]) == (ALICE, new)
    # ... and the audit trail keeps the first issue and records a recovery of the expired one
    trail = audit_events(aws, provisioning_env, device.dsn)
    assert sorted(e["event"] for e in trail) == ["ISSUE", "RECOVER", "REVOKE"]
    (recovered,) = (e for e in trail if e["event"] == "RECOVER")
    assert (recovered["certificate_id"], recovered["expired_certificate_id"]) == (new, old)
    assert recovered["actor"] == ALICE


def test_another_member_cannot_recover_someone_elses_expired_device(
    services, aws, provisioning_env, expired
) -> None:
    device = Device(unique_dsn())
    old = provisioned(services, device.dsn)
    before = record(aws, provisioning_env, device.dsn)

    with recording(services.pca.client, "IssueCertificate") as issued:
        status, answer, _ = provision(Device(device.dsn), BOB)

    assert (status, answer["code"]) == (409, "DEVICE_OWNED")
    assert issued == []
    assert record(aws, provisioning_env, device.dsn) == before
    assert thing_certificates(aws, thing_name(provisioning_env, device.dsn)) == {old: "ACTIVE"}
    assert [e["event"] for e in audit_events(aws, provisioning_env, device.dsn)] == ["ISSUE"]


def test_an_administrator_recovers_a_device_for_its_owner(
    services, aws, provisioning_env, expired
) -> None:
    device = Device(unique_dsn())
    provisioned(services, device.dsn)

    status, answer, _ = provision(Device(device.dsn), ADMIN, groups="Administrators")

    assert status == 200, answer
    row = record(aws, provisioning_env, device.dsn)
    assert row is not None and row["owner_sub"] == ALICE
    events = [e["event"] for e in audit_events(aws, provisioning_env, device.dsn)]
    assert "RECOVER" in events


@pytest.mark.parametrize("ended", ["revoked", "released"])
def test_a_revoked_or_released_device_is_not_recovered_but_issued_as_before(
    services, aws, provisioning_env, expired, ended
) -> None:
    # GIVEN Alice's device, revoked or released, whose certificate would have expired by now
    device = Device(unique_dsn())
    provisioned(services, device.dsn)
    path = f"/devices/{device.dsn}" + ("/certificate" if ended == "revoked" else "")
    answered = invoke(api_event(None, ALICE, method="DELETE", path=path))
    assert answered[0] == 200, answered

    # WHEN she onboards it again
    status, answer, _ = provision(device, ALICE)

    # THEN it is a new issue, as for any revoked or released device: no recovery in the trail
    assert status == 200, answer
    events = [e["event"] for e in audit_events(aws, provisioning_env, device.dsn)]
    assert "RECOVER" not in events and events.count("ISSUE") == 2, events
    assert ("RELEASE" in events) is (ended == "released"), events


def test_with_attestation_on_a_recovery_needs_the_devices_attestation(attesting) -> None:
    # GIVEN a listed device its owner onboarded with its attestation, whose certificate expired
    world = attesting
    device = listed(world, FactoryDevice(unique_dsn()))
    status, first = attested_call(world, device)
    assert status == 200, first
    validity = timedelta(days=world.services.settings.cert_validity_days + 1)
    world.services.clock = lambda: datetime.now(UTC) + validity

    # WHEN the owner asks without the device's attestation, THEN nothing changes
    device.key = x25519.X25519PrivateKey.generate()
    status, refused = att_provision(world, device.attested_body(b"x" * 32, attestation=None))
    assert (status, refused["code"]) == (403, "ATTESTATION_REQUIRED"), refused
    assert certificate_status(world, first["certificateId"]) == "ACTIVE"

    # WHEN the app relays the device's attestation of its new key
    status, answer = attested_call(world, device)

    # THEN the device is recovered: same thing, new certificate, the expired one retired
    assert status == 200, answer
    assert answer["thingName"] == first["thingName"]
    assert certificate_status(world, first["certificateId"]) == "REVOKED"
    assert certificate_status(world, answer["certificateId"]) == "ACTIVE"
    trail = audit_events(world.aws, world.env, device.dsn)
    assert sorted(e["event"] for e in trail) == ["ISSUE", "RECOVER", "REVOKE"]


def attested_call(world: Any, device: FactoryDevice) -> tuple[int, dict[str, Any]]:
    """The app's POST /certificate for the owner, with the device's attestation."""
    return att_provision(world, attested(world, device))
