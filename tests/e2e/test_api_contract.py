"""The offline stack answers as docs/openapi.yaml says, for inputs Schemathesis generates from
it: as a member and as an administrator, no input gets a 5xx, every status and body is one the
contract documents for the route, and every error is ``{"msg", "code"}``.

Bounded: a few derandomized examples per operation and mode (valid inputs, and inputs the
contract says are invalid), no shrinking, no deadline; a failure names the case to replay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from demo import http_post_json
from devstack.stack import RunningStack
from tests.support.offline import device_key, new_member, post_certificate, unique_dsn

pytestmark = pytest.mark.e2e

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
EXAMPLES = 6  # per operation, mode and role: 13 operations x 2 x 2 x 6, ~300 requests


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error, the function's or the gateway's, is a JSON object {"msg", "code"}."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert isinstance(body, dict), body
        assert set(body) == {"msg", "code"}, body
        assert isinstance(body["msg"], str) and body["msg"], body
        assert isinstance(body["code"], str) and body["code"].isupper(), body
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    error_shape,
]


def statuses(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    token: str,
    path_parameters: dict[str, str] | None = None,
) -> set[int]:
    """Send what Schemathesis generates for the operation; the statuses it was answered with.
    Raises on the first case that breaks a check."""
    answered: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def send(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers={"Authorization": token}, checks=CHECKS, timeout=30
        )
        answered.add(response.status_code)

    send()
    return answered


@pytest.mark.parametrize("group", ["Members", "Administrators"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_offline_api_keeps_its_contract(
    offline_stack: RunningStack, group: str, mode: GenerationMode
) -> None:
    # GIVEN the contract and a signed-in user of the group
    schema = schemathesis.openapi.from_path(CONTRACT)
    token = new_member(offline_stack, group).id_token
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        # WHEN Schemathesis sends what it generates from the operation's schema
        try:
            answered[operation.label] = statuses(operation, mode, offline_stack.api_url, token)
        except Exception as failure:  # reported for every operation at once
            failures.append(f"{operation.label}: {failure}")
    # THEN every answer keeps the contract, and every operation was called
    assert not failures, "\n\n".join(failures)
    assert len(answered) == len(OPERATIONS), answered


# The routes on one device, in an order that leaves each something to act on.
DEVICE_ROUTES = [
    ("/devices/{dsn}", "GET"),
    ("/devices/{dsn}/transfer", "POST"),
    ("/devices/{dsn}/transfer", "DELETE"),
    ("/allowlist/{dsn}", "GET"),
    ("/devices/{dsn}/certificate", "DELETE"),
    ("/devices/{dsn}", "DELETE"),
    ("/allowlist/{dsn}/block", "POST"),
]


@pytest.mark.parametrize("group", ["Members", "Administrators"])
def test_the_answers_about_an_owned_device_keep_the_contract(
    offline_stack: RunningStack, group: str
) -> None:
    # GIVEN a user of the group with a device of their own
    schema = schemathesis.openapi.from_path(CONTRACT)
    token = new_member(offline_stack, group).id_token
    dsn = unique_dsn("CONTRACT")
    status, _ = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "publicKey": device_key()[1]}, token
    )
    assert status == 200
    # WHEN Schemathesis calls each route on that device (the other inputs generated)
    answered = {
        f"{method} {path}": statuses(
            schema[path][method],
            GenerationMode.POSITIVE,
            offline_stack.api_url,
            token,
            path_parameters={"dsn": dsn},
        )
        for path, method in DEVICE_ROUTES
    }
    # THEN every answer kept the contract, and the device's own routes answered 200
    for path, method in DEVICE_ROUTES[:3] + DEVICE_ROUTES[4:6]:
        assert 200 in answered[f"{method} {path}"], answered


OPERATIONS = [
    (path, method)
    for path, item in yaml.safe_load(CONTRACT.read_text())["paths"].items()
    for method in item
    if method != "parameters"
]


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        # a lower-case field: missing as DSN, unknown as dsn
        ("/certificate", {"dsn": "SN-0001"}, ['(["DSN"])', '["dsn"]']),
        # a DSN with a space: the pattern and the value it refused
        ("/certificate/challenge", {"DSN": "SN 0001"}, ['does not match input string "SN 0001"']),
        # a transfer code too short
        ("/devices/SN-0001/claim", {"code": "K7QM"}, ['string "K7QM" is too short']),
    ],
)
def test_a_typo_in_a_json_body_is_named_in_the_answer(
    offline_stack: RunningStack, route: str, body: dict[str, Any], named: list[str]
) -> None:
    # GIVEN a member
    token = new_member(offline_stack).id_token
    # WHEN they send a JSON body with a mistake the route's model refuses
    status, answer = http_post_json(f"{offline_stack.api_url}{route}", body, token)
    # THEN the gateway answers BAD_REQUEST_BODY, and its message says what is wrong
    assert status == 400
    assert answer["code"] == "BAD_REQUEST_BODY"
    for text in named:
        assert text in answer["msg"], answer["msg"]
