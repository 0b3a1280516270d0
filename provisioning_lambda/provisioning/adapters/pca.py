"""ACM Private CA: issue, fetch and revoke device certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from cryptography import x509

from provisioning.adapters.aws import aws_step, error_code
from provisioning.domain.errors import DependencyFailed
from provisioning.domain.models import CertificateNames, IssuedCertificate, issuer_of

# Client auth only, like EndEntityClientAuthCertificate/V1, plus API passthrough: the subject
# and SAN given with the request take priority over the CSR's, and no other CSR extension is
# copied (AWS Private CA's template order of operations).
CLIENT_AUTH_TEMPLATE = (
    "arn:{partition}:acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1"
)


def api_passthrough(names: CertificateNames) -> dict[str, Any]:
    subject = {
        key: value
        for key, value in (
            ("Country", names.country),
            ("Organization", names.organization),
            ("OrganizationalUnit", names.organizational_unit),
            ("CommonName", names.common_name),
        )
        if value
    }
    passthrough: dict[str, Any] = {"Subject": subject}
    if names.san_uri:
        passthrough["Extensions"] = {
            "SubjectAlternativeNames": [{"UniformResourceIdentifier": names.san_uri}]
        }
    return passthrough


class PrivateCa:
    def __init__(self, client: Any, ca_arn: str, signing_algorithm: str) -> None:
        self.client = client
        self._ca_arn = ca_arn
        self._signing_algorithm = signing_algorithm
        self._template_arn = CLIENT_AUTH_TEMPLATE.format(partition=ca_arn.split(":")[1])

    def issue(
        self,
        csr_pem: bytes,
        validity_days: int,
        idempotency_token: str,
        names: CertificateNames,
    ) -> str:
        """Ask for a client-auth certificate for the CSR's key, naming ``names`` whatever the
        CSR says; the token makes a retried call return the same one."""
        with aws_step("ISSUE_CERTIFICATE"):
            response = self.client.issue_certificate(
                CertificateAuthorityArn=self._ca_arn,
                Csr=csr_pem,
                SigningAlgorithm=self._signing_algorithm,
                TemplateArn=self._template_arn,
                ApiPassthrough=api_passthrough(names),
                Validity={"Value": validity_days, "Type": "DAYS"},
                IdempotencyToken=idempotency_token,
            )
        return str(response["CertificateArn"])

    def fetch(self, certificate_arn: str) -> IssuedCertificate | None:
        """The certificate and its chain, or None while ACM PCA is still issuing it; asked of
        the CA that issued it (named in its ARN), whichever CA issues today."""
        with aws_step("GET_CERTIFICATE"):
            try:
                response = self.client.get_certificate(
                    CertificateAuthorityArn=issuer_of(certificate_arn) or self._ca_arn,
                    CertificateArn=certificate_arn,
                )
            except ClientError as error:
                if error_code(error) == "RequestInProgressException":
                    return None
                raise
        return IssuedCertificate(
            certificate_pem=str(response["Certificate"]),
            chain_pem=str(response.get("CertificateChain", "")),
        )

    def revoke(self, issuer_arn: str, serial_hex: str, reason: str) -> None:
        """Revoke at the CA that issued the certificate (ACM PCA refuses any other); a record
        that names no issuer was written when only the configured CA issued."""
        with aws_step("REVOKE_CERTIFICATE"):
            try:
                self.client.revoke_certificate(
                    CertificateAuthorityArn=issuer_arn or self._ca_arn,
                    CertificateSerial=serial_hex,
                    RevocationReason=reason,
                )
            except ClientError as error:
                if error_code(error) != "RequestAlreadyProcessedException":
                    raise

    def valid_until(self) -> datetime:
        """The end of the issuing CA's own certificate: no certificate it signs may outlive it.
        A CA with no certificate yet (PENDING_CERTIFICATE) has none: the step fails."""
        with aws_step("DESCRIBE_CERTIFICATE_AUTHORITY"):
            ca = self.client.describe_certificate_authority(CertificateAuthorityArn=self._ca_arn)
        not_after = ca["CertificateAuthority"].get("NotAfter")
        if not isinstance(not_after, datetime):
            raise DependencyFailed("DESCRIBE_CERTIFICATE_AUTHORITY")
        return not_after.astimezone(UTC)

    def root_valid_until(self) -> datetime:
        """The end of the root's certificate, the last of the issuing CA's chain: every
        certificate under the root ends with it, and devices trust that root only. Read from
        the issuing CA, so no function needs a grant on the root."""
        with aws_step("GET_CERTIFICATE_AUTHORITY_CERTIFICATE"):
            answer = self.client.get_certificate_authority_certificate(
                CertificateAuthorityArn=self._ca_arn
            )
        try:
            chain = x509.load_pem_x509_certificates(str(answer["CertificateChain"]).encode())
        except (KeyError, ValueError) as error:  # no chain: not a CA under a root
            raise DependencyFailed("GET_CERTIFICATE_AUTHORITY_CERTIFICATE") from error
        return chain[-1].not_valid_after_utc
