"""The expiry watch and the expiry state, on the stack from template.yaml (moto).

- The devices table's sparse ExpiryIndex lists exactly the rows naming an ACTIVE certificate:
  provisioning and rotation put a device in (with its certificate's notAfter), revocation takes
  it out (crash paths: tests/integration/test_crash_safety.py checks it after every crash).
- One run of the watch asks exactly the devices whose certificate expires within the window to
  renew (one renew/due each), across index pages and shards, counts the expired ones, sends
  one SNS summary and publishes the metrics; it never scans the table and stops within its time.
- A run that runs out of time still counts the expired devices, and the next run goes on where
  it stopped instead of asking the same front of the window again.
- GET /devices/{dsn} shows VALID, EXPIRING, EXPIRED or NONE.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends
from moto.sns.models import sns_backends

from devstack.cloudformation.deployer import Deployment
from provisioning.adapters.composition import get_services, get_watch_services
from provisioning.adapters.store import EXPIRY_SHARDS, WATCH_CURSOR_KEY, expiry_shard
from provisioning.domain import expiry
from provisioning.lifecycle.lease import iso
from provisioning.ports import Services
from provisioning.usecases import expiry as expiry_watch
from tests.support.crash import InlineExecutor
from tests.support.iam import CallRecorder, not_granted
from tests.support.lambda_support import (
    Device,
    FakeLambdaContext,
    api_event,
    fault,
    recording,
    unique_dsn,
)
from tests.support.rule_events import rule_event

ALICE = "sub-alice"
REGION = "us-east-1"
# The template's defaults: 365-day certificates, EXPIRING in the last 30 % (109.5 days).
WINDOW = timedelta(days=365) * 30 / 100


@dataclass
class World:
    services: Services
    env: dict[str, str]
    dynamodb: Any
    now: datetime

    @property
    def table(self) -> str:
        return self.env["DEVICES_TABLE"]

    @property
    def topic_arn(self) -> str:
        return self.env["EXPIRY_TOPIC_ARN"]


@pytest.fixture
def world(
    stack: Deployment, provisioning_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    # The watch function's own environment (a superset of the provisioning function's).
    environment = dict(stack.functions["ExpiryWatchFunction"].environment)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_services.cache_clear()
    get_watch_services.cache_clear()
    services = get_services()
    services.sleep = lambda _seconds: None
    services.executor = InlineExecutor()  # type: ignore[assignment]
    built = World(services, environment, boto3.client("dynamodb"), datetime.now(UTC))
    services.clock = lambda: built.now
    yield built
    get_services.cache_clear()
    get_watch_services.cache_clear()


def call(method: str, path: str, body: str | None = None) -> tuple[int, dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    event = api_event(body, ALICE, "Members", method=method, path=path)
    response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def run_watch(seconds: float = 120, context: Any = None) -> dict[str, Any]:
    from provisioning.handlers.expiry import lambda_handler

    answer: dict[str, Any] = lambda_handler(
        {}, context or FakeLambdaContext(seconds, "ExpiryWatchFunction")
    )
    return answer


class TimeForPublishes(FakeLambdaContext):
    """A run whose time runs out (10 s left: less than one more page needs, enough to store
    its position and send the summary) once it has published ``publishes`` messages."""

    def __init__(self, publishes: int) -> None:
        super().__init__(120, "ExpiryWatchFunction")
        self.start = len(renew_requests())
        self.publishes = publishes

    def get_remaining_time_in_millis(self) -> int:
        used = len(renew_requests()) - self.start
        return 120_000 if used < self.publishes else 10_000


def asked(since: int) -> list[str]:
    """The thing names asked to renew after the first ``since`` messages, in order."""
    return [topic.split("/")[1] for topic, _ in renew_requests()[since:] if topic.endswith("/due")]


def renew_requests() -> list[tuple[str, dict[str, Any]]]:
    backend = iotdata_backends[DEFAULT_ACCOUNT_ID][REGION]
    return [(topic, json.loads(payload)) for topic, payload in backend.published_payloads]


def summaries(world: World) -> list[tuple[str, str]]:
    topic = sns_backends[DEFAULT_ACCOUNT_ID][REGION].topics[world.topic_arn]
    return [(subject or "", message) for _, message, subject, _, _ in topic.sent_notifications]


def emitted_metrics(output: str) -> dict[str, float]:
    """The values of the CloudWatch embedded-metric lines the handler printed."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                values[metric["Name"]] = value[0] if isinstance(value, list) else value
    return values


