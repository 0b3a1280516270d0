"""The custom resource always answers CloudFormation exactly once: on time, on failure, and
without leaking the pre-signed ResponseURL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from ca_registration import handler as handler_module
from ca_registration.adapters import Adapters, DynamoAuditAdapter, IotAdapter, PcaAdapter
from ca_registration.config import get_settings
from ca_registration.handler import lambda_handler, process

Event = dict[str, Any]
Listener = Any  # conftest.Listener (not imported: tests/integration has its own conftest)


def only_answer(listener: Listener, event: Event) -> dict[str, Any]:
    answers = listener.for_request(event["RequestId"])
    assert len(answers) == 1, f"expected exactly one answer, got {len(answers)}"
    body: dict[str, Any] = answers[0].body
    return body


def moto_adapters() -> Adapters:
    return Adapters(
        pca=PcaAdapter(boto3.client("acm-pca")),
        iot=IotAdapter(boto3.client("iot")),
        audit=DynamoAuditAdapter(boto3.client("dynamodb"), "ca-registration-audit"),
    )


def test_pca_stuck_pending_answers_failed_before_the_lambda_times_out(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    # GIVEN a Private CA that never leaves PENDING_CERTIFICATE (no CA certificate imported)
    pca_arn = make_pca(activate=False)
    event = make_event("Create", ca_arn=pca_arn)
    # AND a Lambda with only 2 s left beyond the 10 s answering margin
    context = lambda_context(remaining_s=handler_module.TIMEOUT_MARGIN_S + 2.0)

    # WHEN CloudFormation creates the resource
    lambda_handler(event, context)

    # THEN FAILED arrives while the Lambda still has time, naming what it waited for
    assert context.get_remaining_time_in_millis() > 5_000
    body = only_answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "time" in body["Reason"] and "PENDING_CERTIFICATE" in body["Reason"]
    # AND nothing was registered under a real id (the placeholder is not a CA id)
    assert len(body["PhysicalResourceId"]) != 64


class HangingIot(IotAdapter):
    """GetRegistrationCode that hangs past the budget (a stuck connection)."""

    def registration_code(self) -> str:
        time.sleep(2.5)
        return "0" * 64


def test_a_hanging_call_is_answered_by_the_watchdog_exactly_once(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    pca_arn = make_pca()
    event = make_event("Create", ca_arn=pca_arn)
    adapters = moto_adapters()
    adapters = Adapters(pca=adapters.pca, iot=HangingIot(boto3.client("iot")), audit=adapters.audit)
    # 2 s left, 1 s margin: work budget 1 s, watchdog fires at 1.5 s, the call returns at 2.5 s
    context = lambda_context(remaining_s=2.0)

    started = time.monotonic()
    process(event, context, adapters, margin_s=1.0)

    body = only_answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "timed out" in body["Reason"]
    # The main path finished after the watchdog answered, and did not answer a second time.
    assert time.monotonic() - started >= 2.5
    assert len(listener.for_request(event["RequestId"])) == 1


def test_the_answer_is_retried_when_the_response_url_fails_once(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    listener.fail_next = 1
    event = make_event("Create", ca_arn=make_pca(), mode="SNI_ONLY")
    lambda_handler(event, lambda_context())
    assert listener.attempts == 2
    assert only_answer(listener, event)["Status"] == "SUCCESS"


def test_logs_never_contain_the_response_url(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    caplog: pytest.LogCaptureFixture,
    lambda_context: Any,
    url_secret: Any,
) -> None:
    # A success, a failure and a retried PUT all log something; none of it the pre-signed URL.
    listener.fail_next = 1
    ok = make_event("Create", ca_arn=make_pca())
    lambda_handler(ok, lambda_context())
    bad = make_event("Create", ca_arn="arn:aws:acm-pca:us-east-1:123456789012:nope")
    lambda_handler(bad, lambda_context())

    # Every record with all its keys, as the Powertools JSON formatter would write them.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "answered CloudFormation" in logged  # the function does log
    for secret in (url_secret, "/cfn-response/", listener.base_url):
        assert secret not in logged
    assert only_answer(listener, ok)["Status"] == "SUCCESS"
    assert only_answer(listener, bad)["Status"] == "FAILED"


def test_sni_only_and_default_send_what_iot_expects(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    sent: list[dict[str, Any]] = []
    iot = boto3.client("iot")
    iot.meta.events.register(
        "provide-client-params.iot.RegisterCACertificate",
        lambda params, **_: sent.append(dict(params)),
    )
    adapters = Adapters(
        pca=PcaAdapter(boto3.client("acm-pca")), iot=IotAdapter(iot), audit=moto_adapters().audit
    )
    pca_arn = make_pca()

    process(make_event("Create", ca_arn=pca_arn, mode="SNI_ONLY"), lambda_context(), adapters, 10)
    default_arn = make_pca(name="Other")
    process(
        make_event("Create", ca_arn=default_arn, mode="DEFAULT"),
        lambda_context(),
        adapters,
        10,
    )

    sni, default = sent
    assert sni["certificateMode"] == "SNI_ONLY" and "verificationCertificate" not in sni
    assert default["certificateMode"] == "DEFAULT"
    for params in (sni, default):
        assert params["setAsActive"] is True
        assert params["allowAutoRegistration"] is False
        assert params["tags"][0]["Key"] == "CertificateAuthorityArn"
    assert sni["tags"][0]["Value"] == pca_arn

    # The verification certificate is issued by the PCA with CN = a registration code.
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from ca_registration.service import serial_of

    verification = x509.load_pem_x509_certificate(default["verificationCertificate"].encode())
    ca = x509.load_pem_x509_certificate(default["caCertificate"].encode())
    assert verification.issuer == ca.subject
    cn = verification.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn and cn != ca.subject.rfc4514_string()
    # ... minimal: server-auth only, so no device could ever authenticate with it ...
    eku = verification.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert verification.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # ... and revoked in ACM PCA once IoT has registered the CA
    assert revoked_serials(default_arn) == {serial_of(default["verificationCertificate"])}
    assert revoked_serials(pca_arn) == set()  # SNI_ONLY issued nothing to revoke


def revoked_serials(ca_arn: str) -> set[str]:
    """What moto's ACM PCA has revoked for the CA (the API has no call that lists them)."""
    from moto.acmpca.models import acmpca_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    region = ca_arn.split(":")[3]
    authority = acmpca_backends[DEFAULT_ACCOUNT_ID][region].certificate_authorities[ca_arn]
    return set(authority.revoked_certificates)


