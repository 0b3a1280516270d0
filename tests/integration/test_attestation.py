"""Attestation and the manufacturer allowlist, through the real handler, adapters and moto.

The stack is deployed from template.yaml with RequireAttestation on or off (the ``mode``
fixture). Every refusal is checked to create nothing: no device row, no thing, no call to ACM
PCA.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from moto import mock_aws

from devstack.cloudformation.deployer import deploy
from provisioning.adapters.composition import get_services
from provisioning.domain import attestation
from provisioning.ports import Services
from tests.integration.conftest import CUSTOM_RESOURCE_HANDLER, STACK_PARAMETERS, TEMPLATE
from tests.support.csr import explicit_curve_spki, unknown_algorithm_spki
from tests.support.iam import CallRecorder, not_granted
from tests.support.lambda_support import (
    Device,
    FakeLambdaContext,
    api_event,
    fault,
    recording,
    unique_dsn,
)

OWNER, MEMBER, ADMIN, NOBODY = "sub-owner", "sub-member", "sub-admin", "sub-nogroup"


@dataclass
class FactoryDevice(Device):
    """A device as it leaves the factory: its X25519 key and its attestation key."""

    attestation_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def attestation_pem(self) -> str:
        return (
            self.attestation_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def attest(self, challenge: bytes) -> str:
        return attestation.sign(self.attestation_key, self.dsn, challenge, self.spki)

    def attested_body(self, challenge: bytes, **changes: Any) -> str:
        """The app's request: the device's key and its attestation over ``challenge`` (without
        the challenge too when ``attestation=None``)."""
        body = {
            "DSN": self.dsn,
            "publicKey": self.public_key_b64,
            "attestation": self.attest(challenge),
            "attestationChallenge": base64.b64encode(challenge).decode(),
        }
        if "attestation" in changes and changes["attestation"] is None:
            body["attestationChallenge"] = None
        body.update(changes)
        return json.dumps({k: v for k, v in body.items() if v is not None})


@dataclass
class World:
    services: Services
    env: dict[str, str]
    aws: dict[str, Any]
    recorder: CallRecorder


@pytest.fixture(params=["on", "off"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _world(monkeypatch: pytest.MonkeyPatch, require: str) -> Iterator[World]:
    with mock_aws():
        deployment = deploy(
            TEMPLATE,
            {**STACK_PARAMETERS, "RequireAttestation": require},
            run_custom_resources=CUSTOM_RESOURCE_HANDLER.exists(),
        )
        env = dict(deployment.functions["ProvisioningFunction"].environment)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        get_services.cache_clear()
        services = get_services()
        services.sleep = lambda _seconds: None
        recorder = CallRecorder(
            {
                env["DEVICES_TABLE"]: "DevicesTable",
                env["AUDIT_TABLE"]: "AuditTable",
                env["ALLOWLIST_TABLE"]: "AllowlistTable",
            }
        )
        for client in (services.pca.client, services.iot.client, services.store.client):  # type: ignore[attr-defined]
            recorder.watch(client)
        aws = {name: boto3.client(name) for name in ("iot", "dynamodb", "acm-pca")}
        yield World(services, env, aws, recorder)
        get_services.cache_clear()


@pytest.fixture
def world(aws_env: None, monkeypatch: pytest.MonkeyPatch, mode: str) -> Iterator[World]:
    yield from _world(monkeypatch, "true" if mode == "on" else "false")


@pytest.fixture
def attesting(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, "true")


@pytest.fixture
def lenient(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, "false")


# --------------------------------------------------------------------------- calling the API


def call(
    world: World,
    method: str,
    path: str,
    body: str | None = None,
    sub: str = OWNER,
    groups: str = "Members",
) -> tuple[int, dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    event = api_event(body, sub, groups, method=method, path=path)
    parts = path.strip("/").split("/")
    if parts[0] == "allowlist" and len(parts) >= 2:
        resource = "/allowlist/{dsn}" + ("/block" if len(parts) == 3 else "")
        event["resource"] = event["requestContext"]["resourcePath"] = resource
        event["pathParameters"] = {"dsn": parts[1]}
    elif parts[0] == "allowlist":
        event["resource"] = event["requestContext"]["resourcePath"] = "/allowlist"
        event["pathParameters"] = None
    elif path == "/certificate/challenge":
        event["resource"] = event["requestContext"]["resourcePath"] = path
        event["pathParameters"] = None
    if sub == "":
        del event["requestContext"]["authorizer"]["claims"]["sub"]
    with world.recorder.acting_as("ProvisioningFunction"):
        response = lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def load(world: World, *rows: dict[str, str]) -> tuple[int, dict[str, Any]]:
    return call(
        world, "POST", "/allowlist", json.dumps({"devices": list(rows)}), ADMIN, "Administrators"
    )


def listed(world: World, device: FactoryDevice) -> FactoryDevice:
    status, answer = load(
        world, {"DSN": device.dsn, "attestationPublicKey": device.attestation_pem}
    )
    assert status == 200 and answer["results"][0]["result"] == "ADDED", answer
    return device


def provision(world: World, body: str, sub: str = OWNER) -> tuple[int, dict[str, Any]]:
    return call(world, "POST", "/certificate", body, sub)


def challenge_for(world: World, dsn: str, sub: str = OWNER) -> bytes:
    """What the app asks the API first: a challenge for this caller and DSN."""
    status, answer = call(world, "POST", "/certificate/challenge", json.dumps({"DSN": dsn}), sub)
    assert status == 200, answer
    return base64.b64decode(answer["challenge"])


def attested(world: World, device: FactoryDevice, sub: str = OWNER, **changes: Any) -> str:
    """The body the app sends for ``sub``: the device's attestation over a fresh challenge."""
    return device.attested_body(challenge_for(world, device.dsn, sub), **changes)


