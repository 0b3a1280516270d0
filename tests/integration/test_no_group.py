"""A user who signed in but is in neither group (Members, Administrators) gets 403
NOT_A_MEMBER from every route of the API, whatever the request, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioning.ports import Services
from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn

ALICE, ADMIN, NOBODY = "sub-alice", "sub-admin", "sub-nobody"
GROUPS = {ALICE: "Members", ADMIN: "Administrators", NOBODY: ""}

# Every route of the handler (checked against its resolver below), with a request a member or
# an administrator would send; {dsn} is a device Alice provisioned.
ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/certificate"): lambda dsn: Device(unique_dsn()).body(),
    ("POST", "/certificate/challenge"): lambda dsn: json.dumps({"DSN": dsn}),
    ("GET", "/devices"): None,
    ("GET", "/devices/{dsn}"): None,
    ("DELETE", "/devices/{dsn}/certificate"): None,
    ("DELETE", "/devices/{dsn}"): None,
    ("POST", "/devices/{dsn}/transfer"): None,
    ("DELETE", "/devices/{dsn}/transfer"): None,
    ("POST", "/devices/{dsn}/claim"): lambda dsn: json.dumps({"code": "ABCD-EFGH-JKLM"}),
    ("POST", "/allowlist"): lambda dsn: json.dumps(
        {"devices": [{"DSN": unique_dsn(), "attestationPublicKey": "x"}]}
    ),
    ("GET", "/allowlist/{dsn}"): None,
    ("POST", "/allowlist/{dsn}/block"): None,
}


def call(method: str, resource: str, sub: str, dsn: str, body: str | None) -> tuple[int, Any]:
    from provisioning.handlers.api import lambda_handler

    path = resource.replace("{dsn}", dsn)
    event = api_event(body, sub, GROUPS[sub], method=method, path=path)
    event["resource"] = event["requestContext"]["resourcePath"] = resource
    event["pathParameters"] = {"dsn": dsn} if "{dsn}" in resource else None
    response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_the_table_names_every_route_of_the_handler() -> None:
    from provisioning.handlers.api import app

    routes = {
        (route.method, route.path.replace("<dsn>", "{dsn}"))
        for route in app._static_routes + app._dynamic_routes
    }
    assert routes == set(ROUTES)


@pytest.mark.parametrize("body", ["the route's own", "not even JSON"])
@pytest.mark.parametrize(("method", "resource"), list(ROUTES), ids=[" ".join(r) for r in ROUTES])
def test_a_user_in_no_group_gets_not_a_member_from_every_route(
    services: Services, method: str, resource: str, body: str
) -> None:
    # GIVEN a device its owner provisioned
    device = Device(unique_dsn())
    status, _ = call("POST", "/certificate", ALICE, device.dsn, device.body())
    assert status == 200
    before = services.store.get(device.dsn)
    make = ROUTES[(method, resource)]
    request = (make(device.dsn) if make else None) if body == "the route's own" else "{nope"
    # WHEN a user in no group calls the route
    status, answer = call(method, resource, NOBODY, device.dsn, request)
    # THEN 403 NOT_A_MEMBER, and the device is as it was
    assert (status, answer["code"]) == (403, "NOT_A_MEMBER"), answer
    assert services.store.get(device.dsn) == before
