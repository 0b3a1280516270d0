"""POST /certificate through the real handler, adapters and moto, with resources from template.yaml.

Every test uses its own DSN; AWS failures are injected with botocore's before-send hook so
that botocore's retries see them exactly like real errors.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.adapters.composition import get_services
from provisioning.domain.budget import FORWARD_RESERVE_SECONDS, HARD_STOP_SECONDS, Budget
from provisioning.domain.crypto import common_name_for
from provisioning.domain.errors import ProvisioningError
from provisioning.domain.models import User, parse_provision_request
from provisioning.ports import Services
from provisioning.usecases.provision import provision_device
from tests.support.device_crypto import device_decrypts_gcm
from tests.support.lambda_support import (
    Device,
    FakeLambdaContext,
    api_event,
    fault,
    recording,
    unique_dsn,
)

ALICE, BOB, ADMIN, STRANGER = "sub-alice", "sub-bob", "sub-admin", "sub-nogroup"


def invoke(
    event: dict[str, Any], timeout: float = 25.0, context: FakeLambdaContext | None = None
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    response = lambda_handler(event, context or FakeLambdaContext(timeout))
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    return response["statusCode"], json.loads(response["body"]), headers


def provision(device: Device, sub: str = ALICE, groups: str = "Members", timeout: float = 25.0):
    return invoke(api_event(device.body(), sub, groups), timeout)


def decrypt(device: Device, answer: dict[str, Any]) -> bytes:
    server = x25519.X25519PublicKey.from_public_bytes(base64.b64decode(answer["publicKey"]))
    secret = device.key.exchange(server)
    return Fernet(base64.urlsafe_b64encode(secret)).decrypt(answer["encryptedPrivateKey"].encode())


def record(aws: dict[str, Any], env: dict[str, str], dsn: str) -> dict[str, str] | None:
    item = (
        aws["dynamodb"]
        .get_item(TableName=env["DEVICES_TABLE"], Key={"dsn": {"S": dsn}}, ConsistentRead=True)
        .get("Item")
    )
    return {k: v.get("S", v.get("N", "")) for k, v in item.items()} if item else None


def thing_certificates(aws: dict[str, Any], thing: str) -> dict[str, str]:
    """certificate id -> status for every certificate attached to the thing."""
    try:
        principals = aws["iot"].list_thing_principals(thingName=thing)["principals"]
    except aws["iot"].exceptions.ResourceNotFoundException:
        return {}
    ids = [arn.rsplit("/", 1)[1] for arn in principals]
    return {
        i: aws["iot"].describe_certificate(certificateId=i)["certificateDescription"]["status"]
        for i in ids
    }


def active_certificates_for(aws: dict[str, Any], thing: str) -> list[str]:
    """Every ACTIVE certificate in IoT issued for this thing, attached or not."""
    thing = common_name_for(thing)
    found = []
    for summary in aws["iot"].list_certificates(pageSize=250)["certificates"]:
        if summary["status"] != "ACTIVE":
            continue
        pem = aws["iot"].describe_certificate(certificateId=summary["certificateId"])[
            "certificateDescription"
        ]["certificatePem"]
        cert = x509.load_pem_x509_certificate(pem.encode())
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cn and cn[0].value == thing:
            found.append(summary["certificateId"])
    return found


def audit_events(aws: dict[str, Any], env: dict[str, str], dsn: str) -> list[dict[str, str]]:
    items = aws["dynamodb"].query(
        TableName=env["AUDIT_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{dsn}"}},
    )["Items"]
    return [{k: v["S"] for k, v in item.items()} for item in items]


def thing_name(env: dict[str, str], dsn: str) -> str:
    return f"{env['THING_PREFIX']}_{dsn}"


# --------------------------------------------------------------------------- happy path


def test_a_member_provisions_a_new_device(services, aws, provisioning_env) -> None:
    # GIVEN a member and a device that has never been seen
    device = Device(unique_dsn())
    with recording(services.pca.client, "IssueCertificate") as issued:
        # WHEN the app posts the device's DSN and X25519 key
        status, answer, _ = provision(device)

    # THEN the device gets its certificate and a key only it can read
    assert status == 200, answer
    thing = thing_name(provisioning_env, device.dsn)
    assert answer["thingName"] == thing
    assert answer["encryption"] == "fernet-x25519"
    # ... the ATS data endpoint of IoT Core, where the device connects
    assert re.fullmatch(r"[a-z0-9]+-ats\.iot\.[a-z0-9-]+\.amazonaws\.com", answer["iotEndpoint"])
    key = serialization.load_pem_private_key(decrypt(device, answer), password=None)
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()

    # ... the certificate chains to the Private CA and is good for client authentication
    ca_pem = aws["acm-pca"].get_certificate_authority_certificate(
        CertificateAuthorityArn=provisioning_env["CA_ARN"]
    )["Certificate"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == thing
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    organisation = provisioning_env.get("SUBJECT_O")
    if organisation:
        assert (
            cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == organisation
        )
    # moto always issues for 365 days; what ACM PCA is asked for is the configured validity
    assert issued[0]["Validity"] == {
        "Value": int(provisioning_env["DEVICE_CERT_VALIDITY_DAYS"]),
        "Type": "DAYS",
    }
    assert issued[0]["TemplateArn"].endswith(
        "template/EndEntityClientAuthCertificate_APIPassthrough/V1"
    )
    # ... the service, not the CSR, names the subject and the DSN's SAN URI
    assert issued[0]["ApiPassthrough"]["Subject"]["CommonName"] == thing
    assert issued[0]["ApiPassthrough"]["Extensions"]["SubjectAlternativeNames"] == [
        {"UniformResourceIdentifier": f"urn:iot-device-onboarding:dsn:{device.dsn}"}
    ]
    assert issued[0]["IdempotencyToken"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=1)

    # ... IoT knows the thing, in its group, with exactly this certificate ACTIVE and the policy
    assert thing_certificates(aws, thing) == {answer["certificateId"]: "ACTIVE"}
    groups = aws["iot"].list_thing_groups_for_thing(thingName=thing)["thingGroups"]
    assert [g["groupName"] for g in groups] == [provisioning_env["THING_GROUP"]]
    description = aws["iot"].describe_certificate(certificateId=answer["certificateId"])
    policies = aws["iot"].list_attached_policies(
        target=description["certificateDescription"]["certificateArn"]
    )["policies"]
    assert [p["policyName"] for p in policies] == [provisioning_env["IOT_POLICY_NAME"]]

    # ... and the devices table records it, owned by the caller, with the lease gone
    row = record(aws, provisioning_env, device.dsn)
    assert row is not None
    assert row["owner_sub"] == ALICE
    assert row["certificate_id"] == answer["certificateId"]
    assert row["status"] == "ACTIVE"
    assert row["thing_name"] == thing
    assert row["not_after"] == answer["notAfter"]
    assert row["key_algorithm"] == provisioning_env["DEVICE_KEY_ALGORITHM"]
    assert "lease_request_id" not in row
    # ... and the use of the CA is in the audit trail, with who and when
    (issue,) = audit_events(aws, provisioning_env, device.dsn)
    assert issue["event"] == "ISSUE"
    assert issue["actor"] == ALICE
    assert issue["serial"] == row["serial"]
    issued_at = datetime.fromisoformat(issue["at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - issued_at) < timedelta(minutes=5)


def test_the_opt_in_hkdf_aes_gcm_scheme(services, aws) -> None:
    # GIVEN a newer device that asks for the stronger scheme
    device = Device(unique_dsn())
    body = json.dumps(
        {
            "DSN": device.dsn,
            "publicKey": device.public_key_b64,
            "encryption": "x25519-hkdf-sha256-aes256gcm",
        }
    )
    status, answer, _ = invoke(api_event(body, ALICE))
    # THEN it decrypts its key with HKDF + AES-GCM, bound to its own DSN
    assert status == 200, answer
    assert answer["encryption"] == "x25519-hkdf-sha256-aes256gcm"
    pem = device_decrypts_gcm(
        device.key, base64.b64decode(answer["publicKey"]), answer["encryptedPrivateKey"], device.dsn
    )
    key = serialization.load_pem_private_key(pem, password=None)
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_the_certificate_names_its_device_and_only_that_device_trusts_it(
    services, aws, provisioning_env
) -> None:
    from onboarding_ble import trust
    from onboarding_ble.trust import Refusal, TrustError

    # GIVEN a device provisioned through the API (moto issuing AWS's client-auth profile)
    device = Device(unique_dsn())
    status, answer, _ = provision(device)
    assert status == 200, answer
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    ca_pem = aws["acm-pca"].get_certificate_authority_certificate(
        CertificateAuthorityArn=provisioning_env["CA_ARN"]
    )["Certificate"]
    key = serialization.load_pem_private_key(decrypt(device, answer), password=None)

    # THEN the certificate names the DSN exactly, in a SAN URI ...
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:iot-device-onboarding:dsn:{device.dsn}"
    ]
    # ... with the profile AWS documents for EndEntityClientAuthCertificate/V1
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    # ... the device's own checks accept it, and find its thing name and id without the JSON
    trusted = trust.verify_device_certificate(answer["certificatePem"], ca_pem, device.dsn, key)
    assert trusted.thing_name == thing_name(provisioning_env, device.dsn) == answer["thingName"]
    assert trusted.certificate_id == answer["certificateId"]
    # ... and a device with another DSN, even one it ends in, refuses it
    for other in (f"x_{device.dsn}", device.dsn[:-1], device.dsn.lower() + "x"):
        with pytest.raises(TrustError) as refused:
            trust.verify_device_certificate(answer["certificatePem"], ca_pem, other, key)
        assert refused.value.reason is Refusal.WRONG_DEVICE


def test_the_longest_dsn_is_provisioned(services, aws, provisioning_env) -> None:
    # GIVEN a DSN of the full 115 characters: the thing name is longer than X.509 allows a CN
    device = Device(unique_dsn() + "Z" * (115 - len(unique_dsn())))
    status, answer, _ = provision(device)
    assert status == 200, answer
    thing = thing_name(provisioning_env, device.dsn)
    assert answer["thingName"] == thing
    cert = x509.load_pem_x509_certificate(answer["certificatePem"].encode())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert len(cn) <= 64 and cn == common_name_for(thing)
    assert thing_certificates(aws, thing) == {answer["certificateId"]: "ACTIVE"}


def test_still_issuing_is_polled_with_a_short_growing_delay(services, aws) -> None:
    # GIVEN ACM PCA answers "still issuing" twice (moto issues synchronously, so inject it)
    delays: list[float] = []
    services.sleep = delays.append
    device = Device(unique_dsn())
    with fault(
        services.pca.client, "GetCertificate", "RequestInProgressException", 400, times=2
    ) as f:
        status, answer, _ = provision(device)
    assert status == 200, answer
    assert f.calls == 3
    assert delays[0] < 0.1
    assert delays == sorted(delays) and delays[0] < delays[-1]


def test_issuance_that_outlasts_the_time_budget_fails_cleanly(
    services, aws, provisioning_env
) -> None:
    # GIVEN ACM PCA never finishes: each wait between polls uses up the function's time (on the
    # context's clock, so how fast this machine is does not matter)
    device = Device(unique_dsn())
    context = FakeLambdaContext(25.0)
    waits: list[float] = []
    services.sleep = lambda seconds: (waits.append(seconds), context.spend(seconds))
    with fault(services.pca.client, "GetCertificate", "RequestInProgressException", 400):
        status, answer, _ = invoke(api_event(device.body(), ALICE, "Members"), context=context)
    # THEN the request polled while it could, then stopped in time for its rollback, with a 502
    # naming the step; nothing is half-done: no row claims success, no certificate is ACTIVE;
    # the row keeps the intent (the certificate ACM PCA is still issuing) for later
    assert (status, answer["code"]) == (502, "GET_CERTIFICATE_TIMEOUT")
    assert len(waits) >= 2
    assert sum(waits) <= 25.0 - HARD_STOP_SECONDS - FORWARD_RESERVE_SECONDS
    row = record(aws, provisioning_env, device.dsn)
    assert row is not None and "status" not in row and "certificate_id" not in row
    assert "intent" in row and "lease_request_id" not in row
    assert active_certificates_for(aws, thing_name(provisioning_env, device.dsn)) == []
    # ... and a retry finishes it (the abandoned certificate is revoked) and succeeds
    assert provision(device)[0] == 200
    assert "intent" not in record(aws, provisioning_env, device.dsn)


# --------------------------------------------------------------------------- bad input


# A valid device key, the same in every process: the cases' ids show it, and pytest-xdist's
# workers must collect the same ids.
A_PUBLIC_KEY = base64.b64encode(
    x25519.X25519PrivateKey.from_private_bytes(bytes(range(1, 33))).public_key().public_bytes_raw()
).decode()
BAD_BODIES = [
    (None, "BODY_MISSING"),
    ("null", "BODY_NOT_OBJECT"),
    ("{oops", "BODY_NOT_JSON"),
    ('["DSN"]', "BODY_NOT_OBJECT"),
    (json.dumps({"publicKey": A_PUBLIC_KEY}), "FIELD_MISSING"),
    (json.dumps({"DSN": 7, "publicKey": A_PUBLIC_KEY}), "FIELD_TYPE"),
    (json.dumps({"DSN": "A B", "publicKey": A_PUBLIC_KEY}), "DSN_INVALID"),
    (json.dumps({"DSN": "../../x", "publicKey": A_PUBLIC_KEY}), "DSN_INVALID"),
    (json.dumps({"DSN": "Aé", "publicKey": A_PUBLIC_KEY}), "DSN_INVALID"),
    (json.dumps({"DSN": "A\n", "publicKey": A_PUBLIC_KEY}), "DSN_INVALID"),
    (json.dumps({"DSN": "A" * 116, "publicKey": A_PUBLIC_KEY}), "DSN_TOO_LONG"),
    (json.dumps({"DSN": "ABC", "publicKey": "!!"}), "PUBLIC_KEY_INVALID"),
    (
        json.dumps({"DSN": "ABC", "publicKey": base64.b64encode(b"k" * 16).decode()}),
        "PUBLIC_KEY_INVALID",
    ),
    (
        json.dumps({"DSN": "ABC", "publicKey": base64.b64encode(bytes(32)).decode()}),
        "PUBLIC_KEY_LOW_ORDER",
    ),
    (  # the top bit set: refused (not masked), as the device refuses such a server key
        json.dumps({"DSN": "ABC", "publicKey": base64.b64encode(b"\x09" * 31 + b"\x89").decode()}),
        "PUBLIC_KEY_INVALID",
    ),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
def test_bad_input_is_a_400_and_creates_nothing(
    services, aws, provisioning_env, body, code
) -> None:
    certificates_before = len(aws["iot"].list_certificates()["certificates"])
    things_before = len(aws["iot"].list_things()["things"])
    with (
        recording(services.pca.client, "IssueCertificate") as issued,
        recording(services.store.client, "UpdateItem") as claims,
    ):
        status, answer, headers = invoke(api_event(body, ALICE))
    assert (status, answer["code"]) == (400, code)
    assert set(answer) == {"msg", "code"}
    assert headers["Content-Type"] == "application/json"
    assert issued == [] and claims == []
    assert len(aws["iot"].list_certificates()["certificates"]) == certificates_before
    assert len(aws["iot"].list_things()["things"]) == things_before


# --------------------------------------------------------------------------- ownership


def test_the_owner_provisioning_again_rotates_the_certificate(
    services, aws, provisioning_env
) -> None:
    # GIVEN Alice's provisioned device
    device = Device(unique_dsn())
    first = provision(device)[1]
    old_serial = record(aws, provisioning_env, device.dsn)["serial"]

    # WHEN she provisions it again (a factory reset, a new key)
    device.key = x25519.X25519PrivateKey.generate()
    with recording(services.pca.client, "RevokeCertificate") as revoked:
        status, second, _ = provision(device)

    # THEN the new certificate is the one ACTIVE one; the old one is revoked everywhere
    assert status == 200, second
    thing = thing_name(provisioning_env, device.dsn)
    assert thing_certificates(aws, thing) == {second["certificateId"]: "ACTIVE"}
    old = aws["iot"].describe_certificate(certificateId=first["certificateId"])
    assert old["certificateDescription"]["status"] == "REVOKED"
    assert [r["CertificateSerial"] for r in revoked] == [old_serial]
    row = record(aws, provisioning_env, device.dsn)
    assert row["certificate_id"] == second["certificateId"]
    assert row["owner_sub"] == ALICE
    events = sorted(e["event"] for e in audit_events(aws, provisioning_env, device.dsn))
    assert events == ["ISSUE", "ISSUE", "REVOKE"]


def test_another_member_cannot_take_over_a_device(services, aws, provisioning_env) -> None:
    device = Device(unique_dsn())
    first = provision(device, ALICE)[1]
    before = record(aws, provisioning_env, device.dsn)

    with recording(services.pca.client, "IssueCertificate") as issued:
        status, answer, _ = provision(Device(device.dsn), BOB)

    assert (status, answer["code"]) == (409, "DEVICE_OWNED")
    assert issued == []
    assert record(aws, provisioning_env, device.dsn) == before
    assert thing_certificates(aws, thing_name(provisioning_env, device.dsn)) == {
        first["certificateId"]: "ACTIVE"
    }


def test_an_administrator_may_reprovision_any_device(services, aws, provisioning_env) -> None:
    device = Device(unique_dsn())
    provision(device, ALICE)
    status, answer, _ = provision(Device(device.dsn), ADMIN, groups="Administrators")
    assert status == 200, answer
    row = record(aws, provisioning_env, device.dsn)
    assert row["certificate_id"] == answer["certificateId"]
    assert row["owner_sub"] == ALICE  # the device still belongs to its owner


def test_a_user_in_no_group_is_forbidden(services, aws, provisioning_env) -> None:
    device = Device(unique_dsn())
    status, answer, _ = provision(device, STRANGER, groups="")
    assert (status, answer["code"]) == (403, "NOT_A_MEMBER")
    assert record(aws, provisioning_env, device.dsn) is None


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("callers", [(ALICE, ALICE, ALICE), (ALICE, BOB, ALICE)])
def test_simultaneous_requests_end_with_one_active_certificate(
    services, aws, provisioning_env, callers
) -> None:
    """Each thread is its own Lambda container: its own adapters and clients, one request."""
    dsn = unique_dsn()
    results: list[tuple[int, Any]] = []
    start = threading.Barrier(len(callers))

    def container(sub: str) -> None:
        own = get_services.__wrapped__()  # a container builds its own clients
        own.sleep = lambda _seconds: None
        # Issuance is slowed down so that every request overlaps the first one.
        own.pca.client.meta.events.register(
            "before-send.acm-pca.IssueCertificate", lambda **_: time.sleep(0.3)
        )
        device = Device(dsn)
        request = parse_provision_request(device.body())
        start.wait()
        try:
            answer = provision_device(
                request,
                User(sub, frozenset({"Members"})),
                own,
                Budget(FakeLambdaContext().get_remaining_time_in_millis),
                request_id=f"req-{sub}-{threading.get_ident()}",
            )
            results.append((200, answer.to_response()))
        except ProvisioningError as error:
            results.append((error.status, {"code": error.code}))

    threads = [threading.Thread(target=container, args=(sub,)) for sub in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (len(callers) - 1), results
    winner = next(answer for status, answer in results if status == 200)
    assert {a["code"] for s, a in results if s == 409} <= {"REQUEST_IN_FLIGHT", "DEVICE_OWNED"}
    thing = thing_name(provisioning_env, dsn)
    assert thing_certificates(aws, thing) == {winner["certificateId"]: "ACTIVE"}
    assert active_certificates_for(aws, thing) == [winner["certificateId"]]
    assert record(aws, provisioning_env, dsn)["certificate_id"] == winner["certificateId"]


# --------------------------------------------------------------------------- failures


# service, operation, the code answered, and how many calls of it the request makes: botocore's
# three attempts, and for GetCertificate three more by the rollback, which needs the certificate
# to revoke it.
FIRST_PROVISIONING_FAULTS = [
    ("dynamodb", "UpdateItem", "CLAIM_DEVICE_FAILED", 3),
    ("acm-pca", "IssueCertificate", "ISSUE_CERTIFICATE_FAILED", 3),
    ("acm-pca", "GetCertificate", "GET_CERTIFICATE_FAILED", 6),
    ("iot", "CreateThing", "CREATE_THING_FAILED", 3),
    ("iot", "AddThingToThingGroup", "CREATE_THING_FAILED", 3),
    ("iot", "DescribeEndpoint", "DESCRIBE_ENDPOINT_FAILED", 3),
    ("iot", "RegisterCertificate", "REGISTER_CERTIFICATE_FAILED", 3),
    ("iot", "AttachPolicy", "ATTACH_POLICY_FAILED", 3),
    ("iot", "AttachThingPrincipal", "ATTACH_THING_PRINCIPAL_FAILED", 3),
    ("dynamodb", "TransactWriteItems", "STORE_DEVICE_FAILED", 3),
]


def client_of(services: Services, service: str) -> Any:
    return {"acm-pca": services.pca, "iot": services.iot, "dynamodb": services.store}[
        service
    ].client


@pytest.mark.parametrize(("service", "operation", "code", "calls"), FIRST_PROVISIONING_FAULTS)
def test_a_failed_step_leaves_no_half_state_and_a_retry_succeeds(
    services, aws, provisioning_env, service, operation, code, calls
) -> None:
    # GIVEN one AWS operation fails every time it is called
    device = Device(unique_dsn())
    thing = thing_name(provisioning_env, device.dsn)
    with fault(client_of(services, service), operation) as f:
        status, answer, _ = provision(device)

    # THEN the answer names the failed step, after botocore's bounded retries
    assert (status, answer["code"]) == (502, code), answer
    assert f.calls == calls
    assert "arn:" not in answer["msg"] and "injected" not in answer["msg"]
    # ... no ACTIVE certificate is left and no row claims success
    assert active_certificates_for(aws, thing) == []
    row = record(aws, provisioning_env, device.dsn)
    assert row is None or not row.get("certificate_id")

    # WHEN the dependency recovers, the same request succeeds
    status, answer, _ = provision(device)
    assert status == 200, answer
    assert active_certificates_for(aws, thing) == [answer["certificateId"]]
    assert record(aws, provisioning_env, device.dsn)["certificate_id"] == answer["certificateId"]


ROTATION_FAULTS = [
    ("iot", "UpdateCertificate", "DEACTIVATE_CERTIFICATE_FAILED"),
    ("dynamodb", "TransactWriteItems", "STORE_DEVICE_FAILED"),
    ("iot", "RegisterCertificate", "REGISTER_CERTIFICATE_FAILED"),
]


@pytest.mark.parametrize(("service", "operation", "code"), ROTATION_FAULTS)
def test_a_failed_rotation_keeps_the_old_certificate_working(
    services, aws, provisioning_env, service, operation, code
) -> None:
    # GIVEN a provisioned device
    device = Device(unique_dsn())
    first = provision(device)[1]
    thing = thing_name(provisioning_env, device.dsn)

    # WHEN a rotation fails at a step
    with fault(client_of(services, service), operation):
        status, answer, _ = provision(device)
    assert (status, answer["code"]) == (502, code)

    # THEN the old certificate is still the one ACTIVE certificate and the row still names it
    assert active_certificates_for(aws, thing) == [first["certificateId"]]
    assert record(aws, provisioning_env, device.dsn)["certificate_id"] == first["certificateId"]
    # ... and a retry rotates
    status, answer, _ = provision(device)
    assert status == 200, answer
    assert active_certificates_for(aws, thing) == [answer["certificateId"]]


def test_a_certificate_that_could_not_be_revoked_is_cleaned_up_by_the_next_request(
    services, aws, provisioning_env
) -> None:
    # GIVEN the table write fails AND IoT refuses to change certificate status for a while
    device = Device(unique_dsn())
    thing = thing_name(provisioning_env, device.dsn)
    with (
        fault(services.store.client, "TransactWriteItems"),
        fault(services.iot.client, "UpdateCertificate"),
    ):
        status, answer, _ = provision(device)
    assert (status, answer["code"]) == (502, "STORE_DEVICE_FAILED")
    # ... so the new certificate could not be revoked; it is detached and written down
    (orphan,) = active_certificates_for(aws, thing)
    assert thing_certificates(aws, thing) == {}
    assert record(aws, provisioning_env, device.dsn).get("certificate_id") is None

    # WHEN the device is provisioned again
    status, answer, _ = provision(device)

    # THEN the orphan is revoked and only the new certificate is ACTIVE
    assert status == 200, answer
    assert active_certificates_for(aws, thing) == [answer["certificateId"]]
    assert (
        aws["iot"].describe_certificate(certificateId=orphan)["certificateDescription"]["status"]
        == "REVOKED"
    )


def test_throttling_past_the_retry_budget_is_a_429_with_retry_after(services, aws) -> None:
    device = Device(unique_dsn())
    with fault(services.iot.client, "RegisterCertificate", "ThrottlingException", 400) as f:
        status, answer, headers = provision(device)
    assert (status, answer["code"]) == (429, "THROTTLED")
    assert int(headers["Retry-After"]) > 0
    assert f.calls == 3


def test_the_ca_lifetime_quota_is_not_retried(services, aws) -> None:
    # LimitExceededException from ACM PCA means the CA has issued all it may: retrying is waste
    device = Device(unique_dsn())
    with fault(services.pca.client, "IssueCertificate", "LimitExceededException", 400) as f:
        status, answer, _ = provision(device)
    assert (status, answer["code"]) == (502, "ISSUE_CERTIFICATE_FAILED")
    assert f.calls == 1


# --------------------------------------------------------------------------- secrets


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every line the function's logger writes, formatted exactly as CloudWatch would get it."""
    from provisioning.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def test_no_key_material_or_token_reaches_the_logs(services, aws, captured_logs, capsys) -> None:
    device = Device(unique_dsn())
    event = api_event(device.body(), ALICE)
    status, answer, _ = invoke(event)
    assert status == 200
    # a rotation and a failure path log too
    invoke(api_event(device.body(), ALICE))
    with fault(services.iot.client, "RegisterCertificate"):
        invoke(api_event(device.body(), ALICE))

    printed = capsys.readouterr()
    text = captured_logs.getvalue() + printed.out + printed.err
    assert '"message":"device claimed"' in text  # the logs were captured
    assert '"code":"REGISTER_CERTIFICATE_FAILED"' in text.replace(" ", "")
    private_pem = decrypt(device, answer).decode()
    secrets = [
        "PRIVATE KEY",
        private_pem.splitlines()[1],
        event["headers"]["Authorization"],
        event["headers"]["Authorization"].split(".")[2],
        answer["encryptedPrivateKey"][:40],
        answer["publicKey"],
        device.public_key_b64,
    ]
    for secret in secrets:
        assert secret not in text


