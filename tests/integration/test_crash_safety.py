"""A request killed between any two AWS calls, or one whose answer is lost, breaks nothing.

For first provisioning, rotation and revocation, a device's renewal over MQTT (also from the
certificate it renewed from, having lost the answer) and its confirm, and for every AWS call k
the request makes: the process dies just before call k, or after the last call (nothing after
reaches AWS, the rollback included; dying just after call k leaves AWS as dying before call
k+1, so those are not tried twice: ``Crash.points``), or, for every write, the answer is lost
once. Then, separately,
the owner (or the device) retries (once the dead request's lease has expired), or the sweeper
runs alone. After either, the invariants hold:

- at most one ACTIVE certificate for the device's thing, attached to it, named by the row;
  during a renewal only, two: the row's and its superseded one, both attached;
- the row names only an ACTIVE certificate; every other certificate issued for the device is
  REVOKED in IoT, detached, revoked in ACM PCA, and has its REVOKE in the audit trail;
- nothing is left half-done on the row (no intent, nothing retiring, no lease);
- the row is in the sparse expiry index exactly while it names an ACTIVE certificate;
- the owner's retry succeeds; a revocation's 200 means IoT has the certificate REVOKED.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from moto.acmpca.models import acmpca_backends
from moto.iot.models import iot_backends

from provisioning.adapters.composition import get_services
from provisioning.adapters.store import expiry_shard
from provisioning.domain.budget import Budget
from provisioning.domain.crypto import certificate_facts, common_name_for
from provisioning.lifecycle.sweep import sweep
from provisioning.ports import Services
from provisioning.usecases.renew import UNCONFIRMED_HOLD_SECONDS
from tests.support.crash import Crash, InlineExecutor, ProcessDeath
from tests.support.csr import make_csr
from tests.support.iam import Call, CallRecorder, not_granted
from tests.support.lambda_support import (
    Device,
    FakeLambdaContext,
    api_event,
    fault,
    recording,
    unique_dsn,
)
from tests.support.moto_state import stored_item
from tests.support.rule_events import rule_event

ALICE = "sub-alice"
ACCOUNT, REGION = "123456789012", "us-east-1"


@dataclass
class World:
    services: Services
    env: dict[str, str]
    dynamodb: Any
    recorder: CallRecorder
    offset: timedelta = timedelta()

    def later(self, seconds: int = 300) -> None:
        """Let time pass: every lease taken so far has expired, and so has a renewal's hold on
        requests for another key (renewal.UNCONFIRMED_HOLD_SECONDS)."""
        self.offset += timedelta(seconds=seconds)

    @property
    def clients(self) -> tuple[Any, ...]:
        s = self.services
        assert s.publisher is not None
        return (
            s.pca.client,  # type: ignore[attr-defined]
            s.iot.client,  # type: ignore[attr-defined]
            s.store.client,  # type: ignore[attr-defined]
            s.publisher.client(),  # type: ignore[attr-defined]
        )


@pytest.fixture
def world(provisioning_env: dict[str, str]) -> Iterator[World]:
    get_services.cache_clear()
    services = get_services()
    services.sleep = lambda _seconds: None
    services.executor = InlineExecutor()  # type: ignore[assignment]
    # A warm container: the IoT endpoint is looked up once per container, so a request's calls
    # (and their numbers) are the same from the first case to the last.
    assert services.iot.data_endpoint
    recorder = CallRecorder(
        {
            provisioning_env["DEVICES_TABLE"]: "DevicesTable",
            provisioning_env["AUDIT_TABLE"]: "AuditTable",
            provisioning_env["ALLOWLIST_TABLE"]: "AllowlistTable",
        }
    )
    built = World(services, provisioning_env, boto3.client("dynamodb"), recorder)
    for client in built.clients:
        recorder.watch(client)
    services.clock = lambda: datetime.now(UTC) + built.offset
    CURRENT.recorder, CURRENT.world = recorder, built
    yield built
    CURRENT.recorder, CURRENT.world = None, None
    get_services.cache_clear()


class _Current:
    recorder: CallRecorder | None = None
    world: World | None = None


CURRENT = _Current()


def call(method: str, path: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    event = api_event(body, ALICE, "Members", method=method, path=path)
    assert CURRENT.recorder is not None
    with CURRENT.recorder.acting_as("ProvisioningFunction"):
        response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


# What each device holds, as its firmware would: the certificate ids it can connect with, the
# one it works with first (a renewal's answer moves the new one in front).
HELD: dict[str, list[str]] = {}


def renewal_event(device: Device, principal: str, **fields: str) -> dict[str, Any]:
    confirm = set(fields) == {"certificateId"}
    return rule_event(f"device_{device.dsn}", principal, fields, confirm=confirm)


def renew(device: Device, principal: str | None = None) -> tuple[int, dict[str, Any]]:
    """The device publishes a CSR on its renew topic, from the certificate it works with."""
    from provisioning.handlers.renewal import lambda_handler

    event = renewal_event(device, principal or HELD[device.dsn][0], csr=make_csr())
    assert CURRENT.recorder is not None
    with CURRENT.recorder.acting_as("RenewalFunction"):
        result = lambda_handler(event, FakeLambdaContext(function_name="RenewalFunction"))
    if result["result"] != "ACCEPTED":
        return 400, {"code": result["code"]}
    return 200, {"certificateId": result["certificateId"]}


def confirm(device: Device) -> tuple[int, dict[str, Any]]:
    """The device, connected with its new certificate, confirms it."""
    from provisioning.handlers.renewal import lambda_handler

    new = HELD[device.dsn][0]
    event = renewal_event(device, new, certificateId=new)
    assert CURRENT.recorder is not None
    with CURRENT.recorder.acting_as("RenewalFunction"):
        result = lambda_handler(event, FakeLambdaContext(function_name="RenewalFunction"))
    if result["result"] != "CONFIRMED":
        return 400, {"code": result["code"]}
    return 200, {"certificateId": new}


def run_sweeper(world: World) -> None:
    with world.recorder.acting_as("SweeperFunction"):
        sweep(world.services, Budget(FakeLambdaContext(60).get_remaining_time_in_millis), "run")


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    prepare: Callable[[Device], None]  # what happened before the request under test
    request: Callable[[Device], tuple[int, dict[str, Any]]]
    revokes: bool = False


def _provision(device: Device) -> tuple[int, dict[str, Any]]:
    return call("POST", "/certificate", device.body())


def _revoke(device: Device) -> tuple[int, dict[str, Any]]:
    return call("DELETE", f"/devices/{device.dsn}/certificate")


def _provisioned(device: Device) -> None:
    status, answer = _provision(device)
    assert status == 200, answer
    HELD[device.dsn] = [answer["certificateId"]]


def _provisioned_a_while_ago(device: Device) -> None:
    """Provisioned long enough ago to renew (past the minimum renewal interval)."""
    _provisioned(device)
    _time_passes()


def _time_passes() -> None:
    assert CURRENT.world is not None
    settings = CURRENT.world.services.settings
    CURRENT.world.later(max(settings.renewal_min_interval_seconds, UNCONFIRMED_HOLD_SECONDS) + 1)


def _renewed_answer_lost(device: Device) -> None:
    """Provisioned, then renewed; the accepted answer never reached the device, which asks
    again (with a new key) once its stale requests can no longer arrive."""
    _provisioned_a_while_ago(device)
    status, answer = renew(device)
    assert status == 200, answer
    _time_passes()


def _renewed_and_switched(device: Device) -> None:
    """Provisioned, then renewed; the device connects with the new certificate."""
    _provisioned_a_while_ago(device)
    status, answer = renew(device)
    assert status == 200, answer
    HELD[device.dsn].insert(0, answer["certificateId"])


SCENARIOS = {
    "first provisioning": Scenario("first provisioning", lambda _d: None, _provision),
    "rotation": Scenario("rotation", _provisioned, _provision),
    "revocation": Scenario("revocation", _provisioned, _revoke, revokes=True),
    "renewal": Scenario("renewal", _provisioned_a_while_ago, renew),
    "renewal again, answer lost": Scenario("renewal again", _renewed_answer_lost, renew),
    "confirm": Scenario("confirm", _renewed_and_switched, confirm),
}


def _calls_of(world: World, scenario: Scenario) -> list[str]:
    device = Device(unique_dsn())
    scenario.prepare(device)
    with Crash().watching(*world.clients) as watch:
        status, answer = scenario.request(device)
    assert status == 200, answer
    return watch.calls


# --------------------------------------------------------------------------- invariants


def _thing(world: World, dsn: str) -> str:
    return f"{world.env['THING_PREFIX']}_{dsn}"


def invariant_problems(world: World, dsn: str, revoked: bool) -> list[str]:
    thing = _thing(world, dsn)
    iot = iot_backends[ACCOUNT][REGION]
    ca = acmpca_backends[ACCOUNT][REGION].certificate_authorities[world.env["CA_ARN"]]
    certificates = {}
    for cert in iot.certificates.values():
        parsed = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
        cn = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cn and cn[0].value == common_name_for(thing):
            certificates[cert.certificate_id] = cert
    attached = {
        principal.rsplit("/", 1)[1]
        for principal, name in iot.principal_things
        if name == thing and "/" in principal
    }
    item = stored_item(world.env["DEVICES_TABLE"], {"dsn": {"S": dsn}})
    row = {k: v.get("S", v.get("N", "…")) for k, v in item.items()}
    superseded = item.get("superseded", {}).get("M", {}).get("certificate_id", {}).get("S", "")
    audited = {
        entry["certificate_id"]["S"]
        for entry in world.dynamodb.query(
            TableName=world.env["AUDIT_TABLE"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"device#{dsn}"}},
        )["Items"]
        if entry["event"]["S"] == "REVOKE" and "certificate_id" in entry
    }

    problems = []
    named = row.get("certificate_id", "")
    # During a renewal (only then) the row also names the certificate the device renewed from.
    names = {named, superseded} - {""}
    active = sorted(i for i, c in certificates.items() if c.status == "ACTIVE")
    if len(active) > len(names) or len(active) > 2:
        problems.append(f"{len(active)} ACTIVE certificates")
    for each in sorted(names):
        if each not in active:
            problems.append(f"the row names a {certificates[each].status} certificate")
    if superseded and not named:
        problems.append("a superseded certificate on a row with no certificate")
    if superseded and (
        "sweep" not in row or int(row.get("lease_until", "0")) > int(row.get("grace_until", "0"))
    ):
        problems.append("a superseded certificate the sweeper will not find at its deadline")
    for cert_id in active:
        if cert_id not in names:
            problems.append("an ACTIVE certificate the row does not name")
        if cert_id not in attached:
            problems.append("an ACTIVE certificate attached to no thing")
    for cert_id, cert in certificates.items():
        if cert_id in names:
            continue
        if cert.status != "REVOKED":
            problems.append(f"a replaced certificate left {cert.status}")
        if cert_id in attached:
            problems.append("a replaced certificate still attached")
        if certificate_facts(cert.certificate_pem).serial_hex not in ca.revoked_certificates:
            problems.append("a replaced certificate not revoked in ACM PCA")
        if cert_id not in audited:
            problems.append("a revocation missing from the audit trail")
    # The sparse ExpiryIndex lists exactly the rows naming an ACTIVE certificate.
    in_index = bool(row.get("expiry_shard")) and bool(row.get("not_after"))
    if named and row.get("status") == "ACTIVE":
        if not in_index or row["expiry_shard"] != expiry_shard(dsn):
            problems.append("a row naming an ACTIVE certificate is missing from the expiry index")
    elif in_index or "expiry_shard" in row:
        problems.append("a row naming no ACTIVE certificate is left in the expiry index")
    leftovers = sorted(k for k in row if k in ("intent", "lease_request_id") or "retire_" in k)
    if leftovers:
        problems.append(f"left on the row: {leftovers}")
    if revoked and (active or row.get("status") != "REVOKED"):
        problems.append("the revoked device is not REVOKED")
    return problems


# --------------------------------------------------------------------------- the cases


def _run_case(world: World, scenario: Scenario, crash: Crash, recovery: str) -> list[str]:
    device = Device(unique_dsn())
    scenario.prepare(device)
    try:
        with crash.watching(*world.clients):
            status, answer = scenario.request(device)
    except ProcessDeath:
        status, answer = 0, {}
    problems = []
    if status == 200 and scenario.revokes:
        cert_id = answer["revokedCertificateId"]
        if iot_backends[ACCOUNT][REGION].certificates[cert_id].status != "REVOKED":
            problems.append("200 REVOKED while IoT has the certificate ACTIVE")
    if status == 200 and not scenario.revokes:
        row = world.services.store.get(device.dsn)
        if row is None or row.certificate_id != answer["certificateId"]:
            problems.append("200 with a certificate the row does not name")

    world.later()
    if recovery == "owner":
        status, answer = scenario.request(device)
        if status != 200:
            problems.append(f"the owner's retry answered {status} {answer.get('code')}")
        elif (
            not scenario.revokes
            and world.services.store.get(device.dsn).certificate_id != (answer["certificateId"])
        ):
            problems.append("the retry's certificate is not the row's")
    else:
        run_sweeper(world)
    revoked = scenario.revokes and (recovery == "owner" or status == 200)
    return problems + invariant_problems(world, device.dsn, revoked)


@pytest.mark.parametrize("recovery", ["owner", "sweeper"])
@pytest.mark.parametrize("mode", ["die", "lose"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_request_killed_at_any_call_breaks_no_invariant(
    world: World, scenario: str, mode: str, recovery: str
) -> None:
    plan = SCENARIOS[scenario]
    calls = _calls_of(world, plan)
    # GIVEN the calls the request makes when nothing goes wrong (a floor, so the loop below
    # can never be empty or skip the steps that matter)
    assert {"UpdateItem", "RegisterCertificate", "UpdateCertificate"} & set(calls)
    failures = {}
    for point, crash in Crash.points(mode, calls):
        # WHEN the request dies before any of its calls or after the last (or loses a write's
        # answer), and then the owner retries or the sweeper runs alone
        problems = _run_case(world, plan, crash, recovery)
        if mode == "die" and not crash.dead:
            problems.append("the request never reached the call it should die at")
        if mode == "lose" and not crash.lost:
            problems.append("no answer was lost")
        if problems:
            failures[point] = problems
    # THEN the invariants hold after every one of them
    assert failures == {}, f"{len(calls)} calls: {calls}"
    # ... and the template grants each function every call it made on all of these paths
    # (moto checks no IAM: an ungranted call would pass offline and fail in AWS). The recorder
    # saw them: every operation the request made is among the actions it noted.
    noted = {c.action.split(":", 1)[1] for c in world.recorder.calls}
    assert set(calls) - {"TransactWriteItems"} <= noted, noted
    assert not_granted(world.recorder.calls) == []


def test_every_call_each_function_makes_is_granted_by_the_template(world: World) -> None:
    """moto checks no IAM: an ungranted call would pass offline and fail in AWS.

    Each case of ``test_a_request_killed_at_any_call_breaks_no_invariant`` checks the grants of
    every call made on its own paths (each scenario killed before or after each call, or losing
    each write's answer, then the owner's retry or the sweeper alone). This test takes the paths
    none of those cases take."""
    # GIVEN, while the sweeper has no other row to see, a renewal whose grace period ends (the
    # sweeper retires the superseded certificate), and a renewal refused
    renewed = Device(unique_dsn())
    _renewed_answer_lost(renewed)
    assert renew(renewed, "ab" * 32) == (400, {"code": "CERTIFICATE_NOT_CURRENT"})
    world.later(int(world.env.get("RENEWAL_GRACE_HOURS", "72")) * 3600 + 60)
    run_sweeper(world)
    assert invariant_problems(world, renewed.dsn, revoked=False) == []
    assert world.services.store.get(renewed.dsn).superseded is None  # type: ignore[union-attr]
    # ... and a status change IoT refuses, which makes the request read the status back
    device = Device(unique_dsn())
    _provisioned(device)
    with fault(world.services.iot.client, "UpdateCertificate", times=3):  # type: ignore[attr-defined]
        assert _revoke(device)[0] == 502
    assert _revoke(device)[0] == 200
    actions = {c.action for c in world.recorder.calls}
    assert {"iot:DescribeCertificate", "acm-pca:GetCertificate", "dynamodb:Query"} <= actions
    # THEN the template grants each function every call it made
    assert not_granted(world.recorder.calls) == []


_ROW_WRITES = ("UpdateItem", "TransactWriteItems")


def _commit_of(world: World, scenario: Scenario) -> int:
    """The number of the request's commit (its second row write, after the claim)."""
    probe = Device(unique_dsn())
    scenario.prepare(probe)
    with Crash().watching(*world.clients) as watch:
        assert scenario.request(probe)[0] == 200
    # the claim, then the commit that writes down what is left to do
    row_writes = [n for n, name in enumerate(watch.calls, 1) if name in _ROW_WRITES]
    return row_writes[1]


