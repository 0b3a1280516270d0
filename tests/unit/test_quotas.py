"""AWS API quotas on the emulated services: which call is which, and what a throttled call
looks like to botocore (the client the Lambda uses).

Requests are the ones botocore really builds and signs; a ``before-send`` hook hands each to
the quota middleware in front of a stand-in for moto's app, and turns the WSGI answer back
into botocore's HTTP response. The clock is a fake one: buckets refill only when told.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.moto_bridges.quotas import (
    DEFAULT_QUOTAS,
    Quota,
    QuotaLimiter,
    QuotaMiddleware,
    signing_service,
)

REGION = "us-east-1"
CERT_ARN = f"arn:aws:iot:{REGION}:123456789012:cert/{'a' * 64}"
CA_ARN = f"arn:aws:acm-pca:{REGION}:123456789012:certificate-authority/1234"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class MotoStandIn:
    """What moto would be: answers every call 200 with an empty JSON object, and counts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self._body


def environ_of(request: AWSPreparedRequest) -> dict[str, Any]:
    url = urlsplit(request.url)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "PATH_INFO": url.path,
        "QUERY_STRING": url.query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = value.decode() if isinstance(value, bytes) else value
    return environ


def client_through(
    service: str, middleware: QuotaMiddleware, *, attempts: int = 1, seen: list[Any] | None = None
) -> Any:
    client = boto3.client(
        service,
        region_name=REGION,
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )

    def send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        environ = environ_of(request)
        if seen is not None:
            seen.append(middleware.operation_of(environ))
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

        body = b"".join(middleware(environ, start_response))
        return AWSResponse(request.url, answer["status"], answer["headers"], _Raw(body))

    client.meta.events.register("before-send", send)
    return client


def test_the_signing_service_comes_from_the_credential_scope() -> None:
    header = (
        "AWS4-HMAC-SHA256 Credential=testing/20261129/us-east-1/acm-pca/aws4_request, "
        "SignedHeaders=host, Signature=00"
    )
    assert signing_service(header) == "acm-pca"
    assert signing_service("Bearer x") is None
    assert signing_service(None) is None


def test_each_call_of_the_provisioning_path_is_named_as_aws_names_it() -> None:
    # GIVEN the middleware and the calls the Lambda makes, built and signed by botocore
    middleware = QuotaMiddleware(MotoStandIn(), QuotaLimiter(clock=FakeClock()))
    seen: list[Any] = []
    iot = client_through("iot", middleware, seen=seen)
    pca = client_through("acm-pca", middleware, seen=seen)
    # WHEN each is sent
    iot.create_thing(thingName="device_SN1")
    iot.add_thing_to_thing_group(thingName="device_SN1", thingGroupName="devices")
    iot.register_certificate(certificatePem="pem", caCertificatePem="ca", status="ACTIVE")
    iot.register_certificate_without_ca(certificatePem="pem", status="ACTIVE")
    iot.attach_policy(policyName="device-policy", target=CERT_ARN)
    iot.attach_thing_principal(thingName="device_SN1", principal=CERT_ARN)
    iot.update_certificate(certificateId="a" * 64, newStatus="REVOKED")
    iot.describe_certificate(certificateId="a" * 64)
    pca.issue_certificate(
        CertificateAuthorityArn=CA_ARN,
        Csr=b"csr",
        SigningAlgorithm="SHA256WITHRSA",
        Validity={"Value": 1, "Type": "DAYS"},
    )
    pca.get_certificate(CertificateAuthorityArn=CA_ARN, CertificateArn=CA_ARN + "/certificate/1")
    # THEN each has its AWS operation name
    assert seen == [
        ("iot", "CreateThing"),
        ("iot", "AddThingToThingGroup"),
        ("iot", "RegisterCertificate"),
        ("iot", "RegisterCertificateWithoutCA"),
        ("iot", "AttachPolicy"),
        ("iot", "AttachThingPrincipal"),
        ("iot", "UpdateCertificate"),
        ("iot", "DescribeCertificate"),
        ("acm-pca", "IssueCertificate"),
        ("acm-pca", "GetCertificate"),
    ]