def index_rows(world: World) -> dict[str, str]:
    """DSN -> notAfter of every row the ExpiryIndex lists (a test-side read of all shards)."""
    rows = {}
    for shard in range(EXPIRY_SHARDS):
        pages = world.dynamodb.get_paginator("query").paginate(
            TableName=world.table,
            IndexName="ExpiryIndex",
            KeyConditionExpression="expiry_shard = :s",
            ExpressionAttributeValues={":s": {"S": f"exp#{shard}"}},
        )
        for page in pages:
            rows.update({i["dsn"]["S"]: i["not_after"]["S"] for i in page["Items"]})
    return rows


def put_device(world: World, dsn: str, not_after: datetime, *, active: bool = True) -> None:
    """A row as a provisioning commit leaves it (or, not active, as a revocation does)."""
    item = {
        "dsn": {"S": dsn},
        "owner_sub": {"S": ALICE},
        "thing_name": {"S": f"{world.env['THING_PREFIX']}_{dsn}"},
        "status": {"S": "ACTIVE" if active else "REVOKED"},
    }
    if active:
        item |= {
            "certificate_id": {"S": "c" * 64},
            "not_after": {"S": iso(not_after)},
            "expiry_shard": {"S": expiry_shard(dsn)},
        }
    world.dynamodb.put_item(TableName=world.table, Item=item)


def dsns_by_shard(per_shard: dict[int, int], prefix: str) -> list[str]:
    """Unique DSNs, as many in each expiry shard as asked."""
    wanted, found = dict(per_shard), []
    while any(wanted.values()):
        dsn = unique_dsn(prefix)
        shard = int(expiry_shard(dsn).removeprefix("exp#"))
        if wanted.get(shard, 0) > 0:
            wanted[shard] -= 1
            found.append(dsn)
    return found


# --------------------------------------------------------------------------- the index


def test_provisioning_and_rotation_put_a_device_in_the_index_and_revocation_takes_it_out(
    world: World,
) -> None:
    # GIVEN a device provisioned by its owner
    device = Device(unique_dsn())
    status, first = call("POST", "/certificate", device.body())
    assert status == 200, first
    # THEN the index lists it with its certificate's notAfter, in its shard
    assert index_rows(world)[device.dsn] == first["notAfter"]
    row = world.dynamodb.get_item(TableName=world.table, Key={"dsn": {"S": device.dsn}})["Item"]
    assert row["expiry_shard"]["S"] == expiry_shard(device.dsn)

    # WHEN the certificate is rotated, THEN the index follows the new certificate
    status, second = call("POST", "/certificate", device.body())
    assert status == 200, second
    assert second["certificateId"] != first["certificateId"]
    assert index_rows(world)[device.dsn] == second["notAfter"]

    # WHEN the owner revokes it, THEN the index no longer lists it (nothing left to renew)
    status, revoked = call("DELETE", f"/devices/{device.dsn}/certificate")
    assert status == 200, revoked
    assert device.dsn not in index_rows(world)
    row = world.dynamodb.get_item(TableName=world.table, Key={"dsn": {"S": device.dsn}})["Item"]
    assert "expiry_shard" not in row and "not_after" not in row


# --------------------------------------------------------------------------- the watch


