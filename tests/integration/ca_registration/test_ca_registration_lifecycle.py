"""Create / Update / Delete of Custom::IoTCaRegistration through the real handler under moto.

Each step checks what CloudFormation would see (one PUT to the ResponseURL: status, physical id,
Data, Reason) and what AWS IoT's CA registry holds afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ca_registration.handler import lambda_handler

Event = dict[str, Any]
Listener = Any  # conftest.Listener (not imported: tests/integration has its own conftest)


def answer(listener: Listener, event: Event) -> dict[str, Any]:
    """The one answer CloudFormation got for this event (fails on zero or two)."""
    answers = listener.for_request(event["RequestId"])
    assert len(answers) == 1, f"expected exactly one answer, got {len(answers)}"
    assert answers[0].content_type == ""  # what the pre-signed URL is signed for
    body: dict[str, Any] = answers[0].body
    assert body["RequestId"] == event["RequestId"]
    assert body["StackId"] == event["StackId"]
    assert body["LogicalResourceId"] == event["LogicalResourceId"]
    return body


def iot_ca(certificate_id: str) -> dict[str, Any] | None:
    try:
        description = boto3.client("iot").describe_ca_certificate(certificateId=certificate_id)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "ResourceNotFoundException"
        return None
    result: dict[str, Any] = description["certificateDescription"]
    return result


def audit_events(certificate_id: str) -> list[str]:
    items = boto3.client("dynamodb").query(
        TableName="ca-registration-audit",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"ca#{certificate_id}"}},
    )["Items"]
    for item in items:
        assert item["actor"]["S"] == "cloudformation"
        assert item["stack_id"]["S"].startswith("arn:aws:cloudformation:")
    return [item["event"]["S"] for item in items]


def create(make_event: Callable[..., Event], listener: Listener, context: Any, **kw: Any) -> str:
    event = make_event("Create", **kw)
    lambda_handler(event, context)
    body = answer(listener, event)
    assert body["Status"] == "SUCCESS", body["Reason"]
    return str(body["PhysicalResourceId"])


# --- Create ---------------------------------------------------------------------------------


def test_create_default_mode_registers_the_pca_active(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    # GIVEN an ACTIVE Private CA
    pca_arn = make_pca()
    event = make_event("Create", ca_arn=pca_arn, mode="DEFAULT")

    # WHEN CloudFormation creates the custom resource
    lambda_handler(event, context)

    # THEN it answers SUCCESS with the IoT CA id as physical id and in Data
    body = answer(listener, event)
    assert body["Status"] == "SUCCESS"
    ca_id = body["PhysicalResourceId"]
    assert re.fullmatch(r"[0-9a-f]{64}", ca_id)
    assert body["Data"]["CertificateId"] == ca_id
    assert body["Data"]["CertificateArn"].endswith(f":cert/{ca_id}")
    # AND IoT holds the PCA's own certificate, ACTIVE
    registered = iot_ca(ca_id)
    assert registered is not None and registered["status"] == "ACTIVE"
    pca_pem = boto3.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=pca_arn
    )["Certificate"]
    assert registered["certificatePem"].strip() == pca_pem.strip()
    # AND the verification certificate issue, the registration and the verification
    # certificate's revocation are audited under the CA id
    assert sorted(audit_events(ca_id)) == ["ISSUE", "REGISTER_CA", "REVOKE"]


def test_create_sni_only_mode_registers_without_verification_certificate(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn, mode="SNI_ONLY")

    registered = iot_ca(ca_id)
    assert registered is not None and registered["status"] == "ACTIVE"
    # No verification certificate was issued from the CA in SNI_ONLY mode.
    assert audit_events(ca_id) == ["REGISTER_CA"]


def test_create_twice_is_idempotent(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    first = create(make_event, listener, context, ca_arn=pca_arn)
    second = create(make_event, listener, context, ca_arn=pca_arn)
    assert first == second
    assert iot_ca(first) is not None


def test_create_with_invalid_properties_fails_and_its_delete_succeeds(
    make_event: Callable[..., Event], listener: Listener, context: Any, aws: None
) -> None:
    # GIVEN a template mistake: not a Private CA ARN
    event = make_event("Create", ca_arn="arn:aws:s3:::not-a-ca", mode="DEFAULT")
    lambda_handler(event, context)
    body = answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "CertificateAuthorityArn" in body["Reason"]
    placeholder = body["PhysicalResourceId"]
    assert placeholder

    # WHEN CloudFormation rolls back and deletes what it was told about
    delete = make_event("Delete", ca_arn="arn:aws:s3:::not-a-ca", physical_id=placeholder)
    lambda_handler(delete, context)

    # THEN the delete succeeds and says nothing was registered
    body = answer(listener, delete)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == placeholder


def test_create_fails_fast_on_a_disabled_pca(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    boto3.client("acm-pca").update_certificate_authority(
        CertificateAuthorityArn=pca_arn, Status="DISABLED"
    )
    event = make_event("Create", ca_arn=pca_arn)
    lambda_handler(event, context)
    body = answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "DISABLED" in body["Reason"]


# --- Update ---------------------------------------------------------------------------------


def test_update_with_same_properties_keeps_the_physical_id(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn)

    event = make_event("Update", ca_arn=pca_arn, physical_id=ca_id)
    lambda_handler(event, context)

    body = answer(listener, event)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == ca_id
    assert body["Data"]["CertificateId"] == ca_id
    assert iot_ca(ca_id) is not None
    assert audit_events(ca_id).count("REGISTER_CA") == 1  # nothing registered again


def test_update_to_a_new_pca_registers_it_and_leaves_the_old_for_cleanup(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    # GIVEN a registered CA
    old_pca = make_pca(name="Old Root")
    old_id = create(make_event, listener, context, ca_arn=old_pca)
    # WHEN the stack points the resource at a new Private CA
    new_pca = make_pca(name="New Root")
    event = make_event("Update", ca_arn=new_pca, old_ca_arn=old_pca, physical_id=old_id)
    lambda_handler(event, context)

    # THEN the answer carries a new physical id, and both CAs are ACTIVE (old not deleted yet)
    body = answer(listener, event)
    assert body["Status"] == "SUCCESS"
    new_id = body["PhysicalResourceId"]
    assert new_id != old_id
    assert body["Data"]["CertificateId"] == new_id
    old_ca, new_ca = iot_ca(old_id), iot_ca(new_id)
    assert old_ca is not None and old_ca["status"] == "ACTIVE"
    assert new_ca is not None and new_ca["status"] == "ACTIVE"

    # AND CloudFormation's cleanup Delete (old id, old properties) removes the old one only
    cleanup = make_event("Delete", ca_arn=old_pca, physical_id=old_id)
    lambda_handler(cleanup, context)
    assert answer(listener, cleanup)["Status"] == "SUCCESS"
    assert iot_ca(old_id) is None
    assert iot_ca(new_id) is not None


def test_update_of_mode_only_is_refused_and_changes_nothing(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn, mode="DEFAULT")

    event = make_event(
        "Update", ca_arn=pca_arn, physical_id=ca_id, mode="SNI_ONLY", old_mode="DEFAULT"
    )
    lambda_handler(event, context)

    body = answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "CertificateMode" in body["Reason"]
    assert body["PhysicalResourceId"] == ca_id
    registered = iot_ca(ca_id)
    assert registered is not None and registered["status"] == "ACTIVE"


# --- Delete ---------------------------------------------------------------------------------


def test_delete_removes_the_ca_and_a_second_delete_succeeds(
    make_pca: Callable[..., str], make_event: Callable[..., Event], listener: Listener, context: Any
) -> None:
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn)

    first = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id)
    lambda_handler(first, context)
    body = answer(listener, first)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == ca_id
    assert iot_ca(ca_id) is None
    assert sorted(audit_events(ca_id)) == [
        "DEACTIVATE_CA",
        "DELETE_CA",
        "ISSUE",
        "REGISTER_CA",
        "REVOKE",
    ]

    # Delete again (CloudFormation retries): still SUCCESS, nothing to do
    second = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id)
    lambda_handler(second, context)
    body = answer(listener, second)
    assert body["Status"] == "SUCCESS"
    assert "already gone" in body["Reason"]


def test_delete_keeps_a_ca_with_active_device_certificates_inactive(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    register_device: Callable[..., str],
    listener: Listener,
    context: Any,
) -> None:
    # GIVEN a registered CA with one ACTIVE device certificate in IoT
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn)
    device_id = register_device(pca_arn)
    certs = boto3.client("iot").list_certificates_by_ca(caCertificateId=ca_id)["certificates"]
    assert [c["certificateId"] for c in certs] == [device_id]

    # WHEN the stack deletes the resource without ForceDelete
    event = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id, force_delete="false")
    lambda_handler(event, context)

    # THEN CloudFormation is told SUCCESS with the reason the CA was kept
    body = answer(listener, event)
    assert body["Status"] == "SUCCESS"
    assert "kept" in body["Reason"] and "INACTIVE" in body["Reason"]
    # AND IoT still holds the CA, INACTIVE (no new registrations), and the device stays ACTIVE
    registered = iot_ca(ca_id)
    assert registered is not None and registered["status"] == "INACTIVE"
    device = boto3.client("iot").describe_certificate(certificateId=device_id)
    assert device["certificateDescription"]["status"] == "ACTIVE"
    assert "DELETE_CA" not in audit_events(ca_id)

    # WHEN the operator insists with ForceDelete "true"
    forced = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id, force_delete="true")
    lambda_handler(forced, context)

    # THEN the CA is gone (moto lets a CA with registered certificates go; see the runbook)
    assert answer(listener, forced)["Status"] == "SUCCESS"
    assert iot_ca(ca_id) is None
    assert "DELETE_CA" in audit_events(ca_id)


def test_delete_removes_a_ca_whose_device_certificates_are_all_revoked(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    register_device: Callable[..., str],
    listener: Listener,
    context: Any,
) -> None:
    pca_arn = make_pca()
    ca_id = create(make_event, listener, context, ca_arn=pca_arn)
    register_device(pca_arn, status="REVOKED")
    register_device(pca_arn, status="INACTIVE")

    event = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id)
    lambda_handler(event, context)

    assert answer(listener, event)["Status"] == "SUCCESS"
    assert iot_ca(ca_id) is None


@pytest.mark.parametrize("physical_id", ["failed-3f1c", "CaRegistration-ABC", "0" * 63])
def test_delete_of_a_non_ca_physical_id_succeeds(
    physical_id: str,
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    context: Any,
) -> None:
    event = make_event("Delete", ca_arn=make_pca(), physical_id=physical_id)
    lambda_handler(event, context)
    body = answer(listener, event)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == physical_id
