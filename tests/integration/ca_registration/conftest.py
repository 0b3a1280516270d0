"""Fixtures of the CA-registration custom resource tests: moto, a Private CA, a local listener
standing in for CloudFormation's ResponseURL, CloudFormation-shaped events and a LambdaContext.

The PCA and the audit table are made here by hand until the shared deployer that reads
template.yaml lands; they stay as small as the custom resource needs.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from ca_registration import adapters as adapters_module
from ca_registration import config as config_module
from tests.support.lambda_support import FakeLambdaContext

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ca_registration"
AUDIT_TABLE = "ca-registration-audit"
# Stands in for the signature of CloudFormation's pre-signed S3 URL: must never be logged.
URL_SECRET = "X-Amz-Signature=5ec12e7f00d5ca1ab1e0000000000000000000000000000000000000000beef"


# --- CloudFormation's side: the ResponseURL listener ----------------------------------------


@dataclass
class Answer:
    path: str
    content_type: str | None
    body: dict[str, Any]


@dataclass
class Listener:
    base_url: str
    answers: list[Answer] = field(default_factory=list)
    fail_next: int = 0  # answer HTTP 500 to this many PUTs first (retry tests)
    attempts: int = 0

    def url(self, request_id: str) -> str:
        return f"{self.base_url}/cfn-response/{request_id}?{URL_SECRET}"

    def for_request(self, request_id: str) -> list[Answer]:
        return [a for a in self.answers if a.path.split("?")[0].endswith(f"/{request_id}")]


@pytest.fixture
def listener() -> Iterator[Listener]:
    state = Listener(base_url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with lock:
                state.attempts += 1
                if state.fail_next > 0:
                    state.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                state.answers.append(
                    Answer(self.path, self.headers.get("Content-Type"), json.loads(raw))
                )
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- AWS under moto -------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AUDIT_TABLE": AUDIT_TABLE,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "ca-registration-test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    adapters_module.get_adapters.cache_clear()
    config_module.get_settings.cache_clear()
    # AWS names an IoT certificate by the SHA-256 of its DER; moto does so only when asked.
    with mock_aws(config={"iot": {"use_valid_cert": True}}):
        boto3.client("dynamodb").create_table(
            TableName=AUDIT_TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield
    adapters_module.get_adapters.cache_clear()
    config_module.get_settings.cache_clear()


@pytest.fixture
def make_pca(aws: None) -> Callable[..., str]:
    """A ROOT Private CA; activated (self-signed root imported) unless told otherwise."""

    def make(activate: bool = True, name: str = "Onboarding Test Root") -> str:
        pca = boto3.client("acm-pca")
        arn = str(
            pca.create_certificate_authority(
                CertificateAuthorityConfiguration={
                    "KeyAlgorithm": "EC_prime256v1",
                    "SigningAlgorithm": "SHA256WITHECDSA",
                    "Subject": {"CommonName": name, "Organization": "Example Corp"},
                },
                CertificateAuthorityType="ROOT",
            )["CertificateAuthorityArn"]
        )
        if activate:
            csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
            cert_arn = pca.issue_certificate(
                CertificateAuthorityArn=arn,
                Csr=csr,
                SigningAlgorithm="SHA256WITHECDSA",
                TemplateArn="arn:aws:acm-pca:::template/RootCACertificate/V1",
                Validity={"Value": 10, "Type": "YEARS"},
            )["CertificateArn"]
            cert = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=cert_arn)
            pca.import_certificate_authority_certificate(
                CertificateAuthorityArn=arn, Certificate=cert["Certificate"]
            )
        return arn

    return make


@pytest.fixture
def register_device(aws: None) -> Callable[[str, str], str]:
    """Issue a device certificate from the PCA and register it in IoT under the CA."""

    def register(pca_arn: str, status: str = "ACTIVE") -> str:
        pca = boto3.client("acm-pca")
        key = ec.generate_private_key(ec.SECP256R1())
        dsn = f"dev-{uuid.uuid4().hex[:12]}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dsn)]))
            .sign(key, hashes.SHA256())
        )
        cert_arn = pca.issue_certificate(
            CertificateAuthorityArn=pca_arn,
            Csr=csr.public_bytes(serialization.Encoding.PEM),
            SigningAlgorithm="SHA256WITHECDSA",
            TemplateArn="arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1",
            Validity={"Value": 30, "Type": "DAYS"},
        )["CertificateArn"]
        pem = pca.get_certificate(CertificateAuthorityArn=pca_arn, CertificateArn=cert_arn)
        ca_pem = pca.get_certificate_authority_certificate(CertificateAuthorityArn=pca_arn)
        return str(
            boto3.client("iot").register_certificate(
                certificatePem=pem["Certificate"],
                caCertificatePem=ca_pem["Certificate"],
                status=status,
            )["certificateId"]
        )

    return register


# --- events and context ---------------------------------------------------------------------


@pytest.fixture
def make_event(listener: Listener) -> Callable[..., dict[str, Any]]:
    def make(
        request_type: str,
        ca_arn: str,
        physical_id: str | None = None,
        mode: str = "DEFAULT",
        force_delete: str = "false",
        old_ca_arn: str | None = None,
        old_mode: str | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = json.loads((FIXTURES / f"{request_type.lower()}.json").read_text())
        request_id = str(uuid.uuid4())
        event["RequestId"] = request_id
        event["ResponseURL"] = listener.url(request_id)
        props = event["ResourceProperties"]
        props.update(CertificateAuthorityArn=ca_arn, CertificateMode=mode, ForceDelete=force_delete)
        if physical_id is not None:
            event["PhysicalResourceId"] = physical_id
        if "OldResourceProperties" in event:
            old = copy.deepcopy(props)
            old.update(
                CertificateAuthorityArn=old_ca_arn or ca_arn,
                CertificateMode=old_mode or mode,
            )
            event["OldResourceProperties"] = old
        return event

    return make


def deployment_context(remaining_s: float = 300.0) -> FakeLambdaContext:
    """The custom resource's context, its remaining time running down with the wall clock."""
    return FakeLambdaContext(
        remaining_s, function_name="onboarding-DeploymentFunction", memory_limit_in_mb=256
    )


@pytest.fixture
def context() -> FakeLambdaContext:
    return deployment_context()


@pytest.fixture
def lambda_context() -> Callable[..., FakeLambdaContext]:
    """Makes contexts, for tests that set their own remaining time (``remaining_s``)."""
    return deployment_context


@pytest.fixture
def url_secret() -> str:
    return URL_SECRET
