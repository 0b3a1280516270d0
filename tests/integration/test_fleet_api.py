"""Fleet management through the handler on moto: GET /devices, transfer, claim, release.

Each route is tried by the device's owner, another member, an administrator and a signed-in
user in no group; lists are paged across pages and while the fleet changes under them.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import boto3
import pytest

from provisioning.domain.fleet_models import TRANSFER_MAX_ATTEMPTS
from provisioning.ports import Services
from tests.integration.fleet_support import ADMIN, ALICE, BOB, CAROL, NOBODY, fleet_call
from tests.support.lambda_support import Device, recording, unique_dsn


@pytest.fixture
def aws(provisioning_env: dict[str, str]) -> dict[str, Any]:
    return {
        "iot": boto3.client("iot"),
        "dynamodb": boto3.client("dynamodb"),
        "env": provisioning_env,
    }


def provisioned(sub: str = ALICE) -> tuple[Device, dict[str, Any]]:
    device = Device(unique_dsn())
    status, answer = fleet_call("POST", "/certificate", sub, device.body())
    assert status == 200, answer
    return device, answer


def listed(sub: str, **query: str) -> tuple[int, dict[str, Any]]:
    return fleet_call("GET", "/devices", sub, query=dict(query) or None)


def all_pages(sub: str, **query: str) -> list[str]:
    dsns: list[str] = []
    token = ""
    for _ in range(100):
        status, page = listed(sub, **query, **({"nextToken": token} if token else {}))
        assert status == 200, page
        dsns += [d["DSN"] for d in page["devices"]]
        token = page.get("nextToken", "")
        if not token:
            return dsns
    raise AssertionError("the pages never end")


def newest_first(dsns: list[str]) -> list[str]:
    """The lists' order: createdAt (to the second), newest first; then DSN, last first."""
    created = {d: fleet_call("GET", f"/devices/{d}", ADMIN)[1]["createdAt"] for d in dsns}
    return sorted(dsns, key=lambda d: (created[d], d), reverse=True)


def cert_status(aws: dict[str, Any], certificate_id: str) -> str:
    return aws["iot"].describe_certificate(certificateId=certificate_id)["certificateDescription"][
        "status"
    ]


def audit_events(aws: dict[str, Any], dsn: str) -> list[str]:
    items = aws["dynamodb"].query(
        TableName=aws["env"]["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{dsn}"}},
    )["Items"]
    return [i["event"]["S"] for i in items]


def row(aws: dict[str, Any], dsn: str) -> dict[str, Any]:
    return (
        aws["dynamodb"]
        .get_item(
            TableName=aws["env"]["DEVICES_TABLE"], Key={"dsn": {"S": dsn}}, ConsistentRead=True
        )
        .get("Item", {})
    )


def in_group(aws: dict[str, Any], dsn: str) -> bool:
    things = aws["iot"].list_things_in_thing_group(thingGroupName=aws["env"]["THING_GROUP"])
    return f"{aws['env']['THING_PREFIX']}_{dsn}" in things["things"]


def start(dsn: str, sub: str = ALICE) -> str:
    status, answer = fleet_call("POST", f"/devices/{dsn}/transfer", sub)
    assert status == 200, answer
    return str(answer["transferCode"])


# --------------------------------------------------------------------------- GET /devices


def test_each_caller_lists_what_they_may_see(services: Services) -> None:
    # GIVEN two devices of Alice's and one of Bob's
    alice = [provisioned(ALICE)[0].dsn for _ in range(2)]
    bob = provisioned(BOB)[0].dsn
    # THEN each member lists their own, newest first, and nothing of the other's
    assert all_pages(ALICE) == newest_first(alice)
    assert all_pages(BOB) == [bob]
    # ... an administrator lists every device (with its owner), or one owner's
    status, page = listed(ADMIN)
    assert status == 200
    owners = {d["DSN"]: d["owner"] for d in page["devices"]}
    assert owners == {alice[0]: ALICE, alice[1]: ALICE, bob: BOB}
    assert all_pages(ADMIN, owner=ALICE) == newest_first(alice)
    # ... and a user in no group is refused
    assert listed(NOBODY) == (
        403,
        {
            "msg": "Only members of the Members or Administrators group may manage devices.",
            "code": "NOT_A_MEMBER",
        },
    )
    # ... members see no owner field: it is another user's identifier
    assert "owner" not in listed(ALICE)[1]["devices"][0]