def test_calls_beyond_a_quota_fail_with_throttling_until_the_bucket_refills() -> None:
    # GIVEN IoT RegisterCertificate at its default quota, 10 per second
    clock = FakeClock()
    limiter = QuotaLimiter(clock=clock)
    moto = MotoStandIn()
    iot = client_through("iot", QuotaMiddleware(moto, limiter))

    def register() -> str:
        try:
            iot.register_certificate_without_ca(certificatePem="pem", status="ACTIVE")
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    # WHEN 12 calls come within the same instant
    results = [register() for _ in range(12)]
    # THEN 10 reach moto and 2 fail as AWS fails them
    assert results == ["ok"] * 10 + ["ThrottlingException"] * 2
    assert moto.calls == 10
    assert limiter.throttled[("iot", "RegisterCertificateWithoutCA")] == 2
    # AND a tenth of a second later one more call fits
    clock.now += 0.1
    assert [register(), register()] == ["ok", "ThrottlingException"]
    # AND calls without a quota are never throttled
    assert all(iot.describe_certificate(certificateId="a" * 64) is not None for _ in range(50))
    assert limiter.calls["iot"] == 12 + 2 + 50


def test_a_scaled_table_multiplies_every_rate() -> None:
    scaled = QuotaLimiter(clock=FakeClock()).scaled(0.2)
    assert scaled.quotas[("iot", "RegisterCertificate")].rate == 2
    assert scaled.quotas[("acm-pca", "GetCertificate")].rate == 15
    assert [scaled.admit("iot", "RegisterCertificate") for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("service", ["iot", "acm-pca"])
def test_botocore_retries_a_throttled_call_as_throttling(service: str) -> None:
    # GIVEN a quota that is spent, and a client allowed two attempts (standard retry mode
    # retries throttling and transient errors only, never a plain 400)
    clock = FakeClock()
    operation = "AttachPolicy" if service == "iot" else "IssueCertificate"
    limiter = QuotaLimiter([Quota(service, operation, 1, "test")], clock=clock)
    client = client_through(service, QuotaMiddleware(MotoStandIn(), limiter), attempts=2)

    def call() -> None:
        if service == "iot":
            client.attach_policy(policyName="device-policy", target=CERT_ARN)
        else:
            client.issue_certificate(
                CertificateAuthorityArn=CA_ARN,
                Csr=b"csr",
                SigningAlgorithm="SHA256WITHRSA",
                Validity={"Value": 1, "Type": "DAYS"},
            )

    call()
    # WHEN the next call comes within the same second
    with pytest.raises(ClientError) as throttled:
        call()
    # THEN botocore saw ThrottlingException (HTTP 400, as AWS answers) and retried it once
    response = throttled.value.response
    assert response["Error"]["Code"] == "ThrottlingException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert limiter.throttled[(service, operation)] == 2


def test_the_default_table_holds_the_documented_quotas() -> None:
    rates = {(quota.service, quota.operation): quota.rate for quota in DEFAULT_QUOTAS}
    assert rates[("iot", "RegisterCertificate")] == 10
    assert rates[("iot", "AttachPolicy")] == 15
    assert rates[("acm-pca", "IssueCertificate")] == 25
    assert rates[("acm-pca", "GetCertificate")] == 75
    assert rates[("acm-pca", "RevokeCertificate")] == 20
    # the tightest quota a first provisioning meets bounds the line at 10 devices a second
    per_device = ("IssueCertificate", "GetCertificate", "RegisterCertificate", "AttachPolicy")
    assert min(rate for (_, op), rate in rates.items() if op in per_device) == 10


def test_the_throttling_body_is_json_aws_shaped() -> None:
    limiter = QuotaLimiter([Quota("iot", "CreateThing", 1, "test")], clock=FakeClock())
    middleware = QuotaMiddleware(MotoStandIn(), limiter)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/things/device_SN1",
        "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=k/20261129/us-east-1/iot/aws4_request",
        "CONTENT_LENGTH": "2",
        "wsgi.input": io.BytesIO(b"{}"),
    }
    answers: list[tuple[str, dict[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answers.append((status, dict(headers)))

    middleware(dict(environ, **{"wsgi.input": io.BytesIO(b"{}")}), start_response)
    body = b"".join(middleware(environ, start_response))
    assert [status for status, _ in answers] == ["200 OK", "400 Bad Request"]
    assert answers[1][1]["x-amzn-ErrorType"] == "ThrottlingException"
    assert answers[1][1]["Content-Type"] == "application/json"
    assert json.loads(body)["__type"] == "ThrottlingException"
    assert environ["wsgi.input"].read() == b""  # the body was read: the connection stays usable
