"""Fleet management end to end: real tokens, the local gateway built from template.yaml, the
Lambda workers, moto; driven by the app's own commands where it has one."""

from __future__ import annotations

import contextlib
import io
import json
import re
import urllib.error
import urllib.request
from typing import Any
from unittest import mock

import provisioning_app
import pytest

from devstack.stack import RunningStack
from tests.support.offline import AppUser, device_key, gateway_error, new_member, post_certificate
from tests.support.offline import unique_dsn as new_dsn

pytestmark = pytest.mark.e2e


def http(
    method: str, url: str, token: str | None, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def app(stack: RunningStack, user: AppUser, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    """The app's command as a user would run it (``stdin`` piped in); its exit code, stdout and
    stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch("sys.stdin", io.StringIO(stdin)),
    ):
        code = provisioning_app.main(
            [
                argv[0],
                "--state",
                str(stack.state_path),
                "--username",
                user.username,
                # one argument: a generated password may start with "-"
                f"--password={user.password}",
                *argv[1:],
            ]
        )
    return code, out.getvalue(), err.getvalue()


def provision(stack: RunningStack, user: AppUser) -> tuple[str, dict[str, Any]]:
    dsn = new_dsn()
    _, public = device_key()
    status, answer = post_certificate(
        stack.api_url, {"DSN": dsn, "publicKey": public}, user.id_token
    )
    assert status == 200, answer
    return dsn, answer


def test_list_transfer_claim_release_through_the_gateway(offline_stack: RunningStack) -> None:
    stack = offline_stack
    alice, bob = new_member(stack), new_member(stack)
    admin = new_member(stack, "Administrators")
    first, _ = provision(stack, alice)
    second, answer = provision(stack, alice)

    # Alice lists her two devices with the app, one per page
    code, out, err = app(stack, alice, "list", "--all", "--limit", "1")
    assert code == 0, err
    assert {first, second} <= set(re.findall(r"^(E2E-\w+)\t", out, re.M))
    assert "2 device(s)" in out
    # ... Bob sees none of them; an administrator sees them with their owner
    code, out, _ = app(stack, bob, "list", "--json")
    assert code == 0 and json.loads(out) == {"devices": []}
    status, page = http("GET", f"{stack.api_url}/devices?limit=100", admin.id_token)
    assert status == 200
    assert {d["DSN"] for d in page["devices"]} >= {first, second}
    # ... the gateway passes the query string through; the function validates it
    status, body = http("GET", f"{stack.api_url}/devices?limit=0", alice.id_token)
    assert (status, body["code"]) == (400, "LIMIT_INVALID")
    assert http("GET", f"{stack.api_url}/devices", None) == (401, gateway_error("UNAUTHORIZED"))

    # Alice hands the second device to Bob
    code, out, err = app(stack, alice, "transfer", second)
    assert code == 0, err
    (transfer_code,) = re.findall(r"transfer code for \S+: (\S+)", out)
    # ... a claim body the model refuses never reaches the function
    status, body = http(
        "POST", f"{stack.api_url}/devices/{second}/claim", bob.id_token, {"code": 1}
    )
    assert (status, body) == (400, gateway_error("BAD_REQUEST_BODY"))
    # ... a wrong code is refused; the right one makes Bob the owner
    # ... (the code is piped in, never an argument that ps and shell history would show)
    code, _, err = app(stack, bob, "claim", second, stdin="AAAA-AAAA-AAAA\n")
    assert code == 4 and "TRANSFER_CODE_INVALID" in err
    code, out, err = app(stack, bob, "claim", second, stdin=transfer_code + "\n")
    assert code == 0, err
    assert "is yours now" in out
    iot = stack.client("iot")
    described = iot.describe_certificate(certificateId=answer["certificateId"])
    assert described["certificateDescription"]["status"] == "REVOKED"
    assert http("GET", f"{stack.api_url}/devices/{second}", alice.id_token)[0] == 404
    code, out, _ = app(stack, bob, "list")
    assert second in out

    # Alice starts a transfer of the first device and cancels it
    assert app(stack, alice, "transfer", first)[0] == 0
    code, out, err = app(stack, alice, "transfer", first, "--cancel")
    assert code == 0 and "cancelled" in out, err
    status, body = http("DELETE", f"{stack.api_url}/devices/{first}/transfer", alice.id_token)
    assert (status, body["code"]) == (404, "TRANSFER_NOT_FOUND")
    # ... and offers it again; Bob declines with the code (a DELETE with a body)
    code, out, _ = app(stack, alice, "transfer", first)
    (offered,) = re.findall(r"transfer code for \S+: (\S+)", out)
    code, out, err = app(
        stack, bob, "transfer", first, "--cancel", "--decline", stdin=offered + "\n"
    )
    assert code == 0 and "cancelled" in out, err
    code, _, err = app(stack, bob, "claim", first, stdin=offered + "\n")
    assert code == 4 and "TRANSFER_CODE_INVALID" in err

    # Bob releases his device: anyone may provision it then
    code, _, err = app(stack, bob, "release", second)
    assert code == 2 and "--yes" in err
    code, out, err = app(stack, bob, "release", second, "--yes")
    assert code == 0 and "released" in out, err
    assert http("GET", f"{stack.api_url}/devices/{second}", bob.id_token)[0] == 404
    code, _, err = app(stack, bob, "release", second, "--yes")
    assert code == 4 and "DEVICE_NOT_FOUND" in err
    _, public = device_key()
    status, again = post_certificate(
        stack.api_url, {"DSN": second, "publicKey": public}, alice.id_token
    )
    assert status == 200, again
