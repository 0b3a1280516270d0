"""Small adapters for ACM PCA, AWS IoT and the audit table.

Only this module touches boto3. Each adapter turns the service's errors into the domain
exceptions of ``errors`` so the service reads without botocore in sight. Clients resolve their
endpoint the default boto3 way (offline: ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ca_registration.config import get_settings
from ca_registration.errors import (
    AlreadyRegistered,
    AuditFailed,
    DeleteRefused,
    NotFound,
    StillIssuing,
)
from ca_registration.models import RegisteredCa
from ca_registration.observability import logger

# A budget that fits the custom resource's time: three attempts, short connects.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=3,
    read_timeout=10,
)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --- ports the service depends on -----------------------------------------------------------


class PcaPort(Protocol):
    def describe(self, ca_arn: str) -> tuple[str, str]: ...
    def ca_certificate(self, ca_arn: str) -> str: ...
    def issue(
        self, ca_arn: str, csr_pem: bytes, signing_algorithm: str, template_arn: str, token: str
    ) -> str: ...
    def get_certificate(self, ca_arn: str, certificate_arn: str) -> str: ...
    def revoke(self, ca_arn: str, serial: str, reason: str) -> None: ...


class IotPort(Protocol):
    def registration_code(self) -> str: ...
    def register_ca(
        self, ca_pem: str, verification_pem: str | None, mode: str, tags: dict[str, str]
    ) -> RegisteredCa: ...
    def describe_ca(self, certificate_id: str) -> RegisteredCa: ...
    def set_ca_status(self, certificate_id: str, status: str) -> None: ...
    def delete_ca(self, certificate_id: str) -> None: ...
    def certificate_statuses_by_ca(
        self, certificate_id: str, page_size: int
    ) -> Iterator[list[str]]: ...


class AuditPort(Protocol):
    def record(self, ca_id: str, event: str, request_id: str, stack_id: str, what: str) -> None: ...


# --- ACM PCA --------------------------------------------------------------------------------


class PcaAdapter:
    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, ca_arn: str) -> tuple[str, str]:
        """(status, signing algorithm) of the Private CA."""
        try:
            ca = self._client.describe_certificate_authority(CertificateAuthorityArn=ca_arn)[
                "CertificateAuthority"
            ]
        except ClientError as error:
            if _code(error) == "ResourceNotFoundException":
                raise NotFound("the Private CA does not exist") from error
            raise
        config = ca.get("CertificateAuthorityConfiguration", {})
        return str(ca["Status"]), str(config.get("SigningAlgorithm", "SHA256WITHRSA"))

    def ca_certificate(self, ca_arn: str) -> str:
        response = self._client.get_certificate_authority_certificate(
            CertificateAuthorityArn=ca_arn
        )
        return str(response["Certificate"])

    def issue(
        self, ca_arn: str, csr_pem: bytes, signing_algorithm: str, template_arn: str, token: str
    ) -> str:
        response = self._client.issue_certificate(
            CertificateAuthorityArn=ca_arn,
            Csr=csr_pem,
            SigningAlgorithm=signing_algorithm,
            TemplateArn=template_arn,
            # A verification certificate is thrown away after registration: one day is plenty.
            Validity={"Value": 1, "Type": "DAYS"},
            IdempotencyToken=token,
        )
        return str(response["CertificateArn"])

    def get_certificate(self, ca_arn: str, certificate_arn: str) -> str:
        try:
            response = self._client.get_certificate(
                CertificateAuthorityArn=ca_arn, CertificateArn=certificate_arn
            )
        except ClientError as error:
            if _code(error) == "RequestInProgressException":
                raise StillIssuing("the verification certificate is still being issued") from error
            raise
        return str(response["Certificate"])

    def revoke(self, ca_arn: str, serial: str, reason: str) -> None:
        """RevokeCertificate; a certificate already revoked counts as revoked."""
        try:
            self._client.revoke_certificate(
                CertificateAuthorityArn=ca_arn, CertificateSerial=serial, RevocationReason=reason
            )
        except ClientError as error:
            if _code(error) != "RequestAlreadyProcessedException":
                raise


# --- AWS IoT --------------------------------------------------------------------------------


class IotAdapter:
    def __init__(self, client: Any) -> None:
        self._client = client

    def registration_code(self) -> str:
        return str(self._client.get_registration_code()["registrationCode"])

    def register_ca(
        self, ca_pem: str, verification_pem: str | None, mode: str, tags: dict[str, str]
    ) -> RegisteredCa:
        kwargs: dict[str, Any] = {
            "caCertificate": ca_pem,
            "setAsActive": True,
            "allowAutoRegistration": False,
            "certificateMode": mode,
            # moto 5.2 has no TagResource: tags go in at registration, where the API allows it.
            "tags": [{"Key": key, "Value": value} for key, value in tags.items()],
        }
        if verification_pem is not None:
            kwargs["verificationCertificate"] = verification_pem
        try:
            response = self._client.register_ca_certificate(**kwargs)
        except ClientError as error:
            code = _code(error)
            if code == "ResourceAlreadyExistsException":
                resource_id = error.response.get("resourceId")
                raise AlreadyRegistered(str(resource_id) if resource_id else None) from error
            if code == "CertificateConflictException":
                raise AlreadyRegistered(None) from error
            raise
        return RegisteredCa(str(response["certificateId"]), str(response["certificateArn"]))

    def describe_ca(self, certificate_id: str) -> RegisteredCa:
        try:
            response = self._client.describe_ca_certificate(certificateId=certificate_id)
        except ClientError as error:
            if _code(error) in ("ResourceNotFoundException", "InvalidRequestException"):
                raise NotFound("the CA certificate is not registered with AWS IoT") from error
            raise
        description = response["certificateDescription"]
        return RegisteredCa(
            str(description["certificateId"]),
            str(description["certificateArn"]),
            str(description.get("status", "")),
        )

    def set_ca_status(self, certificate_id: str, status: str) -> None:
        try:
            self._client.update_ca_certificate(
                certificateId=certificate_id,
                newStatus=status,
                newAutoRegistrationStatus="DISABLE",
            )
        except ClientError as error:
            if _code(error) == "ResourceNotFoundException":
                raise NotFound("the CA certificate is not registered with AWS IoT") from error
            raise

    def delete_ca(self, certificate_id: str) -> None:
        try:
            self._client.delete_ca_certificate(certificateId=certificate_id)
        except ClientError as error:
            code = _code(error)
            if code == "ResourceNotFoundException":
                raise NotFound("the CA certificate is not registered with AWS IoT") from error
            if code in ("CertificateStateException", "DeleteConflictException"):
                raise DeleteRefused(f"AWS IoT refused to delete the CA certificate ({code})") from (
                    error
                )
            raise

    def certificate_statuses_by_ca(
        self, certificate_id: str, page_size: int
    ) -> Iterator[list[str]]:
        """Yield one list of device-certificate statuses per ListCertificatesByCA page."""
        marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"caCertificateId": certificate_id, "pageSize": page_size}
            if marker:
                kwargs["marker"] = marker
            response = self._client.list_certificates_by_ca(**kwargs)
            yield [str(cert.get("status", "")) for cert in response.get("certificates", [])]
            marker = response.get("nextMarker")
            if not marker:
                return


# --- audit table ----------------------------------------------------------------------------


class DynamoAuditAdapter:
    """Writes one item per use of the CA: pk ``ca#<iot ca id>``, sk ``<iso>#<event>#<request>``."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def record(self, ca_id: str, event: str, request_id: str, stack_id: str, what: str) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        item = {
            "pk": {"S": f"ca#{ca_id}"},
            "sk": {"S": f"{at}#{event}#{request_id}"},
            "event": {"S": event},
            "actor": {"S": "cloudformation"},
            "stack_id": {"S": stack_id},
            "what": {"S": what},
            "at": {"S": at},
            "request_id": {"S": request_id},
        }
        try:
            self._client.put_item(TableName=self._table, Item=item)
        except (ClientError, BotoCoreError) as error:
            raise AuditFailed(f"could not write the {event} audit record") from error


class SkippedAudit:
    """Used when AUDIT_TABLE is unset: says so once per record instead of failing."""

    def record(self, ca_id: str, event: str, request_id: str, stack_id: str, what: str) -> None:
        logger.warning("AUDIT_TABLE unset: audit record skipped", extra={"audit_event": event})


# --- the cached factory ---------------------------------------------------------------------


@dataclass(frozen=True)
class Adapters:
    pca: PcaPort
    iot: IotPort
    audit: AuditPort


@cache
def get_adapters() -> Adapters:
    """Built once per container; tests hand ``process`` their own instead."""
    session = boto3.session.Session()
    settings = get_settings()
    audit: AuditPort
    if settings.audit_table:
        audit = DynamoAuditAdapter(
            session.client("dynamodb", config=CLIENT_CONFIG), settings.audit_table
        )
    else:
        audit = SkippedAudit()
    return Adapters(
        pca=PcaAdapter(session.client("acm-pca", config=CLIENT_CONFIG)),
        iot=IotAdapter(session.client("iot", config=CLIENT_CONFIG)),
        audit=audit,
    )