def test_an_administrator_filters_by_status(services: Services) -> None:
    active = provisioned(ALICE)[0].dsn
    revoked = provisioned(BOB)[0].dsn
    assert fleet_call("DELETE", f"/devices/{revoked}/certificate", BOB)[0] == 200
    assert all_pages(ADMIN, status="REVOKED") == [revoked]
    assert all_pages(ADMIN, status="ACTIVE") == [active]


@pytest.mark.parametrize(
    ("sub", "query", "status", "code"),
    [
        (ALICE, {"limit": "0"}, 400, "LIMIT_INVALID"),
        (ALICE, {"limit": "101"}, 400, "LIMIT_INVALID"),
        (ALICE, {"limit": "ten"}, 400, "LIMIT_INVALID"),
        (ALICE, {"limit": "-1"}, 400, "LIMIT_INVALID"),
        (ALICE, {"sort": "asc"}, 400, "UNKNOWN_PARAMETER"),
        (ALICE, {"limit": ["2", "3"]}, 400, "DUPLICATE_PARAMETER"),
        (ALICE, {"nextToken": "not-a-token"}, 400, "NEXT_TOKEN_INVALID"),
        (ALICE, {"nextToken": "x" * 3000}, 400, "NEXT_TOKEN_INVALID"),
        (ALICE, {"owner": BOB}, 403, "FILTER_NOT_ALLOWED"),
        (ALICE, {"status": "ACTIVE"}, 403, "FILTER_NOT_ALLOWED"),
        (ALICE, {"expiringBefore": "2030-01-01"}, 403, "FILTER_NOT_ALLOWED"),
        (ADMIN, {"status": "PENDING"}, 400, "STATUS_INVALID"),
        (ADMIN, {"owner": "a b"}, 400, "OWNER_INVALID"),
        (ADMIN, {"owner": ALICE, "status": "ACTIVE"}, 400, "FILTERS_EXCLUSIVE"),
        (ADMIN, {"expiringBefore": "tomorrow"}, 400, "EXPIRING_BEFORE_INVALID"),
        (ADMIN, {"expiringBefore": "2030-01-01T00:00:00"}, 400, "EXPIRING_BEFORE_INVALID"),
        (ADMIN, {"expiringBefore": "2030-02-30"}, 400, "EXPIRING_BEFORE_INVALID"),
    ],
)
def test_bad_query_parameters_are_refused_with_stable_codes(
    services: Services, sub: str, query: dict[str, Any], status: int, code: str
) -> None:
    answer = fleet_call("GET", "/devices", sub, query=query)
    assert (answer[0], answer[1]["code"]) == (status, code)


def test_pages_cover_the_fleet_once_newest_first(services: Services) -> None:
    # GIVEN seven devices
    dsns = [provisioned(ALICE)[0].dsn for _ in range(7)]
    # WHEN Alice reads them three at a time
    status, first = listed(ALICE, limit="3")
    # THEN three pages list every device once, newest first, and the last has no token
    assert status == 200 and len(first["devices"]) == 3
    assert all_pages(ALICE, limit="3") == newest_first(dsns)
    status, last = listed(ALICE, limit="7")
    assert status == 200 and "nextToken" not in last


def test_a_token_only_continues_the_query_and_caller_it_came_from(services: Services) -> None:
    for _ in range(3):
        provisioned(ALICE)
    provisioned(BOB)
    _, page = listed(ALICE, limit="1")
    token = page["nextToken"]
    # Another caller, another query, or a token changed by hand: 400, nothing listed
    for sub, query in [
        (BOB, {"nextToken": token}),
        (ADMIN, {"nextToken": token}),
        (ALICE, {"nextToken": token, "limit": "2"}),  # the limit may change between pages
    ]:
        status, answer = listed(sub, **query)
        if sub == ALICE:
            assert status == 200, answer
        else:
            assert (status, answer["code"]) == (400, "NEXT_TOKEN_INVALID")
    _, admin_page = listed(ADMIN, owner=ALICE, limit="1")
    status, answer = listed(ADMIN, owner=BOB, nextToken=admin_page["nextToken"])
    assert (status, answer["code"]) == (400, "NEXT_TOKEN_INVALID")
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload["p"] = {"after": "9999-12-31T00:00:00Z#' OR 1=1"}
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    status, answer = listed(ALICE, nextToken=forged)
    assert (status, answer["code"]) == (400, "NEXT_TOKEN_INVALID")
    # A well-formed position moved by hand stays within the caller's own devices
    payload["p"] = {"after": "9999-12-31T00:00:00Z#ZZZ"}
    moved = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    status, answer = listed(ALICE, nextToken=moved)
    assert status == 200
    assert {d["ownedByCaller"] for d in answer["devices"]} == {True}
    assert len(answer["devices"]) == 3