def _dies_after(world: World, scenario: Scenario, device: Device, commit: int) -> None:
    """The request dies just after call ``commit``, leaving the rest of its work (certificates
    to retire, a thing to take out of its group) on the row for whoever comes next."""
    scenario.prepare(device)
    with pytest.raises(ProcessDeath), Crash(die_after=commit).watching(*world.clients):
        scenario.request(device)
    world.later()


def _release(device: Device) -> tuple[int, dict[str, Any]]:
    return call("DELETE", f"/devices/{device.dsn}")


def test_the_recovery_calls_of_the_sweeper_and_the_renewal_function_are_granted(
    world: World,
) -> None:
    """Two recovery paths the scenarios above never take: the sweeper losing the answer to each
    of its own writes (its claim's included, which it then reads back), and the renewal
    function finishing a release that died (it takes the thing out of the fleet's group)."""
    # GIVEN a revocation and a release that each died just after their commit
    revocation = SCENARIOS["revocation"]
    release = Scenario("release", _provisioned, _release, revokes=True)
    revocation_commit, release_commit = _commit_of(world, revocation), _commit_of(world, release)
    _dies_after(world, revocation, Device(unique_dsn()), revocation_commit)
    with Crash().watching(*world.clients) as watch:
        run_sweeper(world)
    assert "UpdateItem" in watch.calls, watch.calls  # the sweeper claimed the row
    # WHEN the sweeper, finishing such a request, loses the answer to each of its writes
    for k in Crash(calls=watch.calls).writes:
        device = Device(unique_dsn())
        _dies_after(world, revocation, device, revocation_commit)
        crash = Crash(lose=k)
        with crash.watching(*world.clients):
            run_sweeper(world)
        assert crash.lost, (k, crash.calls)
        assert invariant_problems(world, device.dsn, revoked=True) == []
    # ... and a device whose release died asks to renew with its old certificate, before the
    # sweeper came by
    released = Device(unique_dsn())
    _dies_after(world, release, released, release_commit)
    assert renew(released)[0] == 400
    # THEN each of those calls was made, and the template grants every call each function made
    calls = world.recorder.calls
    assert Call("SweeperFunction", "dynamodb:GetItem", "DevicesTable") in calls
    assert Call("RenewalFunction", "iot:RemoveThingFromThingGroup") in calls
    assert not_granted(calls) == []


