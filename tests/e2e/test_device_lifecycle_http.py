"""Reading and revoking a device over real HTTP, with real tokens, through the local gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from devstack.stack import RunningStack
from tests.support.offline import (
    device_key,
    gateway_error,
    new_member,
    post_certificate,
    unique_dsn,
)

pytestmark = pytest.mark.e2e


def http(method: str, url: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_owner_reads_and_revokes_and_a_stranger_sees_nothing(offline_stack: RunningStack) -> None:
    # GIVEN Alice's provisioned device
    alice, bob = new_member(offline_stack), new_member(offline_stack)
    _, public = device_key()
    dsn = unique_dsn()
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "publicKey": public}, alice.id_token
    )
    assert status == 200, answer
    device_url = f"{offline_stack.api_url}/devices/{dsn}"

    # THEN Alice reads it; Bob is told it does not exist; no token is a 401
    status, body = http("GET", device_url, alice.id_token)
    assert (status, body["status"], body["certificateId"]) == (
        200,
        "ACTIVE",
        answer["certificateId"],
    )
    assert http("GET", device_url, bob.id_token) == (
        404,
        {"msg": "No such device.", "code": "DEVICE_NOT_FOUND"},
    )
    assert http("GET", device_url, None) == (401, gateway_error("UNAUTHORIZED"))
    assert http("DELETE", f"{device_url}/certificate", bob.id_token)[0] == 404

    # WHEN Alice revokes it
    status, body = http("DELETE", f"{device_url}/certificate", alice.id_token)

    # THEN IoT holds the certificate REVOKED and the device says so
    assert (status, body["status"]) == (200, "REVOKED"), body
    iot = offline_stack.client("iot")
    described = iot.describe_certificate(certificateId=answer["certificateId"])
    assert described["certificateDescription"]["status"] == "REVOKED"
    assert http("GET", device_url, alice.id_token)[1]["status"] == "REVOKED"
