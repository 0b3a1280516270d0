"""Bridges for the places where moto differs from AWS in ways the product relies on.

Applied by the offline stack (before its moto server starts) and by the test session, never by
Lambda code. Each bridge names the gap it closes.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

CLIENT_AUTH_TEMPLATE = "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1"
_applied = False


def apply() -> None:
    """Patch moto's ACM PCA so EndEntityClientAuthCertificate/V1 means what it does in AWS.

    Idempotent.

    Gap (moto 5.2): moto knows only the RootCACertificate and EndEntityCertificate templates and
    issues a certificate with no extensions at all for any other template ARN. AWS's
    EndEntityClientAuthCertificate/V1 gives an end-entity certificate with digitalSignature
    key usage and the clientAuth extended key usage, which the device certificate needs for
    mutual TLS.
    """
    from moto.acmpca.models import CertificateAuthority

    original = CertificateAuthority._x509_extensions

    def extensions(
        self: Any, csr: x509.CertificateSigningRequest, template_arn: str | None
    ) -> list[tuple[x509.ExtensionType, bool]]:
        if template_arn != CLIENT_AUTH_TEMPLATE:
            return list(original(self, csr, template_arn))
        return [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            # The CA certificate's key, not self.key: moto decrypts and re-validates its RSA
            # key on every access, tens of milliseconds each.
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(_ca_public_key(self)), False),
            (x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ]

    CertificateAuthority._x509_extensions = extensions  # type: ignore[method-assign]


def _ca_public_key(ca: Any) -> Any:
    certificate = ca.certificate
    return certificate.public_key() if certificate is not None else ca.key.public_key()
