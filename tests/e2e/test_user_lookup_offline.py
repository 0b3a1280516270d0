"""An administrator sees owners as Cognito subs: ``provisioning_app.py user`` names the user
behind one, and gives the sub of a user name or email, from the offline stack's user pool."""

from __future__ import annotations

import contextlib
import io
import json

import provisioning_app
import pytest

from devstack.stack import RunningStack
from tests.support.offline import device_key as new_device_key
from tests.support.offline import new_member, post_certificate, unique_dsn

pytestmark = pytest.mark.e2e


def user_command(stack: RunningStack, *argv: str) -> tuple[int, str, str]:
    """``provisioning_app.py user --state ... ARGV`` as an administrator runs it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = provisioning_app.main(["user", "--state", str(stack.state_path), *argv])
    return code, out.getvalue(), err.getvalue()


def owner_of(stack: RunningStack, dsn: str) -> str:
    """The owner sub an administrator's ``list`` shows for ``dsn``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = provisioning_app.main(["list", "--state", str(stack.state_path), "--json"])
    assert code == 0
    devices = {d["DSN"]: d for d in json.loads(out.getvalue())["devices"]}
    return str(devices[dsn]["owner"])


def test_the_user_behind_an_owner_sub_and_back(offline_stack: RunningStack) -> None:
    # GIVEN a member's device, which an administrator lists with its owner's sub
    alice = new_member(offline_stack)
    dsn = unique_dsn()
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "publicKey": new_device_key()[1]}, alice.id_token
    )
    assert status == 200, answer
    sub = owner_of(offline_stack, dsn)

    # WHEN the administrator looks the sub up, THEN it is the member, with her email
    code, out, err = user_command(offline_stack, sub)
    assert code == 0, err
    assert out == f"{alice.username}\tsub={sub}\temail={alice.username}@example.com\t" + (
        "CONFIRMED\tenabled\n"
    )

    # ... and her user name, or her email, gives the sub back
    for query in (alice.username, f"{alice.username}@example.com"):
        code, out, err = user_command(offline_stack, query, "--json")
        assert code == 0, err
        assert [(u["username"], u["sub"]) for u in json.loads(out)["users"]] == [
            (alice.username, sub)
        ]


@pytest.mark.parametrize(
    ("query", "code", "error"),
    [
        ("00000000-0000-4000-8000-000000000000", 3, "error: no user 00000000-"),
        ("nobody-here", 3, "error: no user nobody-here in pool "),
        ('x" or username ^= "', 2, "error: give a sub, a user name or an email"),
    ],
)
def test_a_query_that_matches_no_one_says_so(
    offline_stack: RunningStack, query: str, code: int, error: str
) -> None:
    got, out, err = user_command(offline_stack, query)
    assert (got, out) == (code, "")
    assert err.startswith(error), err
