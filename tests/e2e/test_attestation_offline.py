"""Provisioning with RequireAttestation on, end to end through the offline stack: the local
gateway serves the allowlist routes from template.yaml (authorizer, body model), real tokens,
the Lambda worker, moto."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack.stack import RunningStack
from provisioning.domain import attestation
from tests.support.offline import (
    AppUser,
    device_key,
    gateway_error,
    new_member,
    parameter_updated,
    post_certificate,
    unique_dsn,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def attesting_stack(offline_stack: RunningStack) -> Iterator[RunningStack]:
    """The session's stack, updated to RequireAttestation=true for this module's tests."""
    with parameter_updated(offline_stack, "RequireAttestation", "true") as stack:
        yield stack


def http(method: str, url: str, body: Any, token: str | None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Factory:
    """The factory's side: a device's attestation key, its public half for the allowlist."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def body(self, dsn: str, public_b64: str, challenge: bytes) -> dict[str, str]:
        """The app's request: the device's key and its attestation over the API's challenge."""
        spki = attestation.x25519_spki_der(base64.b64decode(public_b64))
        return {
            "DSN": dsn,
            "publicKey": public_b64,
            "attestation": attestation.sign(self.key, dsn, challenge, spki),
            "attestationChallenge": base64.b64encode(challenge).decode(),
        }


def challenge(api: str, dsn: str, user: AppUser) -> bytes:
    """POST /certificate/challenge, as the app asks before it asks the device."""
    status, answer = http("POST", f"{api}/certificate/challenge", {"DSN": dsn}, user.id_token)
    assert status == 200, answer
    return base64.b64decode(answer["challenge"])


def test_a_listed_device_is_provisioned_and_others_are_refused(
    attesting_stack: RunningStack,
) -> None:
    api = attesting_stack.api_url
    admin = new_member(attesting_stack, "Administrators")
    member: AppUser = new_member(attesting_stack)
    factory, dsn, stranger = Factory(), unique_dsn(), unique_dsn()

    # GIVEN the administrator loads the device into the allowlist (a member may not)
    rows = {"devices": [{"DSN": dsn, "attestationPublicKey": factory.public_pem}]}
    assert http("POST", f"{api}/allowlist", rows, member.id_token)[1]["code"] == "NOT_AN_ADMIN"
    assert http("POST", f"{api}/allowlist", rows, None) == (401, gateway_error("UNAUTHORIZED"))
    status, loaded = http("POST", f"{api}/allowlist", rows, admin.id_token)
    assert (status, loaded["results"]) == (200, [{"DSN": dsn, "result": "ADDED"}]), loaded
    # ... a batch over 100 rows is the function's BATCH_TOO_LARGE, and a bad row is answered
    # on its own (API Gateway's model checks only the body's shape)
    too_many = {"devices": rows["devices"] * 101}
    status, refused = http("POST", f"{api}/allowlist", too_many, admin.id_token)
    assert (status, refused["code"]) == (400, "BATCH_TOO_LARGE")
    odd = {"DSN": unique_dsn(), "attestationPublicKey": factory.public_pem, "note": "x"}
    status, loaded = http("POST", f"{api}/allowlist", {"devices": [odd, 7]}, admin.id_token)
    assert (status, [r.get("code") for r in loaded["results"]]) == (
        200,
        ["ROW_INVALID", "ROW_INVALID"],
    ), loaded
    assert http("POST", f"{api}/allowlist", {"devices": "all"}, admin.id_token) == (
        400,
        gateway_error("BAD_REQUEST_BODY"),
    )

    # WHEN the member provisions it with its attestation
    _, public = device_key()
    status, answer = post_certificate(
        api, factory.body(dsn, public, challenge(api, dsn, member)), member.id_token
    )
    # THEN it gets its certificate
    assert status == 200, answer
    # ... while a request without attestation, or from a device not listed, is refused
    _, other_public = device_key()
    status, refused = post_certificate(
        api, {"DSN": dsn, "publicKey": other_public}, member.id_token
    )
    assert (status, refused["code"]) == (403, "ATTESTATION_REQUIRED")
    status, refused = post_certificate(
        api,
        Factory().body(stranger, other_public, challenge(api, stranger, member)),
        member.id_token,
    )
    assert (status, refused["code"]) == (403, "DEVICE_NOT_ALLOWED")
    # ... and a key swapped on the way is refused (the attestation names the device's key)
    swapped = factory.body(dsn, public, challenge(api, dsn, member)) | {"publicKey": other_public}
    status, refused = post_certificate(api, swapped, member.id_token)
    assert (status, refused["code"]) == (403, "ATTESTATION_INVALID")

    # WHEN the administrator blocks the DSN
    status, blocked = http("POST", f"{api}/allowlist/{dsn}/block", None, admin.id_token)
    # THEN its certificate is revoked in IoT and the device can no longer be provisioned
    assert (status, blocked["revokedCertificateId"]) == (200, answer["certificateId"]), blocked
    iot = attesting_stack.client("iot")
    described = iot.describe_certificate(certificateId=answer["certificateId"])
    assert described["certificateDescription"]["status"] == "REVOKED"
    status, refused = post_certificate(
        api, factory.body(dsn, public, challenge(api, dsn, member)), member.id_token
    )
    assert (status, refused["code"]) == (403, "DEVICE_BLOCKED")
    status, entry = http("GET", f"{api}/allowlist/{dsn}", None, admin.id_token)
    assert (status, entry["status"], entry["attestationPublicKey"]) == (
        200,
        "BLOCKED",
        factory.public_pem,
    )