def block(world: World, dsn: str) -> tuple[int, dict[str, Any]]:
    return call(world, "POST", f"/allowlist/{dsn}/block", None, ADMIN, "Administrators")


def created_nothing(world: World, dsn: str, issued: list[dict[str, Any]]) -> None:
    assert issued == []
    row = world.aws["dynamodb"].get_item(
        TableName=world.env["DEVICES_TABLE"], Key={"dsn": {"S": dsn}}, ConsistentRead=True
    )
    assert "Item" not in row
    things = world.aws["iot"].list_things()["things"]
    assert not [t for t in things if t["thingName"].endswith(f"_{dsn}")]


def certificate_status(world: World, certificate_id: str) -> str:
    description = world.aws["iot"].describe_certificate(certificateId=certificate_id)
    return str(description["certificateDescription"]["status"])


def decrypt(key: x25519.X25519PrivateKey, answer: dict[str, Any]) -> bytes:
    server = x25519.X25519PublicKey.from_public_bytes(base64.b64decode(answer["publicKey"]))
    secret = key.exchange(server)
    return Fernet(base64.urlsafe_b64encode(secret)).decrypt(answer["encryptedPrivateKey"].encode())


# --------------------------------------------------------------------------- provisioning


def test_a_listed_device_that_attests_its_key_is_provisioned(world: World) -> None:
    # GIVEN a device in the allowlist (attestation on or off)
    device = listed(world, FactoryDevice(unique_dsn()))
    # WHEN the app relays its DSN, X25519 key and attestation
    status, answer = provision(world, attested(world, device))
    # THEN it gets its certificate, with a private key only it can read
    assert status == 200, answer
    key = serialization.load_pem_private_key(decrypt(device.key, answer), password=None)
    assert answer["certificateId"]
    assert key.public_key()
    assert certificate_status(world, answer["certificateId"]) == "ACTIVE"


