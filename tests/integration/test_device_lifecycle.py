"""GET /devices/{dsn} and DELETE /devices/{dsn}/certificate: reading and revoking a device.

Only the owner or an administrator may read or revoke a device; anyone else is told the
device does not exist.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.support.lambda_support import (
    Device,
    FakeLambdaContext,
    api_event,
    fault,
    recording,
    unique_dsn,
)

ALICE, BOB, ADMIN = "sub-alice", "sub-bob", "sub-admin"


@pytest.fixture
def iot(provisioning_env: dict[str, str]) -> Any:
    return boto3.client("iot")


def call(method: str, path: str, sub: str, groups: str = "Members", body: str | None = None):
    from provisioning.handlers.api import lambda_handler

    event = api_event(body, sub, groups, method=method, path=path)
    response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def provisioned(sub: str = ALICE) -> tuple[Device, dict[str, Any]]:
    device = Device(unique_dsn())
    status, answer = call("POST", "/certificate", sub, body=device.body())
    assert status == 200, answer
    return device, answer


def status_of(iot: Any, certificate_id: str) -> str:
    return iot.describe_certificate(certificateId=certificate_id)["certificateDescription"][
        "status"
    ]


def test_the_owner_reads_their_device(services, iot) -> None:
    device, answer = provisioned()
    status, body = call("GET", f"/devices/{device.dsn}", ALICE)
    assert status == 200, body
    assert body["DSN"] == device.dsn
    assert body["status"] == "ACTIVE"
    assert body["certificateId"] == answer["certificateId"]
    assert body["notAfter"] == answer["notAfter"]
    assert body["ownedByCaller"] is True
    assert "encryptedPrivateKey" not in body and "certificatePem" not in body


@pytest.mark.parametrize(
    ("sub", "groups", "expected"),
    [(BOB, "Members", 404), (ADMIN, "Administrators", 200), ("sub-nobody", "", 403)],
)
def test_who_else_may_read_a_device(services, iot, sub, groups, expected) -> None:
    device, _ = provisioned()
    status, body = call("GET", f"/devices/{device.dsn}", sub, groups)
    assert status == expected, body
    if expected == 404:
        assert body == {"msg": "No such device.", "code": "DEVICE_NOT_FOUND"}
    if expected == 200:
        assert body["ownedByCaller"] is False


def test_an_unknown_or_malformed_dsn(services) -> None:
    assert call("GET", f"/devices/{unique_dsn()}", ALICE)[0] == 404
    status, body = call("GET", "/devices/bad%20dsn", ALICE)
    assert (status, body["code"]) == (400, "DSN_INVALID")
    # A well-formed DSN longer than a thing name allows, as the body says of it
    status, body = call("GET", f"/devices/{'A' * 200}", ALICE)
    assert (status, body["code"]) == (400, "DSN_TOO_LONG")
    status, body = call("DELETE", f"/devices/{'A' * 116}/certificate", ALICE)
    assert (status, body["code"]) == (400, "DSN_TOO_LONG")


def test_the_owner_revokes_their_device_everywhere(services, iot, provisioning_env) -> None:
    # GIVEN Alice's provisioned device
    device, answer = provisioned()
    certificate_id = answer["certificateId"]
    thing = answer["thingName"]

    # WHEN she revokes its certificate
    with recording(services.pca.client, "RevokeCertificate") as revoked:
        status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)

    # THEN IoT will not accept it again, it is detached, and ACM PCA has revoked it
    assert status == 200, body
    assert body["status"] == "REVOKED"
    assert body["revokedCertificateId"] == certificate_id
    assert status_of(iot, certificate_id) == "REVOKED"
    assert iot.list_thing_principals(thingName=thing)["principals"] == []
    assert len(revoked) == 1 and revoked[0]["CertificateSerial"]
    # ... the device still belongs to Alice and says REVOKED
    status, body = call("GET", f"/devices/{device.dsn}", ALICE)
    assert (status, body["status"], body["certificateId"]) == (200, "REVOKED", "")
    # ... the revocation is in the audit trail
    items = boto3.client("dynamodb").query(
        TableName=provisioning_env["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{device.dsn}"}},
    )["Items"]
    assert sorted(item["event"]["S"] for item in items) == ["ISSUE", "REVOKE"]

    # WHEN she revokes again, nothing more happens
    with recording(services.pca.client, "RevokeCertificate") as again:
        status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)
    assert (status, body["status"]) == (200, "REVOKED")
    assert again == []


def test_a_revoked_device_still_belongs_to_its_owner(services, iot) -> None:
    device, _ = provisioned()
    call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)
    # another member cannot take it over
    status, body = call("POST", "/certificate", BOB, body=Device(device.dsn).body())
    assert (status, body["code"]) == (409, "DEVICE_OWNED")
    # the owner can provision it again
    status, body = call("POST", "/certificate", ALICE, body=Device(device.dsn).body())
    assert status == 200, body
    assert status_of(iot, body["certificateId"]) == "ACTIVE"


def test_another_member_cannot_revoke(services, iot) -> None:
    device, answer = provisioned()
    with recording(services.pca.client, "RevokeCertificate") as revoked:
        status, body = call("DELETE", f"/devices/{device.dsn}/certificate", BOB)
    assert (status, body["code"]) == (404, "DEVICE_NOT_FOUND")
    assert revoked == []
    assert status_of(iot, answer["certificateId"]) == "ACTIVE"


def test_an_administrator_may_revoke_any_device(services, iot) -> None:
    device, answer = provisioned()
    status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ADMIN, "Administrators")
    assert status == 200, body
    assert status_of(iot, answer["certificateId"]) == "REVOKED"


def test_a_revocation_the_table_refuses_leaves_the_device_as_it_was(services, iot) -> None:
    # GIVEN the table takes the lease (the first UpdateItem) but refuses the revocation's write
    # (all three attempts), then recovers
    device, answer = provisioned()
    with fault(services.store.client, "UpdateItem", skip=1, times=3):
        status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)
    assert (status, body["code"]) == (502, "STORE_DEVICE_FAILED")
    assert status_of(iot, answer["certificateId"]) == "ACTIVE"
    status, body = call("GET", f"/devices/{device.dsn}", ALICE)
    assert (body["status"], body["certificateId"]) == ("ACTIVE", answer["certificateId"])
    # ... and a retry revokes
    assert call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)[0] == 200
    assert status_of(iot, answer["certificateId"]) == "REVOKED"


def test_a_revocation_iot_refuses_is_finished_by_the_retry(services, iot) -> None:
    # GIVEN IoT refuses to change the certificate's status during the revocation
    device, answer = provisioned()
    with fault(services.iot.client, "UpdateCertificate"):
        status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)
    # THEN no 200: IoT still has the certificate ACTIVE; the row no longer names it
    assert (status, body["code"]) == (502, "REVOKE_CERTIFICATE_FAILED")
    assert status_of(iot, answer["certificateId"]) == "ACTIVE"
    status, body = call("GET", f"/devices/{device.dsn}", ALICE)
    assert (body["status"], body["certificateId"]) == ("REVOKED", "")
    # ... and the retry finishes the revocation in IoT before it answers 200
    status, body = call("DELETE", f"/devices/{device.dsn}/certificate", ALICE)
    assert (status, body["status"]) == (200, "REVOKED")
    assert status_of(iot, answer["certificateId"]) == "REVOKED"
