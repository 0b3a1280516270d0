"""Crash safety end to end: the provisioning function in its own worker process, under its real
Timeout, while DynamoDB holds its writes (the moto server runs in this process, so a test can
pause one of its handlers the way a slow or partitioned dependency would).

- A held commit: the function gives up within its budget, rolls back, and answers 502 itself
  (not the gateway's 504); the held writes, when they finally run, change nothing.
- A process killed while its commit is held: the held write then lands after the death; the
  owner is told to wait out the dead request's lease (409 with Retry-After); the sweeper then
  retires what the dead request left, and the device ends with one ACTIVE certificate, named
  by its row, everything else revoked.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from moto.dynamodb.responses import DynamoHandler

from devstack import cli
from devstack.stack import RunningStack
from tests.support.offline import AppUser, device_key, new_member, unique_dsn

pytestmark = pytest.mark.e2e


class HeldTransactions:
    """Holds every TransactWriteItems the moto server receives until released."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()


@contextmanager
def holding_transactions() -> Iterator[HeldTransactions]:
    held = HeldTransactions()
    original = DynamoHandler.transact_write_items

    def transact_write_items(self: Any, *args: Any, **kwargs: Any) -> Any:
        held.arrived.set()
        held.released.wait(timeout=120)
        return original(self, *args, **kwargs)

    DynamoHandler.transact_write_items = transact_write_items  # type: ignore[method-assign]
    try:
        yield held
    finally:
        held.released.set()
        DynamoHandler.transact_write_items = original  # type: ignore[method-assign]


