"""A claim or a release killed between any two AWS calls, or losing an answer, breaks nothing.

In the style of test_crash_safety.py: for every AWS call k the request makes, the process dies
just before it, or after the last call (``Crash.points``), or (for writes) its answer is lost
once. Then, separately,
the next request for the device runs (the claimant retries the claim, then provisions; for a
release, another member provisions the DSN), or the sweeper runs alone. After either:

- the certificate invariants hold (at most one ACTIVE certificate, named by the row; every other
  one REVOKED in IoT, detached, revoked in ACM PCA and audited; nothing half-done on the row);
- a claim left the device with exactly one owner: the claimant once its commit applied, the
  old owner (with the certificate untouched) otherwise;
- a release left no row, no ACTIVE certificate and the thing out of its group, or (its commit
  never applied) the device as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import test_crash_safety
from tests.integration.fleet_support import ADMIN, ALICE, BOB, fleet_call, fleet_event
from tests.integration.test_crash_safety import (
    ACCOUNT,
    CURRENT,
    REGION,
    World,
    invariant_problems,
    run_sweeper,
)
from tests.support.crash import Crash, ProcessDeath
from tests.support.iam import not_granted
from tests.support.lambda_support import Device, FakeLambdaContext, unique_dsn
from tests.support.moto_state import stored_item

world = test_crash_safety.world  # the same fixture: a warm container on moto, calls recorded


def call(method: str, path: str, sub: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    assert CURRENT.recorder is not None
    with CURRENT.recorder.acting_as("ProvisioningFunction"):
        response = lambda_handler(fleet_event(method, path, sub, body), FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def _owned_by_alice_with_transfer(device: Device) -> str:
    status, answer = call("POST", "/certificate", ALICE, device.body())
    assert status == 200, answer
    status, answer = call("POST", f"/devices/{device.dsn}/transfer", ALICE)
    assert status == 200, answer
    return str(answer["transferCode"])


def _claim(device: Device, code: str) -> tuple[int, dict[str, Any]]:
    return call("POST", f"/devices/{device.dsn}/claim", BOB, json.dumps({"code": code}))


def _release(device: Device, _code: str) -> tuple[int, dict[str, Any]]:
    return call("DELETE", f"/devices/{device.dsn}", ALICE)


def _row(world: World, dsn: str) -> dict[str, Any]:
    return stored_item(world.env["DEVICES_TABLE"], {"dsn": {"S": dsn}})


def _in_group(world: World, dsn: str) -> bool:
    from moto.iot.models import iot_backends

    iot = iot_backends[ACCOUNT][REGION]
    group = next(
        g for g in iot.thing_groups.values() if g.thing_group_name == world.env["THING_GROUP"]
    )
    return any(t.thing_name == f"{world.env['THING_PREFIX']}_{dsn}" for t in group.things.values())


def _after_claim(world: World, device: Device, code: str, recovery: str) -> list[str]:
    problems: list[str] = []
    if recovery == "next":
        status, answer = _claim(device, code)
        if status not in (200, 403):
            problems.append(f"the claimant's retry answered {status} {answer.get('code')}")
        if _row(world, device.dsn).get("owner_sub", {}).get("S") == BOB:
            status, answer = call("POST", "/certificate", BOB, device.body())
            if status != 200:
                problems.append(f"the new owner's provisioning answered {status}")
    else:
        run_sweeper(world)
    owner = _row(world, device.dsn).get("owner_sub", {}).get("S")
    if owner not in (ALICE, BOB):
        problems.append(f"the device's owner is {owner!r}")
    revoked = owner == BOB and recovery == "sweeper"
    return problems + invariant_problems(world, device.dsn, revoked)


def _after_release(world: World, device: Device, _code: str, recovery: str) -> list[str]:
    problems: list[str] = []
    if recovery == "next":
        status, answer = call("POST", "/certificate", BOB, device.body())
        if status == 409 and answer.get("code") == "DEVICE_OWNED":
            # The release never committed: the device is still Alice's, who releases it again.
            status, answer = _release(device, "")
            if status != 200:
                problems.append(f"the owner's retry answered {status} {answer.get('code')}")
            status, answer = call("POST", "/certificate", BOB, device.body())
        if status != 200:
            problems.append(f"the next provisioning answered {status} {answer.get('code')}")
        if not _in_group(world, device.dsn):
            problems.append("the re-provisioned thing is not in its group")
        return problems + invariant_problems(world, device.dsn, False)
    run_sweeper(world)
    row = _row(world, device.dsn)
    if row.get("status", {}).get("S") == "ACTIVE":
        return invariant_problems(world, device.dsn, False)  # never committed
    if row:
        problems.append(f"a released row is left: {sorted(row)}")
    if _in_group(world, device.dsn):
        problems.append("the released thing is still in its group")
    # No row: any ACTIVE certificate is one no row names.
    return problems + invariant_problems(world, device.dsn, False)


SCENARIOS: dict[str, tuple[Callable[..., Any], Callable[..., list[str]]]] = {
    "claim": (_claim, _after_claim),
    "release": (_release, _after_release),
}


def _calls_of(world: World, scenario: str) -> list[str]:
    request, _ = SCENARIOS[scenario]
    device = Device(unique_dsn())
    code = _owned_by_alice_with_transfer(device)
    with Crash().watching(*world.clients) as watch:
        status, answer = request(device, code)
    assert status == 200, answer
    return watch.calls


def _run_case(world: World, scenario: str, crash: Crash, recovery: str) -> list[str]:
    request, check = SCENARIOS[scenario]
    device = Device(unique_dsn())
    code = _owned_by_alice_with_transfer(device)
    try:
        with crash.watching(*world.clients):
            status, answer = request(device, code)
    except ProcessDeath:
        status, answer = 0, {}
    problems = []
    if status not in (0, 200) and not (status >= 500 or answer.get("code") == "REQUEST_IN_FLIGHT"):
        problems.append(f"answered {status} {answer.get('code')}")
    world.later()
    return problems + check(world, device, code, recovery)


@pytest.mark.parametrize("recovery", ["next", "sweeper"])
@pytest.mark.parametrize("mode", ["die", "lose"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_claim_or_release_killed_at_any_call_breaks_no_invariant(
    world: World, scenario: str, mode: str, recovery: str
) -> None:
    calls = _calls_of(world, scenario)
    # GIVEN the calls the request makes when nothing goes wrong (a floor: the loop below
    # cannot be empty or miss the steps that matter)
    assert {"TransactWriteItems", "UpdateCertificate", "RevokeCertificate"} <= set(calls)
    if scenario == "release":
        assert "RemoveThingFromThingGroup" in calls
    failures = {}
    for point, crash in Crash.points(mode, calls):
        # WHEN the request dies before any of its calls or after the last (or loses a write's
        # answer); then the next request or the sweeper runs
        problems = _run_case(world, scenario, crash, recovery)
        if mode == "die" and not crash.dead:
            problems.append("the request never reached the call it should die at")
        if mode == "lose" and not crash.lost:
            problems.append("no answer was lost")
        if problems:
            failures[point] = problems
    # THEN the invariants hold after every one of them
    assert failures == {}, f"{len(calls)} calls: {calls}"
    # ... and each function made only calls the template grants it
    assert not_granted(world.recorder.calls) == []


def test_every_list_query_is_granted_by_the_template(world: World) -> None:
    """moto checks no IAM: each index a list reads must be granted to the function."""
    device = Device(unique_dsn())
    _owned_by_alice_with_transfer(device)
    with world.recorder.acting_as("ProvisioningFunction"):
        for sub, query in [
            (ALICE, None),
            (ADMIN, None),
            (ADMIN, {"status": "ACTIVE"}),
            (ADMIN, {"owner": ALICE}),
        ]:
            status, answer = fleet_call("GET", "/devices", sub, query=query)
            assert status == 200, answer
            assert [d["DSN"] for d in answer["devices"]] == [device.dsn]
    actions = {(c.action, c.resource) for c in world.recorder.calls}
    assert ("dynamodb:Query", "DevicesTable/index/OwnerIndex") in actions
    assert ("dynamodb:Query", "DevicesTable/index/StatusIndex") in actions
    assert not_granted(world.recorder.calls) == []