def test_the_watch_asks_exactly_the_devices_in_the_window_across_pages_and_shards(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(expiry_watch, "PAGE_SIZE", 2)  # several pages per shard
    now = world.now
    # GIVEN devices spread over every shard: 9 expiring within the window (edges included),
    expiring = dsns_by_shard({0: 3, 1: 2, 2: 3, 3: 1}, "EXP")
    offsets = [timedelta(seconds=1), timedelta(hours=1), timedelta(days=1), timedelta(days=30)]
    offsets += [timedelta(days=60), timedelta(days=90), timedelta(days=100)]
    offsets += [WINDOW - timedelta(seconds=1), WINDOW]
    for dsn, offset in zip(expiring, offsets, strict=True):
        put_device(world, dsn, now + offset)
    # ... 3 already expired, 4 valid beyond the window, and 2 revoked (no certificate)
    expired = dsns_by_shard({0: 1, 3: 2}, "OLD")
    for n, dsn in enumerate(expired):
        put_device(world, dsn, now - timedelta(days=n + 1))
    for n, dsn in enumerate(dsns_by_shard({0: 1, 1: 1, 2: 1, 3: 1}, "NEW")):
        put_device(world, dsn, now + WINDOW + timedelta(seconds=1 + n * 86400))
    for dsn in dsns_by_shard({1: 1, 2: 1}, "REV"):
        put_device(world, dsn, now, active=False)

    # WHEN the watch runs
    capsys.readouterr()
    with (
        recording(world.services.store.client, "Query") as queries,  # type: ignore[attr-defined]
        recording(world.services.store.client, "Scan") as scans,  # type: ignore[attr-defined]
    ):
        answer = run_watch()
    metrics = emitted_metrics(capsys.readouterr().out)

    # THEN each expiring device, and only those, is asked once to renew, with its notAfter
    prefix = world.env["THING_PREFIX"]
    expected = {
        (f"things/{prefix}_{dsn}/certificate/renew/due", iso(now + offset))
        for dsn, offset in zip(expiring, offsets, strict=True)
    }
    requests = renew_requests()
    assert len(requests) == len(expiring)
    assert {(topic, payload["notAfter"]) for topic, payload in requests} == expected
    assert {payload["reason"] for _, payload in requests} == {"EXPIRING"}
    # ... read from the index page by page (never a scan)
    assert scans == []
    assert {q["IndexName"] for q in queries} == {"ExpiryIndex"}
    assert sum(1 for q in queries if "ExclusiveStartKey" in q) >= 3
    # ... the figures, the metrics and one summary say the same
    assert answer | {
        "checkedAt": "",
        "windowEnds": "",
        "issuerLastIssue": "",
        "rootValidUntil": "",
    } == {
        "checkedAt": "",
        "windowEnds": "",
        "issuerLastIssue": "",
        "issuerDue": False,
        "rootValidUntil": "",
        "rootDue": False,
        "expiring": 9,
        "expired": 3,
        "renewalsRequested": 9,
        "renewalsFailed": 0,
        "complete": True,
        "notified": True,
    }
    assert metrics["DevicesExpiringSoon"] == 9
    assert metrics["DevicesExpired"] == 3
    assert metrics["RenewalsRequested"] == 9
    assert metrics["ExpiryWatchIncomplete"] == 0
    ((subject, message),) = summaries(world)
    assert subject == "Device certificates: 9 expiring soon, 3 expired"
    assert "Expiring soon: 9 (asked to renew: 9; not reached: 0)." in message
    assert "Expired, still named ACTIVE: 3." in message
    listed = [line.split()[-1] for line in message.splitlines() if line.startswith("  ")]
    assert listed == expiring  # soonest first
    assert not any(dsn in message for dsn in expired)


def test_a_quiet_run_sends_no_summary(world: World) -> None:
    # GIVEN only a fresh certificate
    status, answer = call("POST", "/certificate", Device(unique_dsn()).body())
    assert status == 200, answer
    # WHEN the watch runs, THEN nothing is due, nobody is asked, nobody is paged
    assert run_watch()["expiring"] == 0
    assert renew_requests() == [] and summaries(world) == []


def test_a_provisioned_device_is_asked_to_renew_once_its_window_opens(world: World) -> None:
    # GIVEN a device provisioned now (a 365-day certificate)
    device = Device(unique_dsn())
    status, answer = call("POST", "/certificate", device.body())
    assert status == 200, answer
    not_after = expiry.parse_iso(answer["notAfter"])
    # WHEN the watch runs just before the window opens, THEN the device is left alone
    world.now = not_after - WINDOW - timedelta(minutes=1)
    assert run_watch()["expiring"] == 0
    # WHEN it runs once the window is open, THEN the device is asked on its own topic
    world.now = not_after - WINDOW + timedelta(minutes=1)
    assert run_watch()["renewalsRequested"] == 1
    assert renew_requests() == [
        (
            f"things/{answer['thingName']}/certificate/renew/due",
            {
                "notAfter": answer["notAfter"],
                "reason": "EXPIRING",
                "renewWithinSeconds": expiry.NUDGE_SPREAD.seconds,
            },
        )
    ]
    # WHEN it runs after the certificate expired, THEN it is counted, not asked (cannot connect)
    world.now = not_after + timedelta(seconds=1)
    assert run_watch() | {
        "checkedAt": "",
        "windowEnds": "",
        "issuerLastIssue": "",
        "rootValidUntil": "",
    } == {
        "checkedAt": "",
        "windowEnds": "",
        "issuerLastIssue": "",
        "issuerDue": False,
        "rootValidUntil": "",
        "rootDue": False,
        "expiring": 0,
        "expired": 1,
        "renewalsRequested": 0,
        "renewalsFailed": 0,
        "complete": True,
        "notified": True,
    }
    assert len(renew_requests()) == 1


def test_a_publish_that_fails_is_counted_and_the_others_still_go_out(world: World) -> None:
    for dsn in dsns_by_shard({0: 1, 1: 1, 2: 1}, "PUB"):
        put_device(world, dsn, world.now + timedelta(days=1))
    publisher = world.services.publisher
    assert publisher is not None
    client = publisher.client()  # type: ignore[attr-defined]
    # GIVEN IoT refuses the first publish, through all of botocore's attempts
    with fault(client, "Publish", times=3):
        answer = run_watch()
    # THEN the other two devices are asked, and the summary says one was not reached
    assert (answer["renewalsRequested"], answer["renewalsFailed"]) == (2, 1)
    assert len(renew_requests()) == 2
    ((_, message),) = summaries(world)
    assert "asked to renew: 2; not reached: 1" in message


def test_a_run_without_time_for_the_index_reports_itself_incomplete(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    put_device(world, unique_dsn("LATE"), world.now + timedelta(days=1))
    capsys.readouterr()
    # GIVEN a run with less time than one index read plus the summary needs
    answer = run_watch(seconds=10)
    metrics = emitted_metrics(capsys.readouterr().out)
    # THEN it reads nothing, asks nobody, says so in a summary and in its metric
    assert (answer["complete"], answer["expiring"], answer["notified"]) == (False, 0, True)
    assert renew_requests() == []
    ((subject, message),) = summaries(world)
    assert subject.endswith("(incomplete run)")
    assert "lower bounds" in message
    assert metrics["ExpiryWatchIncomplete"] == 1


def test_a_run_that_runs_out_of_time_while_asking_still_counts_the_expired_devices(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two expired devices and devices expiring soon in every shard
    for n, dsn in enumerate(dsns_by_shard({1: 1, 2: 1}, "GONE")):
        put_device(world, dsn, world.now - timedelta(days=n + 1))
    for dsn in dsns_by_shard({0: 1, 1: 1, 2: 1, 3: 1}, "SOON"):
        put_device(world, dsn, world.now + timedelta(days=1))
    capsys.readouterr()
    # WHEN the run's time runs out after its first renew/due
    answer = run_watch(context=TimeForPublishes(1))
    metrics = emitted_metrics(capsys.readouterr().out)
    # THEN it still reports both expired devices (the alarm's metric), and says it is incomplete
    assert (answer["expired"], answer["complete"], answer["notified"]) == (2, False, True)
    assert metrics["DevicesExpired"] == 2
    assert metrics["ExpiryWatchIncomplete"] == 1
    ((subject, _),) = summaries(world)
    assert "2 expired" in subject and subject.endswith("(incomplete run)")


def test_runs_that_run_out_of_time_go_on_where_the_last_one_stopped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry_watch, "PAGE_SIZE", 2)
    prefix = world.env["THING_PREFIX"]
    # GIVEN five devices of one shard expiring within the window, soonest first (the two at the
    # front are offline for good: they never renew)
    dsns = dsns_by_shard({0: 5}, "RING")
    for n, dsn in enumerate(dsns):
        put_device(world, dsn, world.now + timedelta(days=1 + n))
    things = [f"{prefix}_{dsn}" for dsn in dsns]

    def run(publishes: int) -> tuple[list[str], dict[str, Any]]:
        before = len(renew_requests())
        answer = run_watch(context=TimeForPublishes(publishes))
        return asked(before), answer

    # WHEN each run has time for one page (two devices) only
    first, answer = run(2)
    assert first == things[:2] and answer["complete"] is False
    # THEN the next run asks the next devices, not the front again
    second, answer = run(2)
    assert second == things[2:4] and answer["complete"] is False
    # ... the one after reaches the end of the window (still not the whole window in one run)
    third, answer = run(2)
    assert third == things[4:] and answer["complete"] is False
    # ... and the run after that starts again from the soonest expiry
    fourth, _ = run(2)
    assert fourth == things[:2]
    # WHEN a run has all the time it needs, THEN it goes on, covers the rest, and the run after
    # it asks the whole window in one go and is complete
    rest, answer = run(100)
    assert rest == things[2:] and answer["complete"] is False
    everything, answer = run(100)
    assert everything == things and answer["complete"] is True


def test_a_run_asks_at_most_its_share_and_the_next_runs_ask_the_rest_each_with_a_spread(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry_watch, "PAGE_SIZE", 2)
    prefix = world.env["THING_PREFIX"]
    # GIVEN seven devices expiring within the window, over two shards, and a watch that may ask
    # three devices a run (a spread of 10 s at 0.3 renewals a second)
    dsns = dsns_by_shard({0: 4, 1: 3}, "HERD")
    for n, dsn in enumerate(dsns):
        put_device(world, dsn, world.now + timedelta(days=1 + n))
    get_watch_services().spread = expiry.NudgeSpread(seconds=10, per_second=0.3)

    # WHEN the watch runs three times
    runs = []
    for _ in range(3):
        before = len(renew_requests())
        answer = run_watch()
        runs.append((renew_requests()[before:], answer))

    # THEN no run asks more than three devices, and the runs between them ask every device
    assert [len(requests) for requests, _ in runs] == [3, 3, 3]
    things = {topic.split("/")[1] for requests, _ in runs for topic, _ in requests}
    assert things == {f"{prefix}_{dsn}" for dsn in dsns}
    # ... a run that stopped at its share is not complete, and says why in its summary
    assert [answer["complete"] for _, answer in runs] == [False, False, False]
    assert "asked the most devices a run asks, 3" in summaries(world)[0][1]
    # ... and every request asks the device to renew at a random moment of the next 10 s
    assert {payload["renewWithinSeconds"] for requests, _ in runs for _, payload in requests} == {
        10
    }


def test_a_stored_position_that_left_the_window_is_dropped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry_watch, "PAGE_SIZE", 1)
    # GIVEN a run that stopped after the soonest of three expiring devices
    dsns = dsns_by_shard({0: 3}, "MOVE")
    for n, dsn in enumerate(dsns):
        put_device(world, dsn, world.now + timedelta(days=1 + n))
    before = len(renew_requests())
    run_watch(context=TimeForPublishes(1))
    assert asked(before) == [f"{world.env['THING_PREFIX']}_{dsns[0]}"]
    # WHEN the next run comes after that device's certificate expired
    world.now += timedelta(days=1, seconds=1)
    before = len(renew_requests())
    answer = run_watch()
    # THEN it asks the two left in the window from the front, counts the expired one, and
    # (DynamoDB refuses a start key outside the query's range) does not fail
    assert len(asked(before)) == 2
    assert (answer["expiring"], answer["expired"], answer["complete"]) == (2, 1, True)


def test_every_call_the_watch_makes_is_granted_by_the_template(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto checks no IAM: an ungranted call would pass offline and fail in AWS."""
    monkeypatch.setattr(expiry_watch, "PAGE_SIZE", 1)
    recorder = CallRecorder({world.table: "DevicesTable", world.env["AUDIT_TABLE"]: "AuditTable"})
    watch_services = get_watch_services()
    publisher = world.services.publisher
    assert publisher is not None
    for client in (
        world.services.store.client,  # type: ignore[attr-defined]
        world.services.iot.client,  # type: ignore[attr-defined]
        publisher.client(),  # type: ignore[attr-defined]
        watch_services.notifier.client,  # type: ignore[attr-defined]
        world.services.pca.client,  # type: ignore[attr-defined]
    ):
        recorder.watch(client)
    # GIVEN expiring devices and an expired one; the first run runs out of time and stores its
    # position, the second goes on from it (every kind of call a run makes)
    for dsn in dsns_by_shard({0: 2}, "IAM"):
        put_device(world, dsn, world.now + timedelta(days=2))
    put_device(world, unique_dsn("IAM"), world.now - timedelta(days=2))
    client = world.services.store.client  # type: ignore[attr-defined]
    with (
        recorder.acting_as("ExpiryWatchFunction"),
        recording(client, "GetItem") as reads,
        recording(client, "PutItem") as writes,
    ):
        first = run_watch(context=TimeForPublishes(1))
        answer = run_watch()
    assert (first["expiring"], first["complete"]) == (1, False)
    assert (answer["expiring"], answer["expired"], answer["notified"]) == (1, 1, True)
    actions = {c.action for c in recorder.calls}
    assert {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem"} <= actions
    assert {"iot:Publish", "sns:Publish", "acm-pca:DescribeCertificateAuthority"} <= actions
    assert "acm-pca:GetCertificateAuthorityCertificate" in actions
    # THEN the template grants the function every call it made; of the table itself it reads
    # and writes only its position row, which is all the grant's LeadingKeys condition allows
    assert not_granted(recorder.calls) == []
    assert {c.resource for c in recorder.calls if c.action.startswith("dynamodb:")} == {
        "DevicesTable/index/ExpiryIndex",
        "DevicesTable",
    }
    keys = [r["Key"]["dsn"]["S"] for r in reads] + [w["Item"]["dsn"]["S"] for w in writes]
    assert keys and set(keys) == {WATCH_CURSOR_KEY}
    policies = world_policies("ExpiryWatchFunction")
    (grant,) = [s for s in policies if "dynamodb:PutItem" in s["Action"]]
    assert grant["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [WATCH_CURSOR_KEY]}
    }
    assert sorted(grant["Action"]) == ["dynamodb:GetItem", "dynamodb:PutItem"]


def test_the_watch_warns_before_the_issuing_ca_can_no_longer_fit_a_certificate(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the stack's issuing CA (5 years) and its 365-day device certificates: Private CA
    # refuses every issuance from the day fewer than 365 days are left of the CA
    last = world.services.pca.valid_until() - timedelta(days=365)
    # WHEN the watch runs today, THEN it knows that day, and pages nobody: years are left
    answer = run_watch()
    assert (answer["issuerLastIssue"], answer["issuerDue"]) == (iso(last), False)
    assert summaries(world) == []
    days_left = emitted_metrics(capsys.readouterr().out)["IssuingCaDaysLeft"]
    assert 3 * 365 < days_left <= 4 * 366
    # WHEN it runs 89 days before that day, THEN the operators are told what fails from when,
    # and what to do
    world.now = last - timedelta(days=89)
    answer = run_watch()
    assert answer["issuerDue"] and answer["notified"] and answer["expiring"] == 0
    ((subject, message),) = summaries(world)
    assert subject.endswith("; rotate the issuing CA") and len(subject) <= 100
    assert f"From {iso(last)} a 365-day certificate outlives it" in message
    assert "ISSUE_CERTIFICATE_FAILED" in message and "docs/runbook-ca-rotation.md" in message
    # ... and once that day has passed, since when, and to rotate it now
    world.now = last + timedelta(days=1)
    run_watch()
    message = summaries(world)[-1][1]
    assert f"Since {iso(last)}" in message and "rotate the issuing CA now" in message


def test_the_watch_warns_a_year_before_the_root_ca_ends(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the stack's root CA (10 years), whose end the watch reads from the issuing CA's chain
    pca = boto3.client("acm-pca")
    (root,) = [
        ca
        for ca in pca.list_certificate_authorities()["CertificateAuthorities"]
        if ca["Type"] == "ROOT"
    ]
    ends = root["NotAfter"].astimezone(UTC)
    # WHEN the watch runs today, THEN it knows that day, and pages nobody: years are left
    answer = run_watch()
    assert (answer["rootValidUntil"], answer["rootDue"]) == (iso(ends), False)
    assert summaries(world) == []
    days_left = emitted_metrics(capsys.readouterr().out)["RootCaDaysLeft"]
    assert 9 * 365 < days_left <= 10 * 366
    # WHEN it runs 364 days before the root's end, THEN the operators are told the day and why
    # it matters (the issuing CA, inside the root, is long past its own notice by then)
    world.now = ends - timedelta(days=364)
    answer = run_watch()
    assert answer["rootDue"] and answer["notified"]
    message = summaries(world)[-1][1]
    assert f"The root CA ends on {iso(ends)} (364 days left)" in message
    assert "'The root's end'" in message
    # ... and once it has passed, that it ended
    world.now = ends + timedelta(days=1)
    run_watch()
    assert f"The root CA ended on {iso(ends)}." in summaries(world)[-1][1]


def test_the_subject_names_the_root_when_only_the_root_is_due() -> None:
    from provisioning.usecases.expiry import ExpiryReport, summary_subject

    most = 10**6
    root_only = ExpiryReport(expiring=most, expired=most, complete=False, root_due=True)
    both = ExpiryReport(expiring=most, expired=most, complete=False, root_due=True, issuer_due=True)
    assert summary_subject(root_only).endswith("; the root CA ends soon")
    assert summary_subject(both).endswith("; rotate the issuing CA")
    assert max(len(summary_subject(root_only)), len(summary_subject(both))) <= 100


def test_an_issuing_ca_the_watch_cannot_read_leaves_the_rest_of_the_run_standing(
    world: World,
) -> None:
    # GIVEN an expired device, and an issuing CA with no certificate yet (no end to read)
    put_device(world, unique_dsn("PENDING"), world.now - timedelta(days=1))
    pending = boto3.client("acm-pca").create_certificate_authority(
        CertificateAuthorityConfiguration={
            "KeyAlgorithm": "EC_prime256v1",
            "SigningAlgorithm": "SHA256WITHECDSA",
            "Subject": {"CommonName": "pending issuing CA"},
        },
        CertificateAuthorityType="SUBORDINATE",
    )["CertificateAuthorityArn"]
    world.services.pca._ca_arn = pending  # type: ignore[attr-defined]
    # WHEN the watch runs, THEN it still reports the expired device to the operators
    answer = run_watch()
    assert (answer["expired"], answer["notified"], answer["issuerLastIssue"]) == (1, True, "")
    assert (answer["rootValidUntil"], answer["rootDue"]) == ("", False)
    assert summaries(world) and "1 expired" in summaries(world)[-1][0]


def world_policies(function: str) -> list[dict[str, Any]]:
    from cfnlint.decode import decode

    from tests.support.iam import TEMPLATE

    template, errors = decode(str(TEMPLATE))
    assert not errors and template is not None
    return [
        statement
        for policy in template["Resources"][function]["Properties"]["Policies"]
        for statement in policy["Statement"]
    ]


# --------------------------------------------------------------------------- GET


def test_get_shows_the_expiry_state_of_the_device(world: World) -> None:
    device = Device(unique_dsn())
    status, answer = call("POST", "/certificate", device.body())
    assert status == 200, answer
    not_after = expiry.parse_iso(answer["notAfter"])
    issued_at = world.now

    def expiry_at(moment: datetime) -> str:
        world.now = moment
        status, body = call("GET", f"/devices/{device.dsn}")
        assert status == 200, body
        return str(body["expiry"])

    assert expiry_at(issued_at) == "VALID"
    assert expiry_at(not_after - WINDOW - timedelta(seconds=1)) == "VALID"
    assert expiry_at(not_after - WINDOW + timedelta(seconds=1)) == "EXPIRING"
    assert expiry_at(not_after - timedelta(seconds=1)) == "EXPIRING"
    assert expiry_at(not_after) == "EXPIRED"
    world.now = issued_at
    status, revoked = call("DELETE", f"/devices/{device.dsn}/certificate")
    assert status == 200, revoked
    assert expiry_at(issued_at) == "NONE"


def test_a_device_that_renews_over_mqtt_leaves_the_window(world: World) -> None:
    from provisioning.handlers.renewal import lambda_handler as renewal
    from tests.support.csr import make_csr

    # GIVEN a device whose certificate (as its row records it) expires tomorrow
    device = Device(unique_dsn())
    status, answer = call("POST", "/certificate", device.body())
    assert status == 200, answer
    tomorrow = iso(world.now + timedelta(days=1))
    world.dynamodb.update_item(
        TableName=world.table,
        Key={"dsn": {"S": device.dsn}},
        UpdateExpression="SET not_after = :t",
        ExpressionAttributeValues={":t": {"S": tomorrow}},
    )
    assert run_watch()["renewalsRequested"] == 1
    # WHEN, a while later (past the minimum renewal interval), the device renews over MQTT
    # with its current certificate, as renew/due asked
    world.now += timedelta(hours=1)
    thing = answer["thingName"]
    event = rule_event(thing, answer["certificateId"], {"csr": make_csr()})
    renewal(event, FakeLambdaContext(function_name="RenewalFunction"))
    accepted = [p for t, p in renew_requests() if t.endswith("/certificate/renew/accepted")]
    assert len(accepted) == 1, renew_requests()
    # THEN the index follows the new certificate, and the next run leaves the device alone
    assert index_rows(world)[device.dsn] == accepted[0]["notAfter"] > tomorrow
    assert run_watch()["expiring"] == 0