def test_paging_while_the_fleet_changes_lists_no_device_twice(services: Services) -> None:
    # GIVEN six devices of Alice's
    dsns = [provisioned(ALICE)[0].dsn for _ in range(6)]
    seen: list[str] = []
    status, page = listed(ALICE, limit="2")
    seen += [d["DSN"] for d in page["devices"]]
    # WHEN between pages a device is added, one not yet listed is released, and a listed one
    # is revoked
    released = next(d for d in newest_first(dsns) if d not in seen)
    revoked = seen[0]
    added = provisioned(ALICE)[0].dsn
    assert fleet_call("DELETE", f"/devices/{released}", ALICE)[0] == 200
    assert fleet_call("DELETE", f"/devices/{revoked}/certificate", ALICE)[0] == 200
    token = page["nextToken"]
    while token:
        status, page = listed(ALICE, limit="2", nextToken=token)
        assert status == 200, page
        seen += [d["DSN"] for d in page["devices"]]
        token = page.get("nextToken", "")
    # THEN no device appears twice, every device that stayed appears, the released one does not
    assert len(seen) == len(set(seen))
    assert set(dsns) - {released} <= set(seen)
    assert released not in seen
    assert added in all_pages(ALICE)  # a new listing shows the added one


def test_an_administrators_merged_list_survives_devices_changing_status(
    services: Services,
) -> None:
    # GIVEN five devices; an administrator reads the first page of all devices
    dsns = [provisioned(ALICE if i % 2 else BOB)[0].dsn for i in range(5)]
    status, page = listed(ADMIN, limit="2")
    seen = [d["DSN"] for d in page["devices"]]
    order = newest_first(dsns)
    # WHEN the listed devices are revoked (they move to the REVOKED partition)
    for dsn in seen:
        owner = ALICE if dsns.index(dsn) % 2 else BOB
        assert fleet_call("DELETE", f"/devices/{dsn}/certificate", owner)[0] == 200
    token = page["nextToken"]
    while token:
        status, page = listed(ADMIN, limit="2", nextToken=token)
        assert status == 200, page
        seen += [d["DSN"] for d in page["devices"]]
        token = page.get("nextToken", "")
    # THEN each device is listed exactly once, newest first
    assert seen == order


def test_pending_and_never_provisioned_rows_are_not_listed(services: Services) -> None:
    from tests.support.lambda_support import fault

    device = Device(unique_dsn())
    with fault(services.iot.client, "RegisterCertificate", times=None):  # type: ignore[attr-defined]
        status, _ = fleet_call("POST", "/certificate", ALICE, device.body())
    assert status == 502
    assert all_pages(ALICE) == []


# --------------------------------------------------------------------------- transfer


@pytest.mark.parametrize(
    ("sub", "status", "code"),
    [
        (ALICE, 200, None),
        (BOB, 404, "DEVICE_NOT_FOUND"),
        (ADMIN, 403, "NOT_OWNER"),
        (NOBODY, 403, "NOT_A_MEMBER"),
    ],
)
def test_only_the_owner_starts_a_transfer(
    services: Services, aws: dict[str, Any], sub: str, status: int, code: str | None
) -> None:
    device, _ = provisioned(ALICE)
    answer = fleet_call("POST", f"/devices/{device.dsn}/transfer", sub)
    assert answer[0] == status, answer
    if code:
        assert answer[1]["code"] == code
        assert "TRANSFER_START" not in audit_events(aws, device.dsn)
        return
    body = answer[1]
    assert set(body) == {"DSN", "transferCode", "expiresAt", "maxAttempts"}
    # The code is shown once; the row keeps only a hash of it
    stored = json.dumps(row(aws, device.dsn))
    assert body["transferCode"].replace("-", "") not in stored
    assert body["transferCode"] not in stored
    assert "TRANSFER_START" in audit_events(aws, device.dsn)
    assert listed(ALICE)[1]["devices"][0]["transferPending"] is True


