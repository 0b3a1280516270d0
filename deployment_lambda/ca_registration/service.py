"""What the custom resource does on Create, Update and Delete. No boto3 here: adapters come in.

Rules (see docs/runbook-ca-rotation.md):
- Create registers the PCA's certificate with IoT (ACTIVE, auto-registration off) and answers
  PhysicalResourceId = the IoT CA certificate id.
- Update with the same CA keeps the physical id; another CA registers it and answers its new id,
  so CloudFormation deletes the old one in its cleanup phase. Nothing is deleted during Update.
- Delete is idempotent and never deletes a CA that still has ACTIVE device certificates unless
  ForceDelete is "true": the CA is set INACTIVE (devices keep connecting) and kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_registration.adapters import Adapters
from ca_registration.budget import Budget
from ca_registration.errors import (
    AlreadyRegistered,
    AuditFailed,
    CaRegistrationError,
    DeleteRefused,
    InvalidProperties,
    NotFound,
    PcaNotUsable,
    StillIssuing,
)
from ca_registration.models import (
    CaRegistrationProperties,
    Outcome,
    RegisteredCa,
    is_iot_certificate_id,
)
from ca_registration.observability import logger
from ca_registration.verification import verification_csr

PCA_WAITING_STATES = frozenset({"CREATING", "PENDING_CERTIFICATE"})
TAG_KEY = "CertificateAuthorityArn"
LIST_PAGE_SIZE = 250
MAX_POLL_DELAY_S = 2.0
# The only certificate template the function issues with (template.yaml's IAM condition on
# acm-pca:IssueCertificate names the same one): an end-entity certificate, never a CA, and
# server-auth only, so it can never authenticate as a client (a device) even while valid. IoT
# needs of it only the registration code as its CN and the CA's signature.
VERIFICATION_TEMPLATE = "template/EndEntityServerAuthCertificate/V1"
# Why the verification certificate is revoked once IoT has checked it (RevokeCertificate).
VERIFICATION_REVOCATION_REASON = "CESSATION_OF_OPERATION"


@dataclass
class Request:
    """Who asks, and the budget: passed to every step."""

    request_id: str
    stack_id: str
    deadline: Budget
    progress: Progress


@dataclass
class Progress:
    """What already happened in this invocation, read by the failure and timeout answers.

    A Create that fails after IoT registered the CA answers FAILED with that CA's id, so the
    Delete CloudFormation sends on rollback removes it instead of leaving it orphaned.
    """

    registered_id: str | None = None


# --- Create / Update ------------------------------------------------------------------------


def on_create(props: CaRegistrationProperties, request: Request, adapters: Adapters) -> Outcome:
    ca = register(props, request, adapters)
    return Outcome(ca.certificate_id, _data(ca))


def on_update(
    props: CaRegistrationProperties,
    old_props: CaRegistrationProperties | None,
    physical_id: str,
    request: Request,
    adapters: Adapters,
) -> Outcome:
    if old_props is not None and props.registers_same_ca(old_props):
        try:
            ca = adapters.iot.describe_ca(physical_id)
        except NotFound:
            # Deleted behind CloudFormation's back: register again (same certificate, same id).
            ca = register(props, request, adapters)
        return Outcome(ca.certificate_id, _data(ca))
    if (
        old_props is not None
        and props.certificate_authority_arn == old_props.certificate_authority_arn
    ):
        # The IoT id is the certificate's hash: the same CA cannot get a new id, and switching
        # mode in place would mean deleting during Update. Refuse; nothing has changed.
        raise InvalidProperties(
            "CertificateMode cannot change for an already registered CA; "
            "rotate to a new Private CA instead (docs/runbook-ca-rotation.md)"
        )
    ca = register(props, request, adapters)
    # A new physical id: CloudFormation deletes the old CA (old properties) during cleanup.
    return Outcome(ca.certificate_id, _data(ca))


def register(props: CaRegistrationProperties, request: Request, adapters: Adapters) -> RegisteredCa:
    ca_arn = props.certificate_authority_arn
    signing_algorithm = wait_for_active_pca(ca_arn, request, adapters)
    ca_pem = adapters.pca.ca_certificate(ca_arn)
    expected_id = certificate_id_of(ca_pem)
    verification_pem: str | None = None
    if props.certificate_mode == "DEFAULT":
        verification_pem = issue_verification_certificate(
            ca_arn, expected_id, signing_algorithm, request, adapters
        )
    request.deadline.check("before registering the CA with AWS IoT")
    try:
        ca = adapters.iot.register_ca(
            ca_pem, verification_pem, props.certificate_mode, {TAG_KEY: ca_arn}
        )
        what = f"registered {ca_arn} mode={props.certificate_mode}"
    except AlreadyRegistered as already:
        ca = _existing_registration(already, expected_id, adapters)
        what = f"already registered {ca_arn} mode={props.certificate_mode}"
    request.progress.registered_id = ca.certificate_id
    logger.info("CA registered with AWS IoT", extra={"ca_certificate_id": ca.certificate_id})
    _audit(adapters, ca.certificate_id, "REGISTER_CA", request, what)
    if verification_pem is not None:
        revoke_verification_certificate(
            ca_arn, ca.certificate_id, verification_pem, request, adapters
        )
    return ca


def _existing_registration(
    already: AlreadyRegistered, expected_id: str, adapters: Adapters
) -> RegisteredCa:
    # IoT names the certificate in ResourceAlreadyExistsException; if it does not, the id of an
    # IoT certificate is the SHA-256 of its DER encoding.
    certificate_id = already.certificate_id or expected_id
    ca = adapters.iot.describe_ca(certificate_id)
    if ca.status != "ACTIVE":
        # Kept INACTIVE by an earlier Delete: Create means "registered and ACTIVE".
        adapters.iot.set_ca_status(ca.certificate_id, "ACTIVE")
        ca = RegisteredCa(ca.certificate_id, ca.certificate_arn, "ACTIVE")
    return ca


def wait_for_active_pca(ca_arn: str, request: Request, adapters: Adapters) -> str:
    """Poll DescribeCertificateAuthority until ACTIVE, within the budget; the signing algorithm."""
    delay = 0.5
    while True:
        status, signing_algorithm = adapters.pca.describe(ca_arn)
        if status == "ACTIVE":
            return signing_algorithm
        if status not in PCA_WAITING_STATES:
            raise PcaNotUsable(f"the Private CA is {status}, not ACTIVE")
        request.deadline.sleep(delay, f"waiting for the Private CA to be ACTIVE (last: {status})")
        delay = min(delay * 2, MAX_POLL_DELAY_S * 2)


def issue_verification_certificate(
    ca_arn: str, iot_ca_id: str, signing_algorithm: str, request: Request, adapters: Adapters
) -> str:
    code = adapters.iot.registration_code()
    csr = verification_csr(code)
    partition = ca_arn.split(":")[1]
    template = f"arn:{partition}:acm-pca:::{VERIFICATION_TEMPLATE}"
    # Same request -> same token: a retried invocation gets the same certificate back.
    token = hashlib.sha256(f"{request.request_id}|{ca_arn}".encode()).hexdigest()[:32]
    certificate_arn = adapters.pca.issue(ca_arn, csr, signing_algorithm, template, token)
    pem = _poll_certificate(ca_arn, certificate_arn, request, adapters)
    # Keyed on the IoT id the CA certificate will get (SHA-256 of its DER), like the others.
    _audit(adapters, iot_ca_id, "ISSUE", request, f"verification certificate {certificate_arn}")
    return pem


def revoke_verification_certificate(
    ca_arn: str, iot_ca_id: str, verification_pem: str, request: Request, adapters: Adapters
) -> None:
    """Revoke the verification certificate in ACM PCA once IoT has checked it.

    Best effort: its private key was thrown away when it was issued (it never left
    ``verification_csr``) and it is server-auth only, so it cannot authenticate anyone; a
    failed revocation is logged and leaves the registration standing instead of rolling it
    back. A retried invocation revokes again (ACM PCA's "already processed" counts as done).
    """
    serial = serial_of(verification_pem)
    try:
        adapters.pca.revoke(ca_arn, serial, VERIFICATION_REVOCATION_REASON)
    except Exception:
        logger.warning(
            "verification certificate not revoked", extra={"ca_certificate_id": iot_ca_id}
        )
        return
    _audit(adapters, iot_ca_id, "REVOKE", request, f"verification certificate serial {serial}")


def _poll_certificate(
    ca_arn: str, certificate_arn: str, request: Request, adapters: Adapters
) -> str:
    delay = 0.05  # issuance usually takes well under a second
    while True:
        try:
            return adapters.pca.get_certificate(ca_arn, certificate_arn)
        except StillIssuing:
            request.deadline.sleep(delay, "waiting for the verification certificate")
            delay = min(delay * 2, MAX_POLL_DELAY_S)


# --- Delete ---------------------------------------------------------------------------------


def on_delete(
    props: CaRegistrationProperties | None, physical_id: str, request: Request, adapters: Adapters
) -> Outcome:
    if not is_iot_certificate_id(physical_id):
        # A failed Create's placeholder: nothing was registered under it.
        return Outcome(physical_id, reason="nothing to delete (no CA was registered)")
    try:
        adapters.iot.describe_ca(physical_id)
    except NotFound:
        return Outcome(physical_id, reason="CA certificate already gone from AWS IoT")

    force = props.force_delete if props is not None else False
    # Without ForceDelete one ACTIVE device certificate is enough to keep the CA.
    active = 0 if force else count_active_device_certificates(physical_id, request, adapters, 1)
    try:
        adapters.iot.set_ca_status(physical_id, "INACTIVE")
    except NotFound:
        return Outcome(physical_id, reason="CA certificate already gone from AWS IoT")
    _audit_on_delete(adapters, physical_id, "DEACTIVATE_CA", request, "set INACTIVE")

    if active and not force:
        reason = (
            "CA kept registered and set INACTIVE: it still has ACTIVE device certificates, "
            "which keep connecting; set ForceDelete to 'true' or follow "
            "docs/runbook-ca-rotation.md to remove it"
        )
        logger.warning("CA kept on delete", extra={"ca_certificate_id": physical_id})
        return Outcome(physical_id, reason=reason)

    try:
        adapters.iot.delete_ca(physical_id)
    except NotFound:
        return Outcome(physical_id, reason="CA certificate already gone from AWS IoT")
    except DeleteRefused as refused:
        logger.warning("AWS IoT refused the CA delete", extra={"ca_certificate_id": physical_id})
        return Outcome(physical_id, reason=f"CA kept registered and set INACTIVE: {refused}")
    _audit_on_delete(adapters, physical_id, "DELETE_CA", request, f"deleted force={force}")
    return Outcome(physical_id, reason="CA certificate deactivated and deleted from AWS IoT")


def count_active_device_certificates(
    ca_id: str, request: Request, adapters: Adapters, stop_at: int = 0
) -> int:
    """ACTIVE device certificates signed by the CA (all pages; stop early at ``stop_at`` > 0)."""
    active = 0
    for statuses in adapters.iot.certificate_statuses_by_ca(ca_id, LIST_PAGE_SIZE):
        active += sum(1 for status in statuses if status == "ACTIVE")
        if stop_at and active >= stop_at:
            break
        request.deadline.check("listing the CA's device certificates")
    return active


# --- helpers --------------------------------------------------------------------------------


def serial_of(pem: str) -> str:
    """The certificate's serial as ACM PCA names it: colon-separated hex octets."""
    serial = f"{x509.load_pem_x509_certificate(pem.encode()).serial_number:x}"
    serial = serial.rjust(len(serial) + len(serial) % 2, "0")
    return ":".join(serial[i : i + 2] for i in range(0, len(serial), 2))


def certificate_id_of(pem: str) -> str:
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _data(ca: RegisteredCa) -> dict[str, str]:
    return {"CertificateId": ca.certificate_id, "CertificateArn": ca.certificate_arn}


def _audit(adapters: Adapters, ca_id: str, event: str, request: Request, what: str) -> None:
    """Create/Update fail closed: nothing enters service unrecorded."""
    adapters.audit.record(ca_id, event, request.request_id, request.stack_id, what)


def _audit_on_delete(
    adapters: Adapters, ca_id: str, event: str, request: Request, what: str
) -> None:
    """Delete never fails on audit: a stack must stay deletable. The miss is logged."""
    try:
        adapters.audit.record(ca_id, event, request.request_id, request.stack_id, what)
    except AuditFailed:
        logger.exception("audit record lost", extra={"audit_event": event})


__all__ = [
    "CaRegistrationError",
    "Progress",
    "Request",
    "on_create",
    "on_delete",
    "on_update",
]