def test_a_request_that_outlived_its_lease_undoes_only_its_own_certificate(world: World) -> None:
    # GIVEN a provisioned device, and a rotation A that stalls after claiming (outliving its
    # lease) while the owner's next rotation B takes the device over and finishes
    device = Device(unique_dsn())
    status, first = _provision(device)
    assert status == 200
    takeover: list[tuple[int, dict[str, Any]]] = []

    def b_takes_over_while_a_stalls(**_: Any) -> None:
        if not takeover:
            takeover.append((0, {}))
            world.later()  # A's lease has expired
            takeover[0] = _provision(device)

    pca = world.services.pca.client  # type: ignore[attr-defined]
    iot = world.services.iot.client  # type: ignore[attr-defined]
    event = "before-call.acm-pca.IssueCertificate"
    pca.meta.events.register(event, b_takes_over_while_a_stalls)
    try:
        with recording(iot, "UpdateCertificate") as changes:
            status, answer = _provision(device)  # A wakes up after B's rotation
    finally:
        pca.meta.events.unregister(event, b_takes_over_while_a_stalls)

    # THEN A is told another request has the device, and B's rotation stands
    assert (status, answer["code"]) == (409, "REQUEST_IN_FLIGHT"), answer
    ((b_status, b_answer),) = takeover
    assert b_status == 200, b_answer
    # ... A never tried to put back the certificate B rotated away from (it is B's to manage)
    old = first["certificateId"]
    assert [c["newStatus"] for c in changes if c["certificateId"] == old] == ["INACTIVE", "REVOKED"]
    assert invariant_problems(world, device.dsn, revoked=False) == []


