"""Ending a device's access (revoke, block, release, a transfer's claim) retires every
certificate its owner's device holds, whatever renewal state it is in, revokes each at the CA
that issued it, and ends the device's live session; a row whose recovery keeps failing is
parked instead of starving the sweeper. The handler and the real adapters on moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto.acmpca.models import acmpca_backends
from moto.core import DEFAULT_ACCOUNT_ID

from provisioning.domain.budget import Budget
from provisioning.domain.errors import DependencyFailed
from provisioning.lifecycle.lease import MAX_SWEEP_ATTEMPTS
from provisioning.lifecycle.sweep import sweep
from tests.integration.fleet_support import ADMIN, ALICE, BOB, fleet_call
from tests.integration.test_renewal import REGION, Fleet
from tests.integration.test_renewal import fleet as fleet  # the fixture
from tests.support.crash import ProcessDeath
from tests.support.lambda_support import Device, FakeLambdaContext, unique_dsn


class Sessions:
    """IoT's data plane as the functions see it: which client ids were disconnected."""

    def __init__(self) -> None:
        self.disconnected: list[str] = []

    def disconnect(self, client_id: str) -> None:
        self.disconnected.append(client_id)


@pytest.fixture
def sessions(fleet: Fleet) -> Sessions:
    recorder = Sessions()
    fleet.services.connections = recorder
    return recorder


def renewed(fleet: Fleet) -> tuple[Device, str, str]:
    """A device inside a renewal's window: its new certificate not confirmed yet, the one it
    renewed from still ACTIVE (superseded)."""
    device = Device(unique_dsn())
    old = fleet.provision(device)
    fleet.later()
    new = fleet.renew(device.dsn, old)["certificateId"]
    assert (fleet.status(old), fleet.status(new)) == ("ACTIVE", "ACTIVE")
    return device, old, new


def revoke(fleet: Fleet, device: Device) -> None:
    fleet.revoke(device)


def block(fleet: Fleet, device: Device) -> None:
    status, answer = fleet_call("POST", f"/allowlist/{device.dsn}/block", ADMIN)
    assert status == 200, answer


def release(fleet: Fleet, device: Device) -> None:
    status, answer = fleet_call("DELETE", f"/devices/{device.dsn}", ALICE)
    assert status == 200 and answer["finished"], answer


def claim(fleet: Fleet, device: Device) -> None:
    status, started = fleet_call("POST", f"/devices/{device.dsn}/transfer", ALICE)
    assert status == 200, started
    body = {"code": started["transferCode"]}
    status, answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, body)
    assert status == 200 and answer["previousCertificateRevoked"], answer


ENDINGS: dict[str, Callable[[Fleet, Device], None]] = {
    "revoke": revoke,
    "block": block,
    "release": release,
    "claim": claim,
}


@pytest.mark.parametrize("end", ENDINGS.values(), ids=ENDINGS.keys())
def test_ending_access_inside_a_renewal_window_retires_both_certificates(
    fleet: Fleet, sessions: Sessions, end: Callable[[Fleet, Device], None]
) -> None:
    # GIVEN a device that renewed and has not confirmed: two ACTIVE certificates
    device, old, new = renewed(fleet)
    if end is block and not fleet.env.get("ALLOWLIST_TABLE"):
        pytest.skip("the stack under test has no allowlist")

    # WHEN its access ends
    end(fleet, device)

    # THEN neither certificate the owner's device holds works any more, anywhere ...
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "REVOKED")
    assert fleet.attached(device.dsn) == set()
    assert fleet.revoked_in_pca(old) and fleet.revoked_in_pca(new)
    # ... each revocation is audited ...
    revoked = {cert for event, cert in fleet.audit(device.dsn) if event == "REVOKE"}
    assert {old, new} <= revoked
    # ... and the device's live session was ended at once, by its client id (the thing name)
    assert sessions.disconnected == [fleet.thing(device.dsn)]
    # ... with nothing left for the sweeper
    row = fleet.services.store.get(device.dsn)
    assert row is None or (row.superseded is None and not row.retiring)


def test_a_released_serial_provisioned_again_has_one_active_certificate(
    fleet: Fleet, sessions: Sessions
) -> None:
    # GIVEN a device released by its owner in the middle of a renewal
    device, old, new = renewed(fleet)
    release(fleet, device)

    # WHEN another user provisions the same serial
    newest = fleet.provision(Device(device.dsn), sub=BOB)

    # THEN the thing holds the new owner's certificate only
    assert fleet.attached(device.dsn) == {newest}
    assert [fleet.status(c) for c in (old, new, newest)] == ["REVOKED", "REVOKED", "ACTIVE"]


def test_revocation_goes_to_the_ca_that_issued_the_certificate(
    fleet: Fleet, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a device provisioned by the stack's CA, and then a change of CA (a new one issues)
    device = Device(unique_dsn())
    certificate_id = fleet.provision(device)
    first_ca = fleet.env["CA_ARN"]
    pca = boto3.client("acm-pca", region_name=REGION)
    second_ca = pca.create_certificate_authority(
        CertificateAuthorityConfiguration={
            "KeyAlgorithm": "EC_prime256v1",
            "SigningAlgorithm": "SHA256WITHECDSA",
            "Subject": {"CommonName": "next issuing CA"},
        },
        CertificateAuthorityType="ROOT",
    )["CertificateAuthorityArn"]
    fleet.services.pca._ca_arn = second_ca  # type: ignore[attr-defined]  # what CA_ARN now says

    # WHEN the owner revokes the device
    fleet.revoke(device)

    # THEN the revocation went to the CA that issued the certificate, and was audited as such
    assert fleet.revoked_in_pca(certificate_id)
    cas = acmpca_backends[DEFAULT_ACCOUNT_ID][REGION].certificate_authorities
    assert not cas[second_ca].revoked_certificates
    items = boto3.client("dynamodb").query(
        TableName=fleet.env["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{device.dsn}"}},
    )["Items"]
    revocations = [i for i in items if i["event"]["S"] == "REVOKE"]
    assert revocations and {i["ca_arn"]["S"] for i in revocations} == {first_ca}


