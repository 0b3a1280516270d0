"""Typed shapes of the custom resource: event properties in, one answer out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import (
    CloudFormationCustomResourceCreateModel,
    CloudFormationCustomResourceDeleteModel,
    CloudFormationCustomResourceUpdateModel,
)
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

PCA_ARN_PATTERN = r"^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:\d{12}:certificate-authority/[0-9a-f-]{36}$"
IOT_CERT_ID = re.compile(r"^[0-9a-f]{64}$")


class CaRegistrationProperties(BaseModel):
    """ResourceProperties of Custom::IoTCaRegistration (CloudFormation sends strings)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    certificate_authority_arn: str = Field(alias="CertificateAuthorityArn", pattern=PCA_ARN_PATTERN)
    certificate_mode: Literal["DEFAULT", "SNI_ONLY"] = Field(
        default="DEFAULT", alias="CertificateMode"
    )
    force_delete: bool = Field(default=False, alias="ForceDelete")

    @field_validator("force_delete", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # CloudFormation passes "true"/"false" strings; anything else is a template mistake.
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError("ForceDelete must be 'true' or 'false'")
            return lowered == "true"
        return value

    def registers_same_ca(self, other: CaRegistrationProperties) -> bool:
        return (
            self.certificate_authority_arn == other.certificate_authority_arn
            and self.certificate_mode == other.certificate_mode
        )


class CreateEvent(CloudFormationCustomResourceCreateModel):
    pass


class UpdateEvent(CloudFormationCustomResourceUpdateModel):
    pass


class DeleteEvent(CloudFormationCustomResourceDeleteModel):
    pass


CustomResourceEvent = CreateEvent | UpdateEvent | DeleteEvent
_EVENT_ADAPTER: TypeAdapter[CustomResourceEvent] = TypeAdapter(CustomResourceEvent)


def parse_event(raw: dict[str, Any]) -> CustomResourceEvent:
    """Parse the envelope; properties are parsed per request type (Delete must stay lenient)."""
    return _EVENT_ADAPTER.validate_python(raw)


def parse_properties(raw: Any) -> CaRegistrationProperties:
    return CaRegistrationProperties.model_validate(raw or {})


def is_iot_certificate_id(physical_id: str) -> bool:
    return bool(IOT_CERT_ID.match(physical_id))


@dataclass(frozen=True)
class Outcome:
    """What on_create/on_update/on_delete decided; the handler turns it into the answer."""

    physical_resource_id: str
    data: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class RegisteredCa:
    certificate_id: str
    certificate_arn: str
    status: str = "ACTIVE"
