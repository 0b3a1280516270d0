"""CORS through the offline stack's gateway, as the template declares it: the app's page may
call the API and read every answer, gateway errors included; a page of another origin may not.

The session's stack is deployed with AppOrigin = the origin it serves the app from.
"""

from __future__ import annotations

import json

import pytest

from devstack.stack import RunningStack
from devstack.webapp_server import origin_of
from tests.support.cors import page_may_read, preflight_allows, request
from tests.support.offline import device_key, new_member, unique_dsn

pytestmark = pytest.mark.e2e

OTHER_ORIGIN = "https://evil.example"
# What the app sends: its ID token and JSON bodies.
APP_HEADERS = ["authorization", "content-type"]


def _preflight(
    stack: RunningStack, path: str, origin: str, method: str
) -> tuple[int, dict[str, str]]:
    status, headers, _body = request(
        stack.api_url + path,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ",".join(APP_HEADERS),
        },
    )
    return status, headers


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/certificate", "POST"),
        ("/certificate/challenge", "POST"),
        ("/devices", "GET"),
        ("/devices/SOME-DSN", "DELETE"),
        ("/devices/SOME-DSN/claim", "POST"),
    ],
)
def test_the_preflight_lets_the_app_and_no_other_origin_call(
    offline_stack: RunningStack, path: str, method: str
) -> None:
    app_origin = origin_of(offline_stack.app_url)
    # WHEN the app's browser asks, with no token (a preflight never carries one)
    status, headers = _preflight(offline_stack, path, app_origin, method)
    # THEN the gateway itself answers yes for the app's origin, method and headers
    assert preflight_allows(status, headers, app_origin, method, APP_HEADERS), (status, headers)
    # WHEN a page of another origin asks THEN its browser is told no
    status, headers = _preflight(offline_stack, path, OTHER_ORIGIN, method)
    assert not preflight_allows(status, headers, OTHER_ORIGIN, method, APP_HEADERS)
    assert headers["access-control-allow-origin"] == app_origin


def test_the_functions_answers_are_readable_by_the_app_only(offline_stack: RunningStack) -> None:
    user = new_member(offline_stack)
    app_origin = origin_of(offline_stack.app_url)
    # WHEN the app lists its devices THEN its page may read the answer
    status, headers, body = request(
        offline_stack.api_url + "/devices",
        headers={"Authorization": user.id_token, "Origin": app_origin},
    )
    assert status == 200, body
    assert page_may_read(headers, app_origin)
    # ... and the function's own errors too (a device that is not the caller's)
    status, headers, body = request(
        offline_stack.api_url + f"/devices/{unique_dsn()}",
        headers={"Authorization": user.id_token, "Origin": app_origin},
    )
    assert status == 404 and "code" in json.loads(body), body
    assert page_may_read(headers, app_origin)
    # WHEN a page of another origin sends the same request (with a stolen token, say)
    status, headers, _body = request(
        offline_stack.api_url + "/devices",
        headers={"Authorization": user.id_token, "Origin": OTHER_ORIGIN},
    )
    # THEN the function answers it no CORS header: that page cannot read the answer
    assert status == 200
    assert not page_may_read(headers, OTHER_ORIGIN)
    assert "access-control-allow-origin" not in headers


def test_gateway_errors_are_readable_by_the_app(offline_stack: RunningStack) -> None:
    user = new_member(offline_stack)
    app_origin = origin_of(offline_stack.app_url)
    _key, public_key = device_key()
    # WHEN the app calls without a token THEN the authorizer's 401 is readable by the page
    status, headers, body = request(
        offline_stack.api_url + "/certificate",
        method="POST",
        headers={"Origin": app_origin, "Content-Type": "application/json"},
        body=json.dumps({"DSN": unique_dsn(), "publicKey": public_key}).encode(),
    )
    assert status == 401 and json.loads(body)["code"] == "UNAUTHORIZED"
    assert page_may_read(headers, app_origin)
    # WHEN the body does not match the model THEN the validator's 400 is readable, with its code
    status, headers, body = request(
        offline_stack.api_url + "/certificate",
        method="POST",
        headers={
            "Origin": app_origin,
            "Content-Type": "application/json",
            "Authorization": user.id_token,
        },
        body=json.dumps({"DSN": "bad dsn!", "publicKey": public_key}).encode(),
    )
    assert status == 400 and json.loads(body)["code"] == "BAD_REQUEST_BODY"
    assert page_may_read(headers, app_origin)
    # WHEN the route does not exist THEN that 403 is readable too
    status, headers, body = request(
        offline_stack.api_url + "/nothing", headers={"Origin": app_origin}
    )
    assert status == 403 and json.loads(body)["code"] == "ROUTE_NOT_FOUND"
    assert page_may_read(headers, app_origin)
    # ... and none of them is readable by a page of another origin
    assert not page_may_read(headers, OTHER_ORIGIN)