def test_a_502_logs_the_aws_operation_and_error_code_behind_it(
    services, aws, captured_logs, capsys
) -> None:
    # GIVEN IoT refusing every RegisterCertificate with an error code of its own, whose text
    # quotes a value the logs must not carry
    device = Device(unique_dsn())
    with fault(
        services.iot.client,
        "RegisterCertificate",
        code="CertificateValidationException",
        status=400,
    ):
        status, answer, _ = provision(device)
    # THEN the answer names only the step, and the log line of the refusal names the AWS
    # operation and its error code
    assert (status, answer["code"]) == (502, "REGISTER_CERTIFICATE_FAILED")
    printed = capsys.readouterr()
    lines = [
        json.loads(line)
        for line in (captured_logs.getvalue() + printed.out).splitlines()
        if '"request refused"' in line
    ]
    assert lines, captured_logs.getvalue()
    refused = lines[-1]
    assert (refused["code"], refused["status"]) == ("REGISTER_CERTIFICATE_FAILED", 502)
    assert (refused["aws_operation"], refused["aws_error"]) == (
        "RegisterCertificate",
        "CertificateValidationException",
    )
    assert "injected" not in json.dumps(refused)  # the AWS error's text stays out


def test_rotation_works_after_an_operator_revoked_the_old_certificate(
    services, aws, provisioning_env
) -> None:
    # GIVEN a device whose certificate an operator revoked directly in IoT (REVOKED is terminal)
    device = Device(unique_dsn())
    first = provision(device)[1]
    aws["iot"].update_certificate(certificateId=first["certificateId"], newStatus="REVOKED")

    # WHEN the owner provisions it again
    status, second, _ = provision(device)

    # THEN the rotation goes through: the new certificate is the one ACTIVE one
    assert status == 200, second
    thing = thing_name(provisioning_env, device.dsn)
    assert active_certificates_for(aws, thing) == [second["certificateId"]]
    assert thing_certificates(aws, thing) == {second["certificateId"]: "ACTIVE"}