def post(stack: RunningStack, user: AppUser, dsn: str) -> tuple[int, dict[str, Any], Any]:
    body = json.dumps({"DSN": dsn, "publicKey": device_key()[1]}).encode()
    request = urllib.request.Request(  # noqa: S310 - the local gateway
        f"{stack.api_url}/certificate",
        data=body,
        method="POST",
        headers={"Authorization": user.id_token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def provisioning_workers(stack: RunningStack) -> list[int]:
    """Process ids of this stack's provisioning function's execution environments (Linux
    /proc): the workers this test process started, never another stack's on the machine."""
    package = stack.invoker.packages["ProvisioningFunction"].root.resolve()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = Path(os.readlink(entry / "cwd"))
            # the parent's pid is the 4th field of stat, after the command in parentheses
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"lambda_worker.py" in cmdline and cwd == package and parent == os.getpid():
            pids.append(int(entry.name))
    return pids


def statuses_of(stack: RunningStack, thing: str) -> dict[str, str]:
    """IoT status of every certificate issued for the thing (by the thing name in its CN)."""
    iot = stack.client("iot")
    found = {}
    for summary in iot.list_certificates(pageSize=250)["certificates"]:
        pem = iot.describe_certificate(certificateId=summary["certificateId"])[
            "certificateDescription"
        ]["certificatePem"]
        if f"CN={thing}" in _subject(pem):
            found[summary["certificateId"]] = summary["status"]
    return found


def _subject(pem: str) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()


def row_of(stack: RunningStack, dsn: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(
        TableName=stack.outputs["DevicesTableName"], Key={"dsn": {"S": dsn}}, ConsistentRead=True
    )["Item"]
    return {k: next(iter(v.values())) for k, v in item.items()}


def attached(stack: RunningStack, thing: str) -> set[str]:
    principals = stack.client("iot").list_thing_principals(thingName=thing)["principals"]
    return {arn.rsplit("/", 1)[1] for arn in principals}


def test_a_held_commit_is_rolled_back_within_the_budget(offline_stack: RunningStack) -> None:
    # GIVEN a provisioned device
    user, dsn = new_member(offline_stack), unique_dsn("HELD")
    status, first, _ = post(offline_stack, user, dsn)
    assert status == 200, first
    thing = first["thingName"]

    # WHEN DynamoDB holds every transaction while the owner rotates the certificate
    with holding_transactions() as held:
        status, answer, _ = post(offline_stack, user, dsn)
        # THEN the function answers on its own, within its Timeout: 502 naming the step
        assert (status, answer["code"]) == (502, "STORE_DEVICE_FAILED"), answer
        assert held.arrived.is_set()
        # ... having put the old certificate back: it is still the one ACTIVE
        assert [c for c, s in statuses_of(offline_stack, thing).items() if s == "ACTIVE"] == [
            first["certificateId"]
        ]
    # WHEN the held transactions finally run, they change nothing: the lease is gone
    time.sleep(0.5)
    row = row_of(offline_stack, dsn)
    assert row["certificate_id"] == first["certificateId"]
    assert not {"intent", "lease_request_id"} & set(row)

    # ... and the owner's retry rotates
    status, second, _ = post(offline_stack, user, dsn)
    assert status == 200, second
    statuses = statuses_of(offline_stack, thing)
    assert [c for c, s in statuses.items() if s == "ACTIVE"] == [second["certificateId"]]
    assert statuses[first["certificateId"]] == "REVOKED"


def test_a_process_killed_with_its_commit_in_flight(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a provisioned device
    user, dsn = new_member(offline_stack), unique_dsn("KILL")
    status, first, _ = post(offline_stack, user, dsn)
    assert status == 200, first
    thing = first["thingName"]

    with holding_transactions() as held:
        # WHEN the owner rotates, and the function's process is killed while DynamoDB holds its
        # commit (as Lambda kills an environment at its Timeout)
        answers: list[tuple[int, dict[str, Any], Any]] = []
        rotation = threading.Thread(target=lambda: answers.append(post(offline_stack, user, dsn)))
        rotation.start()
        assert held.arrived.wait(timeout=30)
        workers = provisioning_workers(offline_stack)
        assert workers
        for pid in workers:
            os.killpg(pid, signal.SIGKILL)
        rotation.join(timeout=60)
        # THEN the gateway answers a failed integration
        ((status, answer, _),) = answers
        assert (status, answer["code"]) == (502, "INTEGRATION_FAILURE"), answer
        # WHEN the held commit then runs: it lands, after its request died
        held.released.set()
        time.sleep(0.5)
    row = row_of(offline_stack, dsn)
    assert row["certificate_id"] != first["certificateId"]
    assert "lease_request_id" in row  # the dead request's lease, with the old certificate
    assert any(name.startswith("retire_") for name in row)  # ... written down to retire
    assert statuses_of(offline_stack, thing)[first["certificateId"]] == "INACTIVE"

    # WHEN the owner asks while the dead request's lease runs: 409 with Retry-After
    status, busy, headers = post(offline_stack, user, dsn)
    assert (status, busy["code"]) == (409, "REQUEST_IN_FLIGHT"), busy
    time.sleep(int(headers["Retry-After"]))
    # ... and once it has expired, the sweeper runs (`devstack sweep`: its own function and
    # package, through the Lambda Invoke API)
    assert cli.main(["sweep", "--state", str(offline_stack.state_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    # THEN it retired the old certificate the dead request left, and the row is settled
    assert report["certificatesRetired"] >= 1 and report["unfinished"] == 0, report
    statuses = statuses_of(offline_stack, thing)
    current = row_of(offline_stack, dsn)["certificate_id"]
    assert [c for c, s in statuses.items() if s == "ACTIVE"] == [current]
    assert statuses[first["certificateId"]] == "REVOKED"
    assert attached(offline_stack, thing) == {current}
    assert not any(
        n.startswith("retire_") or n in ("intent", "lease_request_id")
        for n in row_of(offline_stack, dsn)
    )

    # ... and the owner's next request goes through at once
    status, second, _ = post(offline_stack, user, dsn)
    assert status == 200, second
    statuses = statuses_of(offline_stack, thing)
    assert [c for c, s in statuses.items() if s == "ACTIVE"] == [second["certificateId"]]