@pytest.mark.parametrize(
    ("claimant", "status", "code"),
    [
        (BOB, 200, None),
        (ADMIN, 200, None),
        (ALICE, 409, "ALREADY_OWNER"),
        (NOBODY, 403, "NOT_A_MEMBER"),
    ],
)
def test_claiming_with_the_code(
    services: Services,
    aws: dict[str, Any],
    claimant: str,
    status: int,
    code: str | None,
) -> None:
    device, first = provisioned(ALICE)
    transfer_code = start(device.dsn)
    answer = fleet_call(
        "POST", f"/devices/{device.dsn}/claim", claimant, {"code": transfer_code.lower()}
    )
    assert answer[0] == status, answer
    if code:
        assert answer[1]["code"] == code
        assert cert_status(aws, first["certificateId"]) == "ACTIVE"
        return
    # THEN the claimant owns the device, its certificate is revoked everywhere, the old owner
    # no longer sees it, every step is in the audit trail
    assert answer[1]["ownedByCaller"] is True and answer[1]["status"] == "REVOKED"
    assert answer[1]["previousCertificateRevoked"] is True
    assert cert_status(aws, first["certificateId"]) == "REVOKED"
    assert fleet_call("GET", f"/devices/{device.dsn}", ALICE)[0] == 404
    assert fleet_call("GET", f"/devices/{device.dsn}", claimant)[0] == 200
    assert device.dsn in all_pages(claimant, **({"owner": claimant} if claimant == ADMIN else {}))
    assert device.dsn not in all_pages(ALICE)
    assert {"TRANSFER_START", "TRANSFER_CLAIM", "REVOKE"} <= set(audit_events(aws, device.dsn))
    # ... the code is spent
    again = fleet_call("POST", f"/devices/{device.dsn}/claim", CAROL, {"code": transfer_code})
    assert (again[0], again[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    # ... and the new owner provisions it again (over BLE, in life)
    status, fresh = fleet_call("POST", "/certificate", claimant, device.body())
    assert status == 200, fresh
    assert cert_status(aws, fresh["certificateId"]) == "ACTIVE"
    # ... which the old owner can no longer do
    assert fleet_call("POST", "/certificate", ALICE, device.body())[1]["code"] == "DEVICE_OWNED"


def test_wrong_codes_are_bounded_and_end_the_transfer(
    services: Services, aws: dict[str, Any]
) -> None:
    device, first = provisioned(ALICE)
    transfer_code = start(device.dsn)
    wrong = "AAAA-AAAA-AAAA" if transfer_code != "AAAA-AAAA-AAAA" else "BBBB-BBBB-BBBB"
    refusals = [
        fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": wrong})
        for _ in range(TRANSFER_MAX_ATTEMPTS)
    ]
    assert {(s, a["code"]) for s, a in refusals} == {(403, "TRANSFER_CODE_INVALID")}
    # THEN the right code no longer works: the transfer ended with the last wrong try
    answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
    assert (answer[0], answer[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    assert fleet_call("GET", f"/devices/{device.dsn}", ALICE)[1]["ownedByCaller"] is True
    assert cert_status(aws, first["certificateId"]) == "ACTIVE"
    events = audit_events(aws, device.dsn)
    assert events.count("TRANSFER_CODE_REJECTED") == TRANSFER_MAX_ATTEMPTS
    assert "TRANSFER_CANCEL" in events
    # ... and the refusal reads the same as for a device that does not exist
    nothing = fleet_call("POST", f"/devices/{unique_dsn()}/claim", BOB, {"code": wrong})
    assert nothing == answer


def hold_lease(aws: dict[str, Any], dsn: str, seconds: int = 60) -> None:
    """Another request holds the device's lease (a provisioning in progress)."""
    import time

    aws["dynamodb"].update_item(
        TableName=aws["env"]["DEVICES_TABLE"],
        Key={"dsn": {"S": dsn}},
        UpdateExpression="SET lease_request_id = :rid, lease_until = :until",
        ExpressionAttributeValues={
            ":rid": {"S": "another-request"},
            ":until": {"N": str(int(time.time()) + seconds)},
        },
    )


def end_lease(aws: dict[str, Any], dsn: str) -> None:
    aws["dynamodb"].update_item(
        TableName=aws["env"]["DEVICES_TABLE"],
        Key={"dsn": {"S": dsn}},
        UpdateExpression="REMOVE lease_request_id, lease_until",
    )


def test_only_wrong_codes_use_tries_up(services: Services, aws: dict[str, Any]) -> None:
    # GIVEN a pending transfer, and a request holding the device (the owner provisioning it)
    device, first = provisioned(ALICE)
    transfer_code = start(device.dsn)
    hold_lease(aws, device.dsn)
    # WHEN the recipient claims with the right code more times than there are tries, told to
    # retry each time, and the owner "claims" their own device as often
    for _ in range(TRANSFER_MAX_ATTEMPTS + 2):
        busy = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
        assert (busy[0], busy[1]["code"]) == (409, "REQUEST_IN_FLIGHT"), busy
        mine = fleet_call("POST", f"/devices/{device.dsn}/claim", ALICE, {"code": transfer_code})
        assert (mine[0], mine[1]["code"]) == (409, "ALREADY_OWNER"), mine
    # THEN none of that used a try: every try but one may still go wrong ...
    assert row(aws, device.dsn)["transfer_attempts"] == {"N": "0"}
    wrong = "AAAA-AAAA-AAAA" if transfer_code != "AAAA-AAAA-AAAA" else "BBBB-BBBB-BBBB"
    for _ in range(TRANSFER_MAX_ATTEMPTS - 1):
        refused = fleet_call("POST", f"/devices/{device.dsn}/claim", CAROL, {"code": wrong})
        assert (refused[0], refused[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    # ... and once the device is free the recipient's retry succeeds
    end_lease(aws, device.dsn)
    claimed = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
    assert claimed[0] == 200, claimed
    assert cert_status(aws, first["certificateId"]) == "REVOKED"
    assert audit_events(aws, device.dsn).count("TRANSFER_CODE_REJECTED") == (
        TRANSFER_MAX_ATTEMPTS - 1
    )


def test_a_matching_codes_try_is_given_back_once_when_its_answer_is_lost(
    services: Services, aws: dict[str, Any]
) -> None:
    # GIVEN three wrong tries counted against a pending transfer
    device, _ = provisioned(ALICE)
    transfer_code = start(device.dsn)
    for _ in range(3):
        fleet_call("POST", f"/devices/{device.dsn}/claim", CAROL, {"code": "AAAA-AAAA-AAAB"})
    hold_lease(aws, device.dsn)
    # WHEN the right code's give-back write applies twice (botocore repeats it: the first
    # answer was lost)
    client = services.store.client  # type: ignore[attr-defined]
    original = client.update_item

    def twice(**kwargs: Any) -> Any:
        answer = original(**kwargs)
        if "transfer_returned" in kwargs.get("UpdateExpression", ""):
            with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
                original(**kwargs)
        return answer

    client.update_item = twice
    try:
        busy = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
    finally:
        del client.update_item
    # THEN the wrong tries all still count: the repeat gave nothing more back
    assert busy[0] == 409, busy
    assert row(aws, device.dsn)["transfer_attempts"] == {"N": "3"}


def test_anyones_wrong_tries_end_the_transfer_and_are_audited_by_name(
    services: Services, aws: dict[str, Any]
) -> None:
    # GIVEN Alice offers her device to Bob; Carol knows its DSN but not the code
    device, _ = provisioned(ALICE)
    offered = start(device.dsn)
    wrong = "AAAA-AAAA-AAAA" if offered != "AAAA-AAAA-AAAA" else "BBBB-BBBB-BBBB"
    # WHEN Carol spends every try, by claims and by recipient cancels
    for n in range(TRANSFER_MAX_ATTEMPTS):
        method, path = ("POST", "claim") if n % 2 else ("DELETE", "transfer")
        refused = fleet_call(method, f"/devices/{device.dsn}/{path}", CAROL, {"code": wrong})
        assert (refused[0], refused[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    # THEN the transfer has ended (tries are per transfer, not per caller: the bound on
    # guessing does not grow with the number of accounts) ...
    late = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": offered})
    assert (late[0], late[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    # ... the audit trail names Carol on every rejected try
    items = aws["dynamodb"].query(
        TableName=aws["env"]["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{device.dsn}"}},
    )["Items"]
    rejected = [i for i in items if i["event"]["S"] == "TRANSFER_CODE_REJECTED"]
    assert len(rejected) == TRANSFER_MAX_ATTEMPTS
    assert {i["actor"]["S"] for i in rejected} == {CAROL}
    # ... and the owner simply offers it again
    again = start(device.dsn)
    assert fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": again})[0] == 200


class _Blocked:
    """The manufacturer allowlist, with some DSNs blocked."""

    def __init__(self, *dsns: str) -> None:
        self.dsns = set(dsns)

    def get(self, dsn: str) -> Any:
        from provisioning.domain.attestation import BLOCKED, AllowlistEntry

        return AllowlistEntry(dsn, status=BLOCKED) if dsn in self.dsns else None


def test_a_blocked_device_is_neither_offered_nor_claimed(
    services: Services, aws: dict[str, Any]
) -> None:
    # GIVEN a transfer offered before the manufacturer blocked the device, and another device
    device, first = provisioned(ALICE)
    offered = start(device.dsn)
    other, _ = provisioned(ALICE)
    services.allowlist = _Blocked(device.dsn, other.dsn)  # type: ignore[assignment]
    # WHEN the owner offers a blocked device: refused
    status, answer = fleet_call("POST", f"/devices/{other.dsn}/transfer", ALICE)
    assert (status, answer["code"]) == (403, "DEVICE_BLOCKED")
    assert "transfer_id" not in row(aws, other.dsn)
    # WHEN the recipient claims the blocked device with the right code: refused, nothing moves
    status, answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": offered})
    assert (status, answer["code"]) == (403, "DEVICE_BLOCKED")
    assert row(aws, device.dsn)["owner_sub"]["S"] == ALICE
    assert cert_status(aws, first["certificateId"]) == "ACTIVE"
    # ... and a wrong code learns nothing about the block
    wrong = "AAAA-AAAA-AAAA" if offered != "AAAA-AAAA-AAAA" else "BBBB-BBBB-BBBB"
    status, answer = fleet_call("POST", f"/devices/{device.dsn}/claim", CAROL, {"code": wrong})
    assert (status, answer["code"]) == (403, "TRANSFER_CODE_INVALID")
    # ... while a device the allowlist does not block is still offered
    services.allowlist = _Blocked()  # type: ignore[assignment]
    assert fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": offered})[0] == 200


def test_a_claim_racing_a_cancel_is_told_the_transfer_is_gone(
    services: Services, aws: dict[str, Any]
) -> None:
    # GIVEN a pending transfer; WHEN the owner cancels it after the claim's code was checked,
    # just before the claim takes the device
    device, first = provisioned(ALICE)
    offered = start(device.dsn)
    client = services.store.client  # type: ignore[attr-defined]
    cancelled: list[tuple[int, dict[str, Any]]] = []

    def cancel_meanwhile(params: dict[str, Any], **_: Any) -> None:
        claim_lease = "lease_request_id" in params.get("UpdateExpression", "") and (
            ":tid" in params.get("ExpressionAttributeValues", {})
        )
        if claim_lease and not cancelled:
            cancelled.append(fleet_call("DELETE", f"/devices/{device.dsn}/transfer", ALICE))

    event = "before-parameter-build.dynamodb.UpdateItem"
    client.meta.events.register(event, cancel_meanwhile)
    try:
        status, answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": offered})
    finally:
        client.meta.events.unregister(event, cancel_meanwhile)
    # THEN the cancel wins, the claim answers 404 TRANSFER_NOT_FOUND (README), Alice keeps it
    assert cancelled and cancelled[0][0] == 200, cancelled
    assert (status, answer["code"]) == (404, "TRANSFER_NOT_FOUND")
    assert row(aws, device.dsn)["owner_sub"]["S"] == ALICE
    assert cert_status(aws, first["certificateId"]) == "ACTIVE"


def test_an_expired_code_is_refused(services: Services, aws: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    device, _ = provisioned(ALICE)
    transfer_code = start(device.dsn)
    services.clock = lambda: datetime.now(UTC) + timedelta(minutes=16)
    answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
    assert (answer[0], answer[1]["code"]) == (403, "TRANSFER_CODE_INVALID")


@pytest.mark.parametrize(
    "body",
    [None, "", "[]", '{"code": 5}', '{"code": "short"}', '{"code": "AAAA-AAAA-AAAA", "x": 1}'],
)
def test_a_claim_body_is_validated(services: Services, body: str | None) -> None:
    device, _ = provisioned(ALICE)
    start(device.dsn)
    status, answer = fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, body)
    assert status == 400, answer


@pytest.mark.parametrize(
    ("sub", "with_code", "status", "code"),
    [
        (ALICE, False, 200, None),
        (ADMIN, False, 200, None),
        (BOB, True, 200, None),  # the recipient declines with the code
        (BOB, False, 404, "DEVICE_NOT_FOUND"),
        (NOBODY, False, 403, "NOT_A_MEMBER"),
    ],
)
def test_either_side_cancels_a_transfer(
    services: Services,
    aws: dict[str, Any],
    sub: str,
    with_code: bool,
    status: int,
    code: str | None,
) -> None:
    device, _ = provisioned(ALICE)
    transfer_code = start(device.dsn)
    body = {"code": transfer_code} if with_code else None
    answer = fleet_call("DELETE", f"/devices/{device.dsn}/transfer", sub, body)
    assert answer[0] == status, answer
    claim = fleet_call("POST", f"/devices/{device.dsn}/claim", CAROL, {"code": transfer_code})
    if code:
        assert answer[1]["code"] == code
        assert claim[0] == 200  # the transfer still stands
        return
    assert (claim[0], claim[1]["code"]) == (403, "TRANSFER_CODE_INVALID")
    assert "TRANSFER_CANCEL" in audit_events(aws, device.dsn)
    again = fleet_call("DELETE", f"/devices/{device.dsn}/transfer", ALICE)
    assert (again[0], again[1]["code"]) == (404, "TRANSFER_NOT_FOUND")


def test_a_new_transfer_replaces_the_pending_one(services: Services) -> None:
    device, _ = provisioned(ALICE)
    old = start(device.dsn)
    new = start(device.dsn)
    assert fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": old})[0] == 403
    assert fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": new})[0] == 200


def test_a_claim_racing_the_owners_provisioning_keeps_the_invariants(
    services: Services, aws: dict[str, Any]
) -> None:
    from tests.integration.test_crash_safety import invariant_problems

    class _World:
        env = aws["env"]
        dynamodb = aws["dynamodb"]

    device, _ = provisioned(ALICE)
    transfer_code = start(device.dsn)
    raced: list[tuple[int, dict[str, Any]]] = []

    def bob_claims_meanwhile(**_: Any) -> None:
        if not raced:
            raced.append(
                fleet_call("POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code})
            )

    pca = services.pca.client  # type: ignore[attr-defined]
    event = "before-call.acm-pca.IssueCertificate"
    # WHEN Bob claims while Alice's rotation holds the device (between its lease and its issue)
    pca.meta.events.register(event, bob_claims_meanwhile)
    try:
        status, rotated = fleet_call("POST", "/certificate", ALICE, device.body())
    finally:
        pca.meta.events.unregister(event, bob_claims_meanwhile)
    # THEN the rotation stands, the claim is told to retry, and the invariants hold
    assert status == 200, rotated
    ((claim_status, claim),) = raced
    assert (claim_status, claim["code"]) == (409, "REQUEST_IN_FLIGHT")
    assert invariant_problems(_World(), device.dsn, revoked=False) == []  # type: ignore[arg-type]
    # WHEN Bob retries, then Alice's provisioning races in during Bob's claim
    raced.clear()

    def alice_provisions_meanwhile(**_: Any) -> None:
        if not raced:
            raced.append(fleet_call("POST", "/certificate", ALICE, device.body()))

    iot = services.iot.client  # type: ignore[attr-defined]
    event = "before-call.iot.UpdateCertificate"
    iot.meta.events.register(event, alice_provisions_meanwhile)
    try:
        with recording(iot, "UpdateCertificate"):
            status, claimed = fleet_call(
                "POST", f"/devices/{device.dsn}/claim", BOB, {"code": transfer_code}
            )
    finally:
        iot.meta.events.unregister(event, alice_provisions_meanwhile)
    # THEN the claim wins, Alice is refused, the rotated certificate is revoked: no ACTIVE one,
    # and the owner is Bob everywhere
    assert status == 200, claimed
    ((alice_status, alice),) = raced
    assert alice_status == 409 and alice["code"] in ("REQUEST_IN_FLIGHT", "DEVICE_OWNED")
    assert cert_status(aws, rotated["certificateId"]) == "REVOKED"
    assert invariant_problems(_World(), device.dsn, revoked=True) == []  # type: ignore[arg-type]
    assert row(aws, device.dsn)["owner_sub"]["S"] == BOB
    # ... and Bob's provisioning then succeeds with one ACTIVE certificate
    status, fresh = fleet_call("POST", "/certificate", BOB, device.body())
    assert status == 200, fresh
    assert invariant_problems(_World(), device.dsn, revoked=False) == []  # type: ignore[arg-type]


# --------------------------------------------------------------------------- release


@pytest.mark.parametrize(
    ("sub", "status", "code"),
    [
        (ALICE, 200, None),
        (ADMIN, 200, None),
        (BOB, 404, "DEVICE_NOT_FOUND"),
        (NOBODY, 403, "NOT_A_MEMBER"),
    ],
)
def test_releasing_a_device(
    services: Services, aws: dict[str, Any], sub: str, status: int, code: str | None
) -> None:
    device, first = provisioned(ALICE)
    start(device.dsn)
    answer = fleet_call("DELETE", f"/devices/{device.dsn}", sub)
    assert answer[0] == status, answer
    if code:
        assert answer[1]["code"] == code
        assert cert_status(aws, first["certificateId"]) == "ACTIVE"
        assert in_group(aws, device.dsn)
        return
    # THEN the certificate is revoked, the thing out of its group, the row gone, the audit kept
    assert answer[1] == {
        "DSN": device.dsn,
        "released": True,
        "finished": True,
        "revokedCertificateId": first["certificateId"],
    }
    assert cert_status(aws, first["certificateId"]) == "REVOKED"
    assert not in_group(aws, device.dsn)
    assert row(aws, device.dsn) == {}
    assert {"ISSUE", "RELEASE", "REVOKE"} <= set(audit_events(aws, device.dsn))
    assert fleet_call("GET", f"/devices/{device.dsn}", ALICE)[0] == 404
    assert device.dsn not in all_pages(ALICE)
    # ... and anyone may provision the DSN now
    status, fresh = fleet_call("POST", "/certificate", BOB, device.body())
    assert status == 200, fresh
    assert in_group(aws, device.dsn)
    assert fleet_call("GET", f"/devices/{device.dsn}", BOB)[1]["ownedByCaller"] is True


def test_a_revoked_device_is_released_too(services: Services, aws: dict[str, Any]) -> None:
    device, _ = provisioned(ALICE)
    assert fleet_call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)[0] == 200
    status, answer = fleet_call("DELETE", f"/devices/{device.dsn}", ALICE)
    assert status == 200 and "revokedCertificateId" not in answer
    assert row(aws, device.dsn) == {}
    assert fleet_call("DELETE", f"/devices/{device.dsn}", ALICE)[0] == 404


def test_an_administrator_lists_devices_expiring_before_a_date(services: Services) -> None:
    # GIVEN five devices (spread over the expiry index's shards), one of them revoked
    dsns = [provisioned(ALICE if i % 2 else BOB)[0].dsn for i in range(5)]
    assert fleet_call("DELETE", f"/devices/{dsns[0]}/certificate", BOB)[0] == 200
    not_after = {d: fleet_call("GET", f"/devices/{d}", ADMIN)[1]["notAfter"] for d in dsns[1:]}
    # WHEN an administrator pages through those expiring before a date past all of them
    seen = all_pages(ADMIN, expiringBefore="2100-01-01", limit="1")
    # THEN each device with a certificate is listed once, soonest first; the revoked one not
    assert sorted(seen) == sorted(dsns[1:])
    assert seen == sorted(dsns[1:], key=lambda d: (not_after[d], d))
    assert {d["expiry"] for d in listed(ADMIN, expiringBefore="2100-01-01")[1]["devices"]} == {
        "VALID"
    }
    # ... nothing expires before the devices were made
    assert listed(ADMIN, expiringBefore="2001-01-01")[1] == {"devices": []}
    # ... and its token continues only that query
    _, page = listed(ADMIN, expiringBefore="2100-01-01", limit="1")
    status, answer = listed(ADMIN, expiringBefore="2099-01-01", nextToken=page["nextToken"])
    assert (status, answer["code"]) == (400, "NEXT_TOKEN_INVALID")