def test_without_audit_table_registration_still_succeeds(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: Any,
) -> None:
    from ca_registration.adapters import get_adapters

    monkeypatch.delenv("AUDIT_TABLE")
    get_settings.cache_clear()
    get_adapters.cache_clear()
    event = make_event("Create", ca_arn=make_pca(), mode="SNI_ONLY")
    lambda_handler(event, lambda_context())
    body = only_answer(listener, event)
    assert body["Status"] == "SUCCESS"
    items = boto3.client("dynamodb").scan(TableName="ca-registration-audit")["Items"]
    assert items == []


class BrokenAudit:
    def record(self, ca_id: str, event: str, request_id: str, stack_id: str, what: str) -> None:
        from ca_registration.errors import AuditFailed

        raise AuditFailed(f"could not write the {event} audit record")


def test_create_failing_after_registration_answers_the_ca_id_so_rollback_removes_it(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    # GIVEN an audit table that refuses writes (Create fails closed: nothing unrecorded)
    pca_arn = make_pca()
    real = moto_adapters()
    broken = Adapters(pca=real.pca, iot=real.iot, audit=BrokenAudit())
    event = make_event("Create", ca_arn=pca_arn, mode="SNI_ONLY")

    # WHEN the Create registers the CA and then fails on the audit record
    process(event, lambda_context(), broken, 10)

    # THEN CloudFormation gets FAILED carrying the registered CA's id
    body = only_answer(listener, event)
    assert body["Status"] == "FAILED"
    assert "audit" in body["Reason"]
    ca_id = body["PhysicalResourceId"]
    registered = boto3.client("iot").describe_ca_certificate(certificateId=ca_id)
    assert registered["certificateDescription"]["certificateId"] == ca_id
    assert registered["certificateDescription"]["status"] == "ACTIVE"

    # AND the rollback Delete for that id removes the CA (a Delete never fails on audit)
    delete = make_event("Delete", ca_arn=pca_arn, physical_id=ca_id)
    process(delete, lambda_context(), broken, 10)
    assert only_answer(listener, delete)["Status"] == "SUCCESS"
    with pytest.raises(boto3.client("iot").exceptions.ResourceNotFoundException):
        boto3.client("iot").describe_ca_certificate(certificateId=ca_id)


class PcaThatCannotRevoke(PcaAdapter):
    def revoke(self, ca_arn: str, serial: str, reason: str) -> None:
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "RevokeCertificate"
        )


def test_a_verification_certificate_that_cannot_be_revoked_leaves_the_registration_standing(
    make_pca: Callable[..., str],
    make_event: Callable[..., Event],
    listener: Listener,
    lambda_context: Any,
) -> None:
    # GIVEN ACM PCA refuses the revocation (its key was thrown away at issue: it cannot be used)
    pca_arn = make_pca()
    real = moto_adapters()
    adapters = Adapters(
        pca=PcaThatCannotRevoke(boto3.client("acm-pca")), iot=real.iot, audit=real.audit
    )
    event = make_event("Create", ca_arn=pca_arn, mode="DEFAULT")

    # WHEN CloudFormation creates the resource
    process(event, lambda_context(), adapters, 10)

    # THEN the CA is registered and the stack goes on; no revocation is claimed in the audit
    body = only_answer(listener, event)
    assert body["Status"] == "SUCCESS", body["Reason"]
    items = boto3.client("dynamodb").scan(TableName="ca-registration-audit")["Items"]
    events = sorted(item["event"]["S"] for item in items)
    assert events == ["ISSUE", "REGISTER_CA"]
