"""Short-lived CA mode through the local deployer, on moto (with devstack.moto_bridges.gaps
applied, as the offline stack runs it): a bad combination fails before anything is created, the CA
gets the mode asked for, and Private CA's 7-day cap holds as in AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from devstack.cloudformation.deployer import Deployment, deploy
from devstack.cloudformation.rules import RuleFailed
from provisioning.adapters.composition import get_services
from tests.integration.conftest import CUSTOM_RESOURCE_HANDLER, STACK_PARAMETERS, TEMPLATE
from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn

SHORT_LIVED = {"CaUsageMode": "SHORT_LIVED_CERTIFICATE"}


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    with mock_aws():
        yield


def deploy_with(**parameters: str) -> Deployment:
    return deploy(
        TEMPLATE,
        {**STACK_PARAMETERS, **parameters},
        run_custom_resources=CUSTOM_RESOURCE_HANDLER.exists(),
    )


def usage_mode(stack: Deployment, output: str = "IssuingCertificateAuthorityArn") -> str:
    """The usage mode of the issuing CA (or of the CA another output names)."""
    ca = boto3.client("acm-pca").describe_certificate_authority(
        CertificateAuthorityArn=stack.outputs[output]
    )
    return str(ca["CertificateAuthority"]["UsageMode"])


def provision(stack: Deployment, monkeypatch: pytest.MonkeyPatch) -> tuple[Device, dict[str, Any]]:
    """POST /certificate for a new device, through the stack's provisioning function."""
    for name, value in stack.functions["ProvisioningFunction"].environment.items():
        monkeypatch.setenv(name, value)
    get_services.cache_clear()
    try:
        from provisioning.handlers.api import lambda_handler

        device = Device(unique_dsn())
        response: dict[str, Any] = lambda_handler(
            api_event(device.body(), "sub-alice", "Members"), FakeLambdaContext()
        )
    finally:
        get_services.cache_clear()
    return device, response


def csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device_test")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def issue(stack: Deployment, days: int) -> x509.Certificate:
    pca = boto3.client("acm-pca")
    ca_arn = stack.outputs["IssuingCertificateAuthorityArn"]
    arn = pca.issue_certificate(
        CertificateAuthorityArn=ca_arn,
        Csr=csr_pem(),
        SigningAlgorithm="SHA256WITHECDSA",
        TemplateArn="arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1",
        Validity={"Type": "DAYS", "Value": days},
    )["CertificateArn"]
    pem = pca.get_certificate(CertificateAuthorityArn=ca_arn, CertificateArn=arn)["Certificate"]
    return x509.load_pem_x509_certificate(pem.encode())


@pytest.mark.parametrize("days", ["8", "365"])
def test_short_lived_mode_with_a_longer_validity_creates_nothing(aws: None, days: str) -> None:
    # WHEN the stack is deployed in short-lived mode with certificates valid for over 7 days
    with pytest.raises(RuleFailed, match="at most 7 days"):
        deploy_with(**SHORT_LIVED, DeviceCertValidityDays=days)
    # THEN it fails before anything exists: no CA, no table, no function state
    assert boto3.client("acm-pca").list_certificate_authorities()["CertificateAuthorities"] == []
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    assert boto3.client("sns").list_topics()["Topics"] == []


def test_the_cas_are_general_purpose_by_default(aws: None) -> None:
    stack = deploy_with()
    assert usage_mode(stack) == usage_mode(stack, "CertificateAuthorityArn") == "GENERAL_PURPOSE"


def test_a_short_lived_ca_issues_seven_days_and_refuses_more(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a stack in short-lived mode with 7-day device certificates
    stack = deploy_with(**SHORT_LIVED, DeviceCertValidityDays="7")
    assert usage_mode(stack) == "SHORT_LIVED_CERTIFICATE"
    # ... under a general-purpose root: a short-lived CA must be the last of its hierarchy
    assert usage_mode(stack, "CertificateAuthorityArn") == "GENERAL_PURPOSE"

    # WHEN a device is provisioned, THEN its certificate is valid for 7 days
    _, response = provision(stack, monkeypatch)
    answer = json.loads(response["body"])
    assert response["statusCode"] == 200, answer
    lifetime = datetime.fromisoformat(answer["notAfter"].replace("Z", "+00:00")) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < lifetime <= timedelta(days=7)

    # ... and the CA itself refuses a certificate valid for longer, as Private CA does
    assert issue(stack, 7).not_valid_after_utc - datetime.now(UTC) <= timedelta(days=7)
    with pytest.raises(ClientError) as refused:
        issue(stack, 8)
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_a_general_purpose_ca_issues_for_the_validity_asked(aws: None) -> None:
    stack = deploy_with()
    lifetime = issue(stack, 400).not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=399, hours=23) < lifetime <= timedelta(days=400)


def test_no_certificate_outlives_the_issuing_ca_that_signs_it(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a stack whose issuing CA ends in a year, and 400-day device certificates
    stack = deploy_with(IssuingCaValidityYears="1", DeviceCertValidityDays="400")
    # WHEN a device is provisioned
    device, response = provision(stack, monkeypatch)
    # THEN Private CA refuses, as in AWS, and the request fails as the runbook says, with no
    # certificate and no device row left
    answer = json.loads(response["body"])
    assert (response["statusCode"], answer["code"]) == (502, "ISSUE_CERTIFICATE_FAILED")
    assert boto3.client("iot").list_certificates()["certificates"] == []
    table = stack.functions["ProvisioningFunction"].environment["DEVICES_TABLE"]
    assert "Item" not in boto3.client("dynamodb").get_item(
        TableName=table, Key={"dsn": {"S": device.dsn}}
    )
    # ... while a certificate inside the issuing CA's life is issued
    assert issue(stack, 300).not_valid_after_utc < datetime.now(UTC) + timedelta(days=366)
    with pytest.raises(ClientError) as refused:
        issue(stack, 400)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