class RefusingCa:
    """A Private CA that refuses every revocation (a CA deleted since, say)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def revoke(self, issuer_arn: str, serial_hex: str, reason: str) -> None:
        raise DependencyFailed("REVOKE_CERTIFICATE")


def run_sweeper(fleet: Fleet) -> dict[str, Any]:
    report = sweep(fleet.services, Budget(FakeLambdaContext(60).get_remaining_time_in_millis), "r")
    return vars(report)


def test_a_row_the_sweeper_cannot_finish_is_parked_and_never_starves_the_rest(
    fleet: Fleet, sessions: Sessions
) -> None:
    # GIVEN a revoked device whose revocation its CA keeps refusing
    real_ca = fleet.services.pca
    fleet.services.pca = RefusingCa(real_ca)
    stuck = Device(unique_dsn())
    fleet.provision(stuck)
    fleet.revoke(stuck)  # REVOKED in IoT: the answer is 200, ACM PCA is left to the sweeper
    row = fleet.services.store.get(stuck.dsn)
    assert row is not None and row.retiring

    # WHEN the sweeper runs again and again
    reports = []
    for _ in range(MAX_SWEEP_ATTEMPTS + 2):
        fleet.later(1)
        reports.append(run_sweeper(fleet))

    # THEN after a bounded number of attempts (the request's own among them) the row is parked
    # once, and reported ...
    parked = [r["parked"] for r in reports]
    assert parked == [0] * (MAX_SWEEP_ATTEMPTS - 2) + [1] + [0] * 3, parked
    assert [r["devices_seen"] for r in reports][-2:] == [0, 0]
    assert all(stuck.dsn in r["parked_devices"] for r in reports[-3:])
    assert fleet.services.store.parked(10) == [stuck.dsn]
    # ... it is no longer among the rows the sweeper works on, while others are
    waiting = Device(unique_dsn())
    fleet.provision(waiting)
    fleet.revoke(waiting)
    fleet.later(1)
    due = fleet.services.store.due(int(fleet.services.clock().timestamp()), 50)
    assert waiting.dsn in due and stuck.dsn not in due
    assert run_sweeper(fleet)["parked_total"] == 1

    # WHEN the CA accepts revocations again and the owner repeats the revocation
    fleet.services.pca = real_ca
    fleet.revoke(stuck)

    # THEN it is finished and the row leaves the parked list
    row = fleet.services.store.get(stuck.dsn)
    assert row is not None and not row.retiring and row.sweep_attempts == 0
    assert fleet.services.store.parked(10) == []


@contextmanager
def dies_after(store: Any, method: str) -> Iterator[None]:
    """Within the block, the store's ``method`` applies, then the process dies before anything
    else runs."""
    real = getattr(store, method)

    def applied_then_killed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise ProcessDeath()

    setattr(store, method, applied_then_killed)
    try:
        with pytest.raises(ProcessDeath):
            yield
    finally:
        setattr(store, method, real)


def test_a_release_whose_request_died_is_finished_by_the_owner_repeating_it(
    fleet: Fleet, sessions: Sessions
) -> None:
    # GIVEN a release in a renewal's window whose request died right after its row write
    device, old, new = renewed(fleet)
    with dies_after(fleet.services.store, "commit_release"):
        fleet_call("DELETE", f"/devices/{device.dsn}", ALICE)
    assert fleet.status(old) == fleet.status(new) == "ACTIVE"  # nothing retired yet
    fleet.later(120)  # the dead request's lease has run out
    sessions.disconnected.clear()

    # WHEN another member repeats it, nothing happens for them ...
    status, answer = fleet_call("DELETE", f"/devices/{device.dsn}", BOB)
    assert (status, answer["code"]) == (404, "DEVICE_NOT_FOUND")
    assert fleet.status(old) == "ACTIVE"

    # ... and WHEN the owner repeats it
    status, answer = fleet_call("DELETE", f"/devices/{device.dsn}", ALICE)

    # THEN it is finished now: both certificates retired, the session ended, the row gone
    assert status == 200 and answer["released"] and answer["finished"], answer
    assert (fleet.status(old), fleet.status(new)) == ("REVOKED", "REVOKED")
    assert fleet.attached(device.dsn) == set()
    assert sessions.disconnected == [fleet.thing(device.dsn)]
    assert fleet.services.store.get(device.dsn) is None


def test_a_revocation_finished_by_the_device_s_next_request_ends_its_session(
    fleet: Fleet, sessions: Sessions
) -> None:
    # GIVEN a revocation whose request died right after its row write: nothing retired yet
    device = Device(unique_dsn())
    certificate_id = fleet.provision(device)
    with dies_after(fleet.services.store, "commit_revocation"):
        fleet.revoke(device)
    assert fleet.status(certificate_id) == "ACTIVE"
    fleet.later(120)
    sessions.disconnected.clear()

    # WHEN the device, still connected, asks to renew before the sweeper came by
    answer = fleet.renew(device.dsn, certificate_id)

    # THEN it is refused, the revocation is finished and its session is ended
    assert answer["result"] == "REJECTED", answer
    assert fleet.status(certificate_id) == "REVOKED"
    assert sessions.disconnected == [fleet.thing(device.dsn)]