REFUSALS = {
    # name: (how the request is spoilt, given the device and its challenge; the code; listed)
    "no attestation": (
        lambda d, c: d.attested_body(c, attestation=None),
        "ATTESTATION_REQUIRED",
        True,
    ),
    "not in the allowlist": (lambda d, c: d.attested_body(c), "DEVICE_NOT_ALLOWED", False),
    "signed by another key": (
        lambda d, c: d.attested_body(
            c,
            attestation=attestation.sign(ec.generate_private_key(ec.SECP256R1()), d.dsn, c, d.spki),
        ),
        "ATTESTATION_INVALID",
        True,
    ),
    "signed for another DSN": (
        lambda d, c: d.attested_body(
            c, attestation=attestation.sign(d.attestation_key, "OTHER", c, d.spki)
        ),
        "ATTESTATION_INVALID",
        True,
    ),
    "signed for another key": (
        lambda d, c: d.attested_body(
            c, attestation=attestation.sign(d.attestation_key, d.dsn, c, FactoryDevice("x").spki)
        ),
        "ATTESTATION_INVALID",
        True,
    ),
    "signed over another challenge": (
        lambda d, c: d.attested_body(c, attestation=d.attest(bytes(32))),
        "ATTESTATION_INVALID",
        True,
    ),
    "a signature that is not DER": (
        lambda d, c: d.attested_body(c, attestation=base64.b64encode(b"\x01" * 64).decode()),
        "ATTESTATION_INVALID",
        True,
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_with_attestation_on_each_refusal_is_a_403_that_creates_nothing(
    attesting: World, case: str
) -> None:
    spoil, code, is_listed = REFUSALS[case]
    device = FactoryDevice(unique_dsn())
    if is_listed:
        listed(attesting, device)
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(attesting, spoil(device, challenge_for(attesting, device.dsn)))
    assert (status, answer["code"]) == (403, code), answer
    created_nothing(attesting, device.dsn, issued)


def test_an_attestation_that_is_not_base64_is_a_400(world: World) -> None:
    device = listed(world, FactoryDevice(unique_dsn()))
    status, answer = provision(world, attested(world, device, attestation="not base64!"))
    assert (status, answer["code"]) == (400, "ATTESTATION_MALFORMED")


def test_with_attestation_off_devices_need_none_but_a_listed_device_is_checked(
    lenient: World,
) -> None:
    # GIVEN attestation off: an unlisted device without attestation is provisioned as before
    stranger = FactoryDevice(unique_dsn())
    status, answer = provision(lenient, stranger.body())
    assert status == 200, answer
    # ... and so is a listed device that sends none
    quiet = listed(lenient, FactoryDevice(unique_dsn()))
    assert provision(lenient, quiet.body())[0] == 200
    # ... an unlisted device's attestation cannot be checked and is ignored
    assert provision(lenient, attested(lenient, FactoryDevice(unique_dsn())))[0] == 200
    # BUT a listed device whose attestation does not verify is refused, creating nothing
    forged = listed(lenient, FactoryDevice(unique_dsn()))
    challenge = challenge_for(lenient, forged.dsn)
    body = forged.attested_body(
        challenge,
        attestation=attestation.sign(
            ec.generate_private_key(ec.SECP256R1()), forged.dsn, challenge, forged.spki
        ),
    )
    with recording(lenient.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(lenient, body)
    assert (status, answer["code"]) == (403, "ATTESTATION_INVALID")
    created_nothing(lenient, forged.dsn, issued)


# --------------------------------------------------------------------------- key substitution


def _substituting_relay(
    world: World, device: FactoryDevice, *, drop_attestation: bool = False
) -> tuple[int, dict[str, Any], x25519.X25519PrivateKey]:
    """An active attacker on the BLE link: it forwards the device's request with its own
    X25519 key in place of the device's (and the device's attestation, or none)."""
    attacker = x25519.X25519PrivateKey.generate()
    attacker_public = attacker.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = json.loads(attested(world, device))
    body["publicKey"] = base64.b64encode(attacker_public).decode()
    if drop_attestation:
        del body["attestation"], body["attestationChallenge"]
    status, answer = provision(world, json.dumps(body))
    return status, answer, attacker


def test_key_substitution_succeeds_with_attestation_off(lenient: World) -> None:
    # GIVEN a genuine, listed device whose request an attacker relays with its own key, and
    # without the attestation (which names the device's key, so it would give the swap away)
    device = listed(lenient, FactoryDevice(unique_dsn()))
    status, answer, attacker = _substituting_relay(lenient, device, drop_attestation=True)
    # THEN with attestation off the service encrypts the device's private key to the attacker
    assert status == 200, answer
    stolen = decrypt(attacker, answer)
    # ... who re-encrypts it to the device's real key under an ephemeral key of its own
    ephemeral = x25519.X25519PrivateKey.generate()
    secret = ephemeral.exchange(device.key.public_key())
    relayed = Fernet(base64.urlsafe_b64encode(secret)).encrypt(stolen)
    # ... and the device finds a key that matches its certificate, noticing nothing
    device_secret = device.key.exchange(ephemeral.public_key())
    received = Fernet(base64.urlsafe_b64encode(device_secret)).decrypt(relayed)
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    key = serialization.load_pem_private_key(received, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    # while the attacker holds the very same private key
    assert stolen == received


def test_key_substitution_is_refused_with_attestation_on(attesting: World) -> None:
    # GIVEN the same attack on a listed device, attestation on
    device = listed(attesting, FactoryDevice(unique_dsn()))
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer, _ = _substituting_relay(attesting, device)
        # THEN the device's attestation names its own key, not the attacker's: refused
        assert (status, answer["code"]) == (403, "ATTESTATION_INVALID")
        # ... and dropping the attestation does not help either
        status, answer, _ = _substituting_relay(attesting, device, drop_attestation=True)
        assert (status, answer["code"]) == (403, "ATTESTATION_REQUIRED")
    created_nothing(attesting, device.dsn, issued)
    # ... while the device's own request still goes through
    assert provision(attesting, attested(attesting, device))[0] == 200


# --------------------------------------------------------------------------- the admin routes

CALLERS = {
    "member": (MEMBER, "Members"),
    "owner": (OWNER, "Members"),
    "no group": (NOBODY, ""),
    "no identity": ("", ""),
}


@pytest.mark.parametrize("who", CALLERS, ids=list(CALLERS))
def test_only_administrators_may_use_the_allowlist_routes(lenient: World, who: str) -> None:
    # GIVEN a listed device its owner provisioned
    device = listed(lenient, FactoryDevice(unique_dsn()))
    assert provision(lenient, attested(lenient, device))[0] == 200
    sub, groups = CALLERS[who]
    code = {"no identity": "NO_IDENTITY", "no group": "NOT_A_MEMBER"}.get(who, "NOT_AN_ADMIN")
    rows = json.dumps(
        {"devices": [{"DSN": unique_dsn(), "attestationPublicKey": device.attestation_pem}]}
    )
    # WHEN anyone but an administrator calls the allowlist routes: 403, and nothing changes
    for method, path, body in (
        ("POST", "/allowlist", rows),
        ("POST", "/allowlist", "not even JSON"),
        ("GET", f"/allowlist/{device.dsn}", None),
        ("POST", f"/allowlist/{device.dsn}/block", None),
    ):
        status, answer = call(lenient, method, path, body, sub, groups)
        assert (status, answer["code"]) == (403, code), (method, path, answer)
    status, entry = call(lenient, "GET", f"/allowlist/{device.dsn}", None, ADMIN, "Administrators")
    assert (status, entry["status"]) == (200, "ALLOWED")


def test_an_administrator_reads_an_entry_and_an_unknown_dsn_is_404(lenient: World) -> None:
    device = listed(lenient, FactoryDevice(unique_dsn()))
    status, entry = call(lenient, "GET", f"/allowlist/{device.dsn}", None, ADMIN, "Administrators")
    assert status == 200
    assert entry["DSN"] == device.dsn
    assert entry["attestationPublicKey"] == device.attestation_pem
    assert entry["status"] == "ALLOWED" and entry["createdAt"] and not entry["blockedAt"]
    status, answer = call(
        lenient, "GET", f"/allowlist/{unique_dsn()}", None, ADMIN, "Administrators"
    )
    assert (status, answer["code"]) == (404, "NOT_IN_ALLOWLIST")
    status, answer = call(lenient, "GET", "/allowlist/bad%20dsn", None, ADMIN, "Administrators")
    assert (status, answer["code"]) == (400, "DSN_INVALID")


def _spki_b64(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def test_a_batch_load_is_idempotent_and_answers_each_row(lenient: World) -> None:
    good, other, blocked = (FactoryDevice(unique_dsn()) for _ in range(3))
    assert block(lenient, blocked.dsn)[0] == 200
    conflicting = listed(lenient, FactoryDevice(unique_dsn()))
    rows = [
        {"DSN": good.dsn, "attestationPublicKey": good.attestation_pem},
        # the same key as base64 SPKI DER, in a later batch: the same entry
        {"DSN": other.dsn, "attestationPublicKey": _spki_b64(other.attestation_key)},
        {"DSN": "not a dsn!", "attestationPublicKey": good.attestation_pem},
        {"DSN": unique_dsn(), "attestationPublicKey": "garbage"},
        {
            "DSN": unique_dsn(),
            "attestationPublicKey": _spki_b64(rsa.generate_private_key(65537, 2048)),
        },
        {
            "DSN": unique_dsn(),
            "attestationPublicKey": _spki_b64(ec.generate_private_key(ec.SECP384R1())),
        },
        {"DSN": conflicting.dsn, "attestationPublicKey": good.attestation_pem},
        {"DSN": blocked.dsn, "attestationPublicKey": blocked.attestation_pem},
        {"DSN": good.dsn, "attestationPublicKey": good.attestation_pem},
        {"DSN": unique_dsn(), "attestationPublicKey": good.attestation_pem, "extra": "x"},
    ]
    status, first = load(lenient, *rows)
    assert status == 200, first
    outcomes = [(r["result"], r.get("code", "")) for r in first["results"]]
    assert outcomes == [
        ("ADDED", ""),
        ("ADDED", ""),
        ("REFUSED", "DSN_INVALID"),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("REFUSED", "KEY_CONFLICT"),
        ("REFUSED", "DEVICE_BLOCKED"),
        ("REFUSED", "DUPLICATE_ROW"),
        ("REFUSED", "ROW_INVALID"),
    ]
    assert first["counts"] == {"ADDED": 2, "REFUSED": 8}
    # WHEN the same rows are sent again (the other key now in PEM form)
    rows[1] = {"DSN": other.dsn, "attestationPublicKey": other.attestation_pem}
    status, again = load(lenient, *rows)
    # THEN the listed rows are UNCHANGED, nothing else moves, and the conflict kept the old key
    assert [r["result"] for r in again["results"][:2]] == ["UNCHANGED", "UNCHANGED"]
    assert [r.get("code") for r in again["results"][2:]] == [o[1] for o in outcomes[2:]]
    entry = call(lenient, "GET", f"/allowlist/{conflicting.dsn}", None, ADMIN, "Administrators")[1]
    assert entry["attestationPublicKey"] == conflicting.attestation_pem


def _pem(der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def test_a_key_the_crypto_library_cannot_read_or_that_spells_out_its_curve_is_a_row_error(
    lenient: World,
) -> None:
    # GIVEN a batch where good rows surround keys of an algorithm no library knows and P-256
    # keys carrying the curve's explicit parameters (CSR mode refuses those: not the standard
    # form), as base64 SPKI and as PEM
    devices = [FactoryDevice(unique_dsn()) for _ in range(6)]
    explicit = explicit_curve_spki(devices[3].attestation_key)
    keys = [
        devices[0].attestation_pem,
        base64.b64encode(unknown_algorithm_spki()).decode(),
        devices[2].attestation_pem,
        base64.b64encode(explicit).decode(),
        _pem(explicit),
        _pem(unknown_algorithm_spki()),
    ]
    rows = [{"DSN": d.dsn, "attestationPublicKey": k} for d, k in zip(devices, keys, strict=True)]
    # WHEN an administrator loads it
    status, answer = load(lenient, *rows)
    # THEN each bad key is refused on its own row like any other bad key, the batch is a 200,
    # and exactly the good rows were written
    assert status == 200, answer
    assert [(r["result"], r.get("code", "")) for r in answer["results"]] == [
        ("ADDED", ""),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("ADDED", ""),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
        ("REFUSED", "PUBLIC_KEY_INVALID"),
    ]
    listed_now = [
        call(lenient, "GET", f"/allowlist/{d.dsn}", None, ADMIN, "Administrators")[0]
        for d in devices
    ]
    assert listed_now == [200, 404, 200, 404, 404, 404]


def test_a_batch_has_1_to_100_rows(lenient: World) -> None:
    key = FactoryDevice("x").attestation_pem
    rows = [{"DSN": unique_dsn(), "attestationPublicKey": key} for _ in range(101)]
    assert load(lenient, *rows)[1]["code"] == "BATCH_TOO_LARGE"
    assert load(lenient)[1]["code"] == "FIELD_TYPE"
    status, answer = load(lenient, *rows[:100])
    assert status == 200 and answer["counts"] == {"ADDED": 100}


# --------------------------------------------------------------------------- blocking


def test_blocking_revokes_the_certificate_and_refuses_provisioning_again(world: World) -> None:
    # GIVEN a provisioned, listed device
    device = listed(world, FactoryDevice(unique_dsn()))
    status, answer = provision(world, attested(world, device))
    assert status == 200
    # WHEN an administrator blocks its DSN
    status, blocked = block(world, device.dsn)
    # THEN its certificate is revoked in IoT and the device reads REVOKED
    assert status == 200, blocked
    assert blocked["status"] == "BLOCKED" and blocked["blockedAt"]
    assert blocked["revokedCertificateId"] == answer["certificateId"]
    assert certificate_status(world, answer["certificateId"]) == "REVOKED"
    status, row = call(world, "GET", f"/devices/{device.dsn}", None)
    assert (status, row["status"]) == (200, "REVOKED")
    # ... and it cannot be provisioned again, however well it attests
    with recording(world.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, refused = provision(world, attested(world, device))
    assert (status, refused["code"]) == (403, "DEVICE_BLOCKED")
    assert issued == []
    # ... and blocking again changes nothing
    status, again = block(world, device.dsn)
    assert status == 200 and again["revokedCertificateId"] == ""
    assert again["blockedAt"] == blocked["blockedAt"]


def test_a_dsn_never_listed_can_be_blocked_before_it_is_provisioned(lenient: World) -> None:
    device = FactoryDevice(unique_dsn())
    status, entry = block(lenient, device.dsn)
    assert (status, entry["status"], entry["deviceStatus"]) == (200, "BLOCKED", "NONE")
    with recording(lenient.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(lenient, device.body())
    assert (status, answer["code"]) == (403, "DEVICE_BLOCKED")
    created_nothing(lenient, device.dsn, issued)


def test_a_block_whose_revocation_fails_stays_blocked_and_a_retry_finishes(
    lenient: World,
) -> None:
    device = listed(lenient, FactoryDevice(unique_dsn()))
    status, answer = provision(lenient, attested(lenient, device))
    assert status == 200
    # GIVEN IoT refuses to revoke the certificate
    with fault(lenient.services.iot.client, "UpdateCertificate"):  # type: ignore[attr-defined]
        status, failed = block(lenient, device.dsn)
    # THEN the block answers an error, but the DSN is blocked already
    assert status == 502, failed
    assert provision(lenient, attested(lenient, device))[1]["code"] == "DEVICE_BLOCKED"
    # WHEN the administrator repeats the block, the revocation is finished
    status, done = block(lenient, device.dsn)
    assert status == 200, done
    assert certificate_status(lenient, answer["certificateId"]) == "REVOKED"


# --------------------------------------------------------------------------- IAM


def test_every_call_of_the_allowlist_paths_is_granted_by_the_template(world: World) -> None:
    device = listed(world, FactoryDevice(unique_dsn()))
    load(world, {"DSN": device.dsn, "attestationPublicKey": device.attestation_pem})
    assert provision(world, attested(world, device))[0] == 200
    call(world, "GET", f"/allowlist/{device.dsn}", None, ADMIN, "Administrators")
    assert block(world, device.dsn)[0] == 200
    assert provision(world, attested(world, device))[0] == 403
    actions = {(c.action, c.resource) for c in world.recorder.calls}
    assert {
        ("dynamodb:GetItem", "AllowlistTable"),
        ("dynamodb:PutItem", "AllowlistTable"),
        ("dynamodb:UpdateItem", "AllowlistTable"),
    } <= actions
    assert not_granted(world.recorder.calls) == []


# --------------------------------------------------------------------------- CSR mode


def _csr(key: ec.EllipticCurvePrivateKey, dsn: str) -> str:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, dsn)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def test_in_csr_mode_the_attestation_covers_the_csrs_key(attesting: World) -> None:
    # GIVEN a listed device that makes its own key and CSR, and signs the CSR's public key
    device = listed(attesting, FactoryDevice(unique_dsn()))
    own = ec.generate_private_key(ec.SECP256R1())
    spki = own.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    challenge = challenge_for(attesting, device.dsn)
    signature = attestation.sign(device.attestation_key, device.dsn, challenge, spki)
    relayed = {
        "attestation": signature,
        "attestationChallenge": base64.b64encode(challenge).decode(),
    }
    # WHEN a relay swaps in its own CSR, keeping the device's attestation: refused
    intruder = _csr(ec.generate_private_key(ec.SECP256R1()), device.dsn)
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        body = {"DSN": device.dsn, "csr": intruder, **relayed}
        status, answer = provision(attesting, json.dumps(body))
        assert (status, answer["code"]) == (403, "ATTESTATION_INVALID")
        # ... and without any attestation too
        status, answer = provision(attesting, json.dumps({"DSN": device.dsn, "csr": intruder}))
        assert (status, answer["code"]) == (403, "ATTESTATION_REQUIRED")
    created_nothing(attesting, device.dsn, issued)
    # THEN the device's own CSR with its attestation gets a certificate for its own key
    body = {"DSN": device.dsn, "csr": _csr(own, device.dsn), **relayed}
    status, answer = provision(attesting, json.dumps(body))
    assert status == 200, answer
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    assert (
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == spki
    )


# --------------------------------------------------------------------------- races and replays


@contextmanager
def at_call(client: Any, operation: str, action: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``action`` once, just before the request's first ``operation`` call is sent
    (``operation`` may end with ``*``: any operation whose name starts so)."""
    ran: list[int] = []
    event = f"provide-client-params.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    prefix = operation.rstrip("*")

    def hook(model: Any = None, **_: Any) -> None:
        if not ran and (model is None or model.name.startswith(prefix)):
            ran.append(1)
            action()

    if operation.endswith("*"):
        event = event.rstrip("*").rstrip(".")
    client.meta.events.register(event, hook)
    try:
        yield ran
    finally:
        client.meta.events.unregister(event, hook)


def block_with_headers(world: World, dsn: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    from provisioning.handlers.api import lambda_handler

    event = api_event(None, ADMIN, "Administrators", method="POST", path=f"/allowlist/{dsn}/block")
    event["resource"] = event["requestContext"]["resourcePath"] = "/allowlist/{dsn}/block"
    event["pathParameters"] = {"dsn": dsn}
    with world.recorder.acting_as("ProvisioningFunction"):
        response = lambda_handler(event, FakeLambdaContext())
    headers = dict(response.get("headers") or {})
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(name, values[0])
    return response["statusCode"], json.loads(response["body"]), headers


def device_row(world: World, dsn: str) -> dict[str, Any]:
    answer = world.aws["dynamodb"].get_item(
        TableName=world.env["DEVICES_TABLE"], Key={"dsn": {"S": dsn}}, ConsistentRead=True
    )
    return dict(answer.get("Item", {}))


def iot_certificates(world: World) -> dict[str, str]:
    listed_certs = world.aws["iot"].list_certificates()["certificates"]
    return {c["certificateId"]: c["status"] for c in listed_certs}


def test_a_block_during_a_first_provisioning_is_409_and_the_provisioning_rolls_back(
    attesting: World,
) -> None:
    # GIVEN a listed device whose first provisioning is registering its certificate in IoT
    device = listed(attesting, FactoryDevice(unique_dsn()))
    before = iot_certificates(attesting)
    blocked: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    iot = attesting.services.iot.client  # type: ignore[attr-defined]
    # WHEN an administrator blocks the DSN right then
    with at_call(
        iot,
        "RegisterCertificate*",
        lambda: blocked.append(block_with_headers(attesting, device.dsn)),
    ):
        status, answer = provision(attesting, attested(attesting, device))
    # THEN the block is not a 200 (the device may still be provisioned): 409, retry later
    [(block_status, block_answer, headers)] = blocked
    assert (block_status, block_answer["code"]) == (409, "REQUEST_IN_FLIGHT")
    assert int(headers["Retry-After"]) >= 1
    # ... and the provisioning sees the block before its commit and rolls back
    assert (status, answer["code"]) == (403, "DEVICE_BLOCKED")
    assert device_row(attesting, device.dsn) == {}
    new = {k: v for k, v in iot_certificates(attesting).items() if k not in before}
    assert new and "ACTIVE" not in new.values()
    # ... and the repeated block is a 200 with nothing to revoke
    status, again = block(attesting, device.dsn)
    assert (status, again["deviceStatus"], again["revokedCertificateId"]) == (200, "NONE", "")


def test_a_block_just_before_the_commit_refuses_the_provisioning(attesting: World) -> None:
    # GIVEN a listed device whose first provisioning is about to commit
    device = listed(attesting, FactoryDevice(unique_dsn()))
    blocked: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    dynamodb = attesting.services.store.client  # type: ignore[attr-defined]
    # WHEN the block lands right before the commit
    iot = attesting.services.iot.client  # type: ignore[attr-defined]
    with (
        recording(iot, "RegisterCertificate") as registered,
        at_call(
            dynamodb,
            "TransactWriteItems",
            lambda: blocked.append(block_with_headers(attesting, device.dsn)),
        ),
    ):
        status, answer = provision(attesting, attested(attesting, device))
    # THEN the commit, which checks the allowlist in its own transaction, refuses it, and the
    # block did not claim to have revoked anything while the request held the device
    assert (status, answer["code"]) == (403, "DEVICE_BLOCKED"), answer
    [(block_status, block_answer, _)] = blocked
    assert (block_status, block_answer["code"]) == (409, "REQUEST_IN_FLIGHT")
    # ... the device has no row, and the certificate issued for it was revoked
    row = attesting.aws["dynamodb"].get_item(
        TableName=attesting.env["DEVICES_TABLE"], Key={"dsn": {"S": device.dsn}}
    )
    assert "Item" not in row
    [certificate] = [
        x509.load_pem_x509_certificate(c["certificatePem"].encode()) for c in registered
    ]
    certificate_id = hashlib.sha256(
        certificate.public_bytes(serialization.Encoding.DER)
    ).hexdigest()
    assert certificate_status(attesting, certificate_id) == "REVOKED"
    # ... and repeating the block (as the 409 asks) answers 200: nothing is left to revoke
    status, done = block(attesting, device.dsn)
    assert (status, done["deviceStatus"]) == (200, "NONE"), done


def test_a_replayed_attestation_cannot_take_a_released_device(attesting: World) -> None:
    # GIVEN Alice provisioned a listed device with its attestation, then released it
    device = listed(attesting, FactoryDevice(unique_dsn()))
    captured = attested(attesting, device, "sub-alice")
    status, first = provision(attesting, captured, sub="sub-alice")
    assert status == 200, first
    assert call(attesting, "DELETE", f"/devices/{device.dsn}", None, "sub-alice")[0] == 200
    # WHEN Carol replays Alice's {DSN, publicKey, attestation}
    with recording(attesting.services.pca.client, "IssueCertificate") as issued:  # type: ignore[attr-defined]
        status, answer = provision(attesting, captured, sub="sub-carol")
    # THEN she is refused before anything is issued, and owns nothing
    assert (status, answer["code"]) == (403, "ATTESTATION_REPLAYED")
    assert issued == []
    assert call(attesting, "GET", f"/devices/{device.dsn}", None, "sub-carol")[0] == 404
    # ... while the device itself, with a fresh key and attestation, is provisioned for Bob
    fresh = FactoryDevice(device.dsn, attestation_key=device.attestation_key)
    status, answer = provision(attesting, attested(attesting, fresh, "sub-bob"), sub="sub-bob")
    assert status == 200, answer


def test_a_key_certified_while_the_request_worked_is_refused_at_the_commit(
    attesting: World,
) -> None:
    # GIVEN a listed device's request that passed the replay check
    device = listed(attesting, FactoryDevice(unique_dsn()))
    before = iot_certificates(attesting)
    key_id = attestation.certified_key_id(device.spki)

    def certified_elsewhere() -> None:
        attesting.aws["dynamodb"].put_item(
            TableName=attesting.env["ALLOWLIST_TABLE"],
            Item={"dsn": {"S": f"{device.dsn}#key#{key_id}"}, "certified_at": {"S": "x"}},
        )

    iot = attesting.services.iot.client  # type: ignore[attr-defined]
    # WHEN the same key is recorded as certified before its commit
    with at_call(iot, "RegisterCertificate*", certified_elsewhere):
        status, answer = provision(attesting, attested(attesting, device))
    # THEN the commit's condition refuses it, and everything is rolled back
    assert (status, answer["code"]) == (403, "ATTESTATION_REPLAYED")
    assert device_row(attesting, device.dsn) == {}
    new = {k: v for k, v in iot_certificates(attesting).items() if k not in before}
    assert new and "ACTIVE" not in new.values()


def test_an_attestation_key_with_a_second_pem_block_after_it_is_refused(lenient: World) -> None:
    first, second = FactoryDevice("a").attestation_pem, FactoryDevice("b").attestation_pem
    status, answer = load(lenient, {"DSN": unique_dsn(), "attestationPublicKey": first + second})
    assert status == 200
    assert answer["results"][0] | {"DSN": ""} == {
        "DSN": "",
        "result": "REFUSED",
        "code": "PUBLIC_KEY_INVALID",
    }


def test_loads_and_blocks_are_audited_once_with_the_administrator(lenient: World) -> None:
    device = FactoryDevice(unique_dsn())
    row = {"DSN": device.dsn, "attestationPublicKey": device.attestation_pem}
    assert load(lenient, row)[0] == 200
    assert load(lenient, row)[1]["results"][0]["result"] == "UNCHANGED"
    assert block(lenient, device.dsn)[0] == 200
    assert block(lenient, device.dsn)[0] == 200
    items = lenient.aws["dynamodb"].query(
        TableName=lenient.env["AUDIT_TABLE"],
        KeyConditionExpression="pk = :dsn",
        ExpressionAttributeValues={":dsn": {"S": device.dsn}},
    )["Items"]
    events = sorted((i["event"]["S"], i["actor"]["S"]) for i in items)
    assert events == [("ALLOWLIST_ADD", ADMIN), ("ALLOWLIST_BLOCK", ADMIN)]


# --------------------------------------------------------------------------- compressed CSR keys


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def compressed_point_csr(key: ec.EllipticCurvePrivateKey, dsn: str) -> tuple[str, bytes]:
    """A CSR whose SubjectPublicKeyInfo carries a compressed EC point, and that SPKI's DER."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = _der(
        0x30,
        _der(0x06, bytes.fromhex("2a8648ce3d0201")) + _der(0x06, bytes.fromhex("2a8648ce3d030107")),
    )
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + point))
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, dsn)]).public_bytes()
    info = _der(0x30, _der(0x02, b"\x00") + name + spki + _der(0xA0, b""))
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    ecdsa_sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    der = _der(0x30, info + ecdsa_sha256 + _der(0x03, b"\x00" + signature))
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "\n".join(["-----BEGIN CERTIFICATE REQUEST-----", *lines])
    return pem + "\n-----END CERTIFICATE REQUEST-----\n", spki


def test_a_csr_with_a_compressed_point_is_refused_before_anything_is_checked_or_made(
    attesting: World,
) -> None:
    # GIVEN a listed device whose CSR carries its key as a compressed point, and whose
    # attestation signs that SPKI exactly
    device = listed(attesting, FactoryDevice(unique_dsn()))
    own = ec.generate_private_key(ec.SECP256R1())
    pem, spki = compressed_point_csr(own, device.dsn)
    challenge = challenge_for(attesting, device.dsn)
    signature = attestation.sign(device.attestation_key, device.dsn, challenge, spki)
    # WHEN it asks for a certificate
    body = {
        "DSN": device.dsn,
        "csr": pem,
        "attestation": signature,
        "attestationChallenge": base64.b64encode(challenge).decode(),
    }
    status, answer = provision(attesting, json.dumps(body))
    # THEN the key's encoding is refused (the SPKI the device signs is the standard one)
    assert (status, answer["code"]) == (400, "CSR_KEY_UNSUPPORTED")
    assert attesting.services.store.get(device.dsn) is None
