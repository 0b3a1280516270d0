"""Pure pieces of the CA-registration custom resource: properties, CSR, bounded waits, and the
adapters' translation of AWS errors (botocore Stubber: no network, no moto)."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ca_registration import service
from ca_registration.adapters import Adapters, IotAdapter, PcaAdapter
from ca_registration.budget import Budget
from ca_registration.errors import (
    AlreadyRegistered,
    DeadlineExceeded,
    DeleteRefused,
    StillIssuing,
)
from ca_registration.models import CaRegistrationProperties, is_iot_certificate_id
from ca_registration.verification import verification_csr

PCA_ARN = (
    "arn:aws:acm-pca:us-east-1:123456789012:"
    "certificate-authority/12345678-1234-1234-1234-123456789012"
)


class Clock:
    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.ends - time.monotonic()) * 1000)


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# --- properties -----------------------------------------------------------------------------


def test_properties_parse_cloudformation_strings() -> None:
    props = CaRegistrationProperties.model_validate(
        {"CertificateAuthorityArn": PCA_ARN, "CertificateMode": "SNI_ONLY", "ForceDelete": "TRUE"}
    )
    assert props.certificate_mode == "SNI_ONLY"
    assert props.force_delete is True
    assert CaRegistrationProperties.model_validate({"CertificateAuthorityArn": PCA_ARN}) == (
        CaRegistrationProperties.model_validate(
            {
                "CertificateAuthorityArn": PCA_ARN,
                "CertificateMode": "DEFAULT",
                "ForceDelete": "false",
            }
        )
    )


@pytest.mark.parametrize(
    "props",
    [
        {"CertificateAuthorityArn": "arn:aws:iam::123456789012:role/x"},
        {"CertificateAuthorityArn": PCA_ARN, "CertificateMode": "MULTI"},
        {"CertificateAuthorityArn": PCA_ARN, "ForceDelete": "yes"},
        {},
    ],
)
def test_properties_reject_template_mistakes(props: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CaRegistrationProperties.model_validate(props)


def test_only_iot_certificate_ids_count_as_registered() -> None:
    assert is_iot_certificate_id("a" * 64)
    assert not is_iot_certificate_id("failed-1234")
    assert not is_iot_certificate_id("A" * 64)


# --- verification CSR -----------------------------------------------------------------------


def test_verification_csr_carries_the_registration_code_on_a_p256_key() -> None:
    csr = x509.load_pem_x509_csr(verification_csr("f00dcafe" * 8))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "f00dcafe" * 8
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


# --- deadline -------------------------------------------------------------------------------


def test_deadline_keeps_the_margin_and_stops_sleeping_at_the_budget() -> None:
    deadline = Budget(Clock(1.3), margin_s=1.0)
    assert 0.2 < deadline.seconds_left() <= 0.3
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="waiting for x"):
        deadline.sleep(5.0, "waiting for x")
    assert time.monotonic() - started < 0.6


# --- adapters: AWS errors become domain errors ----------------------------------------------


def test_register_ca_already_exists_names_the_existing_certificate() -> None:
    client = boto3.client("iot")
    with Stubber(client) as stub:
        stub.add_client_error(
            "register_ca_certificate",
            service_error_code="ResourceAlreadyExistsException",
            http_status_code=409,
            modeled_fields={"message": "exists", "resourceId": "ab" * 32},
        )
        with pytest.raises(AlreadyRegistered) as caught:
            IotAdapter(client).register_ca("pem", None, "SNI_ONLY", {"k": "v"})
    assert caught.value.certificate_id == "ab" * 32


def test_delete_ca_refused_by_iot_is_a_domain_error() -> None:
    client = boto3.client("iot")
    with Stubber(client) as stub:
        stub.add_client_error(
            "delete_ca_certificate",
            service_error_code="CertificateStateException",
            http_status_code=406,
        )
        with pytest.raises(DeleteRefused, match="CertificateStateException"):
            IotAdapter(client).delete_ca("ab" * 32)


def test_certificates_by_ca_follows_every_page() -> None:
    client = boto3.client("iot")
    ca_id = "cd" * 32
    with Stubber(client) as stub:
        stub.add_response(
            "list_certificates_by_ca",
            {
                "certificates": [{"certificateId": "1" * 64, "status": "REVOKED"}],
                "nextMarker": "m2",
            },
            {"caCertificateId": ca_id, "pageSize": 250},
        )
        stub.add_response(
            "list_certificates_by_ca",
            {"certificates": [{"certificateId": "2" * 64, "status": "ACTIVE"}]},
            {"caCertificateId": ca_id, "pageSize": 250, "marker": "m2"},
        )
        no_audit: Any = None
        adapters = Adapters(
            pca=PcaAdapter(boto3.client("acm-pca")), iot=IotAdapter(client), audit=no_audit
        )
        request = service.Request("r", "s", Budget(Clock(60), 1.0), service.Progress())
        assert service.count_active_device_certificates(ca_id, request, adapters) == 1
        stub.assert_no_pending_responses()


def test_get_certificate_in_progress_is_still_issuing() -> None:
    client = boto3.client("acm-pca")
    with Stubber(client) as stub:
        stub.add_client_error("get_certificate", service_error_code="RequestInProgressException")
        with pytest.raises(StillIssuing):
            PcaAdapter(client).get_certificate(PCA_ARN, PCA_ARN + "/certificate/abc")


# --- service: bounded polling ---------------------------------------------------------------


class SlowPca:
    """Issues after ``busy`` RequestInProgress answers."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0

    def get_certificate(self, ca_arn: str, certificate_arn: str) -> str:
        self.calls += 1
        if self.calls <= self.busy:
            raise StillIssuing("still issuing")
        return "-----BEGIN CERTIFICATE-----"


def _request(seconds: float) -> service.Request:
    return service.Request("req", "stack", Budget(Clock(seconds), 1.0), service.Progress())


def test_get_certificate_polling_starts_fast_and_succeeds() -> None:
    pca = SlowPca(busy=3)
    adapters = Adapters(pca=pca, iot=None, audit=None)  # type: ignore[arg-type]
    started = time.monotonic()
    assert service._poll_certificate(PCA_ARN, "c", _request(30), adapters).startswith("-----BEGIN")
    assert pca.calls == 4
    assert time.monotonic() - started < 0.6  # 50 + 100 + 200 ms, not a second per poll


def test_get_certificate_polling_gives_up_at_the_deadline() -> None:
    pca = SlowPca(busy=10_000)
    adapters = Adapters(pca=pca, iot=None, audit=None)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        service._poll_certificate(PCA_ARN, "c", _request(1.5), adapters)
    assert time.monotonic() - started < 1.0