def test_a_captured_attestation_is_useless_from_another_account(
    attesting_stack: RunningStack,
) -> None:
    api = attesting_stack.api_url
    admin = new_member(attesting_stack, "Administrators")
    owner, mallory = new_member(attesting_stack), new_member(attesting_stack)
    factory, dsn = Factory(), unique_dsn()
    rows = {"devices": [{"DSN": dsn, "attestationPublicKey": factory.public_pem}]}
    assert http("POST", f"{api}/allowlist", rows, admin.id_token)[0] == 200
    # GIVEN the owner's app fetched a challenge and the device signed it, over the air
    _, public = device_key()
    captured = factory.body(dsn, public, challenge(api, dsn, owner))
    # WHEN Mallory, who captured it, sends it first from his own account
    status, refused = post_certificate(api, captured, mallory.id_token)
    # THEN it is refused (the gateway's model let the fields through; the function said no)
    assert (status, refused["code"]) == (403, "CHALLENGE_INVALID")
    # ... and so is a challenge of his own beside the device's signature
    own = base64.b64encode(challenge(api, dsn, mallory)).decode()
    status, refused = post_certificate(
        api, captured | {"attestationChallenge": own}, mallory.id_token
    )
    assert (status, refused["code"]) == (403, "ATTESTATION_INVALID")
    # ... while the owner's request goes through, once
    status, answer = post_certificate(api, captured, owner.id_token)
    assert status == 200, answer
    status, refused = post_certificate(api, captured, owner.id_token)
    assert (status, refused["code"]) == (403, "ATTESTATION_REPLAYED")  # its key is certified
    # ... and the gateway refuses a challenge that is not 32 bytes of base64, or a bad body
    status, _ = post_certificate(api, captured | {"attestationChallenge": "QUJD"}, owner.id_token)
    assert status == 400
    assert http("POST", f"{api}/certificate/challenge", {"DSN": "a b"}, owner.id_token) == (
        400,
        gateway_error("BAD_REQUEST_BODY"),
    )
    assert http("POST", f"{api}/certificate/challenge", {"DSN": dsn}, None) == (
        401,
        gateway_error("UNAUTHORIZED"),
    )
