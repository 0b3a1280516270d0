"""Bridges for the places where moto differs from AWS in ways the product relies on.

Applied by the offline stack (before its moto server starts) and by the test session, never by
Lambda code. Each bridge names the gap it closes.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

CLIENT_AUTH_TEMPLATE = "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1"
_applied = False


def apply() -> None:
    """Apply every bridge below, once per process."""
    global _applied
    if _applied:
        return
    _client_auth_template()
    _atomic_dynamodb_requests()
    _revoked_is_terminal()
    _certificate_id_is_der_sha256()
    _applied = True


def _certificate_id_is_der_sha256() -> None:
    """Gap (moto 5.2): moto names an IoT certificate by the SHA-256 of its PEM text unless
    its "iot.use_valid_cert" option is on; AWS names it by the SHA-256 of its DER. The
    provisioning function computes the id before registering (to write its intent first), so
    the id must be AWS's.
    """
    from moto.iot.models import FakeCertificate

    FakeCertificate.compute_cert_id = FakeCertificate.compute_der_cert_id  # type: ignore[method-assign]


def _revoked_is_terminal() -> None:
    """Gap (moto 5.2): moto's IoT UpdateCertificate sets any status on any certificate. In AWS a
    REVOKED certificate cannot change status again (CertificateStateException), which matters
    to rotation and revocation when an operator has already revoked a certificate by hand.
    """
    from moto.iot.exceptions import CertificateStateException
    from moto.iot.models import IoTBackend

    original = IoTBackend.update_certificate

    def update_certificate(self: Any, certificate_id: str, new_status: str) -> None:
        certificate = self.describe_certificate(certificate_id)
        if certificate.status == "REVOKED" and new_status != "REVOKED":
            raise CertificateStateException(
                "A revoked certificate cannot change status.", certificate_id
            )
        original(self, certificate_id, new_status)

    IoTBackend.update_certificate = update_certificate  # type: ignore[method-assign]


def _atomic_dynamodb_requests() -> None:
    """Gap (moto 5.2): moto's DynamoDB reads the old item (for ReturnValues and conditions),
    then checks the condition and writes, with no lock, so two concurrent conditional writes
    can both pass or return a stale old item. DynamoDB makes each conditional write and each
    transaction atomic, and the provisioning lease relies on that. One lock around the whole
    handling of each item request restores it (moto's server answers on several threads).
    """
    import functools
    import threading

    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "get_item",
        "batch_get_item",
        "batch_write_item",
        "transact_get_items",
        "transact_write_items",
        "execute_statement",
        "execute_transaction",
    ):
        original = getattr(DynamoHandler, name)

        @functools.wraps(original)
        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        setattr(DynamoHandler, name, locked)


def _client_auth_template() -> None:
    """Patch moto's ACM PCA so EndEntityClientAuthCertificate/V1 means what it does in AWS.

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
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ]

    CertificateAuthority._x509_extensions = extensions  # type: ignore[method-assign]


def _ca_public_key(ca: Any) -> Any:
    certificate = ca.certificate
    return certificate.public_key() if certificate is not None else ca.key.public_key()