@pytest.mark.parametrize("mode", ["die", "lose"])
def test_a_sweeper_killed_while_retiring_an_expired_renewal_is_finished_by_the_next_run(
    world: World, mode: str
) -> None:
    # GIVEN a device that renewed and never confirmed, and the calls a sweep makes to retire
    # its superseded certificate once the grace period is over
    grace = int(world.env.get("RENEWAL_GRACE_HOURS", "72")) * 3600 + 60

    def expired_renewal() -> Device:
        device = Device(unique_dsn())
        _renewed_answer_lost(device)
        world.later(grace)
        return device

    expired_renewal()
    with Crash().watching(*world.clients) as watch:
        run_sweeper(world)
    calls = watch.calls
    assert "RevokeCertificate" in calls
    failures = {}
    for point, crash in Crash.points(mode, calls):
        # WHEN the sweeper dies before any of its calls or after the last (or loses a write's
        # answer), and runs again later
        device = expired_renewal()
        try:
            with crash.watching(*world.clients):
                run_sweeper(world)
        except ProcessDeath:
            pass
        world.later()
        run_sweeper(world)
        # THEN the superseded certificate is retired and the row settled
        problems = invariant_problems(world, device.dsn, revoked=False)
        row = world.services.store.get(device.dsn)
        if row is None or row.superseded is not None:
            problems.append("the superseded certificate outlived its grace period")
        if problems:
            failures[point] = problems
    assert failures == {}, calls
