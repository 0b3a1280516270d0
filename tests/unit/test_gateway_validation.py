"""A body the gateway's model refuses is answered with what is wrong in it, as API Gateway's
``$context.error.validationErrorString`` says it, inside the template's JSON error body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from devstack.apigateway.gateway_responses import GatewayResponses, GatewayResponseSpec
from devstack.apigateway.validation import EMPTY, NOT_JSON, body_errors
from devstack.cloudformation.template import load_yaml

API = load_yaml(Path(__file__).resolve().parents[2] / "template.yaml")["Resources"][
    "ProvisioningApi"
]["Properties"]
KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="


def validator(model: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(API["Models"][model])


def refused(model: str, body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    problems = body_errors(validator(model), raw)
    assert problems is not None, "the model accepted the body"
    return problems


def bad_body_answer(problems: str) -> dict[str, Any]:
    """The BAD_REQUEST_BODY answer the template's gateway response gives for ``problems``."""
    spec = API["GatewayResponses"]["BAD_REQUEST_BODY"]
    responses = GatewayResponses(
        {"BAD_REQUEST_BODY": GatewayResponseSpec(400, {}, dict(spec["ResponseTemplates"]))}
    )
    rendered = responses.render(
        "BAD_REQUEST_BODY", "Invalid request body", validation_error=problems
    )
    assert rendered.status == 400
    answer: dict[str, Any] = json.loads(rendered.body)
    return answer


def test_a_lower_case_field_is_named_as_missing_and_as_unknown() -> None:
    problems = refused("CertificateRequest", {"dsn": "SN-0001", "publicKey": KEY})
    assert 'object has missing required properties (["DSN"])' in problems
    assert 'properties which are not allowed by the schema: ["dsn"]' in problems


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        ({"DSN": "bad dsn", "publicKey": KEY}, '"bad dsn"'),  # the refused DSN
        ({"DSN": "SN-0001", "publicKey": "c2hvcnQ="}, '"c2hvcnQ="'),  # a short key
    ],
)
def test_a_value_a_pattern_refuses_is_quoted_with_the_pattern(body: Any, quoted: str) -> None:
    problems = refused("CertificateRequest", body)
    assert f"does not match input string {quoted}" in problems


def test_an_unknown_encryption_lists_the_possible_values() -> None:
    problems = refused(
        "CertificateRequest", {"DSN": "SN-0001", "publicKey": KEY, "encryption": "aes"}
    )
    assert (
        'instance value ("aes") not found in enum (possible values: '
        '["fernet-x25519","x25519-hkdf-sha256-aes256gcm"])'
    ) in problems


def test_both_key_fields_fail_the_one_of() -> None:
    csr = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 64
    problems = refused("CertificateRequest", {"DSN": "SN-0001", "publicKey": KEY, "csr": csr})
    assert "instance failed to match exactly one schema (matched 0 out of 2)" in problems


def test_a_short_transfer_code_gives_its_length_and_the_minimum() -> None:
    problems = refused("ClaimRequest", {"code": "ABC"})
    assert problems == '[string "ABC" is too short (length: 3, required minimum: 12)]'


def test_a_wrong_type_names_the_type_sent_and_the_type_allowed() -> None:
    problems = refused("ChallengeRequest", {"DSN": 7})
    assert "instance type (integer) does not match any allowed primitive type" in problems
    assert '(allowed: ["string"])' in problems


@pytest.mark.parametrize(("raw", "problems"), [(b"", EMPTY), (b"{not json", NOT_JSON)])
def test_an_empty_or_unparsable_body_says_so(raw: bytes, problems: str) -> None:
    assert refused("ChallengeRequest", raw) == problems


def test_a_body_the_model_accepts_has_no_problems() -> None:
    assert body_errors(validator("ChallengeRequest"), b'{"DSN": "SN-0001"}') is None


def test_the_answer_stays_json_whatever_the_body_held() -> None:
    # GIVEN a refused value full of quotes, backslashes, a newline and a template variable
    nasty = 'a"b\\c\n$context.requestId</script>'
    problems = refused("ChallengeRequest", {"DSN": nasty})
    # WHEN the template's gateway response carries it
    answer = bad_body_answer(problems)
    # THEN the body is JSON, of the API's error shape, and its msg holds the text as refused
    assert set(answer) == {"msg", "code"}
    assert answer["code"] == "BAD_REQUEST_BODY"
    assert answer["msg"].startswith("The request body does not match what this route accepts: [")
    assert json.dumps(nasty) in answer["msg"]
