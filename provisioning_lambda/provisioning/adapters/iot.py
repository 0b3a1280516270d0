"""AWS IoT Core: things, certificates, the shared policy and the data endpoint."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from provisioning.adapters.aws import aws_step, error_code
from provisioning.domain.models import RegisteredCertificate


class IotRegistry:
    def __init__(
        self, client: Any, policy_name: str, thing_group: str, ca_mode: str, arn_prefix: str
    ) -> None:
        """``arn_prefix``: ``arn:<partition>:iot:<region>:<account>``, where certificates live."""
        self.client = client
        self._policy_name = policy_name
        self._thing_group = thing_group
        self._ca_mode = ca_mode
        self._arn_prefix = arn_prefix

    def certificate_arn(self, certificate_id: str) -> str:
        return f"{self._arn_prefix}:cert/{certificate_id}"

    def status(self, certificate_id: str) -> str:
        """ACTIVE, INACTIVE, REVOKED... or "" for a certificate IoT does not know."""
        with aws_step("READ_CERTIFICATE"):
            try:
                response = self.client.describe_certificate(certificateId=certificate_id)
            except ClientError as error:
                if error_code(error) == "ResourceNotFoundException":
                    return ""
                raise
        return str(response["certificateDescription"]["status"])

    def ensure_thing(self, thing_name: str) -> None:
        """Create the thing (if new) and put it in the fleet's thing group; safe to repeat."""
        with aws_step("CREATE_THING"):
            try:
                self.client.create_thing(thingName=thing_name)
            except ClientError as error:
                # AWS answers an identical CreateThing with success; moto raises. Either way
                # the thing exists, which is all this step needs.
                if error_code(error) != "ResourceAlreadyExistsException":
                    raise
            self.client.add_thing_to_thing_group(
                thingGroupName=self._thing_group, thingName=thing_name
            )

    def register(self, certificate_pem: str, ca_pem: str) -> RegisteredCertificate:
        """Register ACTIVE; an already registered certificate (a retry) counts as success."""
        with aws_step("REGISTER_CERTIFICATE"):
            try:
                if self._ca_mode == "SNI_ONLY":
                    response = self.client.register_certificate_without_ca(
                        certificatePem=certificate_pem, status="ACTIVE"
                    )
                else:
                    response = self.client.register_certificate(
                        certificatePem=certificate_pem,
                        caCertificatePem=ca_pem,
                        status="ACTIVE",
                    )
            except ClientError as error:
                if error_code(error) != "ResourceAlreadyExistsException":
                    raise
                response = error.response
        return RegisteredCertificate(
            certificate_id=str(
                response["certificateId" if "certificateId" in response else "resourceId"]
            ),
            certificate_arn=str(
                response["certificateArn" if "certificateArn" in response else "resourceArn"]
            ),
        )

    def attach_policy(self, certificate_arn: str) -> None:
        with aws_step("ATTACH_POLICY"):
            self.client.attach_policy(policyName=self._policy_name, target=certificate_arn)

    def attach_thing(self, thing_name: str, certificate_arn: str) -> None:
        with aws_step("ATTACH_THING_PRINCIPAL"):
            self.client.attach_thing_principal(thingName=thing_name, principal=certificate_arn)

    def set_status(self, certificate_id: str, status: str) -> None:
        step = "DEACTIVATE_CERTIFICATE" if status != "ACTIVE" else "ACTIVATE_CERTIFICATE"
        with aws_step(step):
            try:
                self.client.update_certificate(certificateId=certificate_id, newStatus=status)
            except ClientError as error:
                # The goal of INACTIVE or REVOKED is "no longer accepted": a certificate that is
                # already REVOKED (terminal, e.g. by an operator) or deleted has reached it.
                settled = error_code(error) in (
                    "CertificateStateException",
                    "ResourceNotFoundException",
                )
                if status == "ACTIVE" or not settled:
                    raise

    def detach(self, thing_name: str, certificate_arn: str) -> None:
        """Detach thing and policy; a principal that is already gone counts as detached."""
        with aws_step("DETACH_CERTIFICATE"):
            for fn, kwargs in (
                (
                    self.client.detach_thing_principal,
                    {"thingName": thing_name, "principal": certificate_arn},
                ),
                (
                    self.client.detach_policy,
                    {"policyName": self._policy_name, "target": certificate_arn},
                ),
            ):
                try:
                    fn(**kwargs)
                except ClientError as error:
                    if error_code(error) != "ResourceNotFoundException":
                        raise

    def remove_from_group(self, thing_name: str) -> None:
        """Take the thing out of the fleet's thing group; safe to repeat (a thing or group
        that is gone counts as done)."""
        with aws_step("UNGROUP_THING"):
            try:
                self.client.remove_thing_from_thing_group(
                    thingGroupName=self._thing_group, thingName=thing_name
                )
            except ClientError as error:
                if error_code(error) != "ResourceNotFoundException":
                    raise

    @cached_property
    def data_endpoint(self) -> str:
        """The ATS data endpoint does not change: look it up once per container."""
        with aws_step("DESCRIBE_ENDPOINT"):
            response = self.client.describe_endpoint(endpointType="iot:Data-ATS")
        return str(response["endpointAddress"])
