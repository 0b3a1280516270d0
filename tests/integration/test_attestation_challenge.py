"""The attestation is bound to the caller (challenge.py), through the real handler, adapters
and moto, RequireAttestation on: a challenge is the caller's, for one DSN, once, for minutes.

Every refusal is checked to create nothing: no device row, no thing, no call to ACM PCA.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from provisioning.domain import attestation
from provisioning.domain.challenge import CHALLENGE_SECONDS
from provisioning.handlers.api import lambda_handler
from tests.integration.test_attestation import (
    OWNER,
    FactoryDevice,
    World,
    at_call,
    call,
    challenge_for,
    created_nothing,
    listed,
    provision,
)
from tests.integration.test_attestation import attesting as attesting  # the fixture
from tests.support.iam import not_granted
from tests.support.lambda_support import FakeLambdaContext, api_event, fault, recording, unique_dsn

MALLORY = "sub-mallory"


def ask(world: World, body: object, sub: str = OWNER, groups: str = "Members") -> tuple[int, dict]:
    return call(world, "POST", "/certificate/challenge", json.dumps(body), sub, groups)


def test_the_route_gives_a_member_a_fresh_32_byte_challenge_for_minutes(attesting: World) -> None:
    dsn = unique_dsn()
    before = datetime.now(UTC)
    status, first = ask(attesting, {"DSN": dsn})
    assert status == 200, first
    assert first["DSN"] == dsn and len(base64.b64decode(first["challenge"])) == 32
    expires = datetime.fromisoformat(first["expiresAt"])
    assert before + timedelta(seconds=CHALLENGE_SECONDS - 5) <= expires
    assert expires <= datetime.now(UTC) + timedelta(seconds=CHALLENGE_SECONDS)
    assert ask(attesting, {"DSN": dsn})[1]["challenge"] != first["challenge"]
    # Authorisation as for provisioning, and the body held to the same rules
    assert ask(attesting, {"DSN": dsn}, "sub-admin", "Administrators")[0] == 200
    assert ask(attesting, {"DSN": dsn}, "sub-nogroup", "") == (403, ask_code("NOT_A_MEMBER"))
    assert ask(attesting, {"DSN": "no spaces"})[1]["code"] == "DSN_INVALID"
    assert ask(attesting, {"DSN": dsn, "x": 1})[1]["code"] == "UNKNOWN_FIELD"
    assert not_granted(attesting.recorder.calls) == []


def ask_code(code: str) -> dict[str, str]:
    return {
        "msg": "Only members of the Members or Administrators group may manage devices.",
        "code": code,
    }


def test_a_captured_attestation_replayed_from_another_account_is_refused(
    attesting: World,
) -> None:
    # GIVEN the owner's app fetched a challenge, and the device signed it over the air
    device = listed(attesting, FactoryDevice(unique_dsn()))
    captured = device.attested_body(challenge_for(attesting, device.dsn, OWNER))
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        # WHEN Mallory, another member, sends what he captured first, from his account
        status, answer = provision(attesting, captured, sub=MALLORY)
        # THEN it is refused: the challenge is not his
        assert (status, answer["code"]) == (403, "CHALLENGE_INVALID")
        # ... and with a challenge of his own, the device's signature does not cover it
        body = json.loads(captured)
        body["attestationChallenge"] = base64.b64encode(
            challenge_for(attesting, device.dsn, MALLORY)
        ).decode()
        status, answer = provision(attesting, json.dumps(body), sub=MALLORY)
        assert (status, answer["code"]) == (403, "ATTESTATION_INVALID")
    created_nothing(attesting, device.dsn, issued)
    # ... while the owner's own request, a moment later, still goes through
    status, answer = provision(attesting, captured, sub=OWNER)
    assert status == 200, answer
    assert call(attesting, "GET", f"/devices/{device.dsn}", None, MALLORY)[0] == 404


def test_a_challenge_is_used_once_whatever_the_first_requests_outcome(attesting: World) -> None:
    # GIVEN a request that presented its challenge and then failed (ACM PCA refused)
    device = listed(attesting, FactoryDevice(unique_dsn()))
    body = device.attested_body(challenge_for(attesting, device.dsn))
    with fault(attesting.services.pca.client, "IssueCertificate"):  # type: ignore[attr-defined]
        assert provision(attesting, body)[0] == 502
    # WHEN the same request is sent again
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(attesting, body)
    # THEN the challenge is spent: refused before anything is issued or owned (the thing
    # the failed request made stays, as after any rolled-back request)
    assert (status, answer["code"]) == (403, "CHALLENGE_USED")
    assert issued == []
    assert attesting.services.store.get(device.dsn) is None
    # ... and a new challenge, signed by the device, provisions it
    status, answer = provision(
        attesting, device.attested_body(challenge_for(attesting, device.dsn))
    )
    assert status == 200, answer


def test_an_expired_challenge_is_refused(attesting: World) -> None:
    device = listed(attesting, FactoryDevice(unique_dsn()))
    body = device.attested_body(challenge_for(attesting, device.dsn))
    # GIVEN the challenge's minutes have passed
    later = datetime.now(UTC) + timedelta(seconds=CHALLENGE_SECONDS + 1)
    attesting.services.clock = lambda: later
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(attesting, body)
    assert (status, answer["code"]) == (403, "CHALLENGE_EXPIRED")
    created_nothing(attesting, device.dsn, issued)
    # ... while one fetched now is in time
    assert (
        provision(attesting, device.attested_body(challenge_for(attesting, device.dsn)))[0] == 200
    )


def test_a_challenge_for_another_dsn_is_refused(attesting: World) -> None:
    # GIVEN a challenge the caller fetched for another device, signed by this one
    device = listed(attesting, FactoryDevice(unique_dsn()))
    elsewhere = challenge_for(attesting, unique_dsn())
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(attesting, device.attested_body(elsewhere))
    assert (status, answer["code"]) == (403, "CHALLENGE_INVALID")
    created_nothing(attesting, device.dsn, issued)
    # ... and one never issued at all
    status, answer = provision(attesting, device.attested_body(bytes(range(32))))
    assert (status, answer["code"]) == (403, "CHALLENGE_INVALID")


def test_two_requests_racing_with_one_challenge_cannot_both_use_it(attesting: World) -> None:
    # GIVEN a request about to consume its challenge
    device = listed(attesting, FactoryDevice(unique_dsn()))
    body = device.attested_body(challenge_for(attesting, device.dsn))
    raced: list[tuple[int, dict[str, object]]] = []

    def second_request() -> None:
        event = api_event(body, OWNER, "Members")
        response = lambda_handler(event, FakeLambdaContext())
        raced.append((response["statusCode"], json.loads(response["body"])))

    dynamodb = attesting.services.store.client  # type: ignore[attr-defined]
    # WHEN a second request with the same challenge consumes it right then, and finishes
    with at_call(dynamodb, "UpdateItem", second_request):
        status, answer = provision(attesting, body)
    # THEN exactly one of them used it: the second got the certificate, the first is refused
    [(second_status, second_answer)] = raced
    assert second_status == 200, second_answer
    assert (status, answer["code"]) == (403, "CHALLENGE_USED")
    assert attestation.certified_key_id(device.spki)  # the second's key, certified once
    assert (
        call(attesting, "GET", f"/devices/{device.dsn}", None, OWNER)[1]["certificateId"]
        == (second_answer["certificateId"])
    )
