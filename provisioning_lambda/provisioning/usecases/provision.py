"""Provisioning, as plain Python: no boto3 here, only the ports the adapters implement.

Order of work for one request (independent calls run concurrently):

1. validate the device key (canonical, not low-order) or, in CSR mode, the device's CSR (its
   signature and key; its subject and extensions are ignored), and authorise the caller;
   refuse a blocked device, and with attestation on one that does not attest the key to be
   certified, or attests a key certified before (attestation.py); an attestation that verifies
   consumes its challenge, which must be the caller's, for this DSN, unused and in time
   (challenge.py);
2. take the device's lease in DynamoDB (ownership check and in-flight guard in one write), and
   first finish or undo whatever an earlier request for the device left (lease.py);
3. issue the certificate from ACM PCA  ||  create the thing in its group  ||  endpoint lookup;
4. write the intent to the row (the certificate's ACM PCA ARN, and the one it replaces)  ||
   fetch the certificate from ACM PCA once issued;
5. on rotation, set the previous certificate INACTIVE (reversible); a rotation of a device whose
   certificate has expired is a recovery (the device was offline past its notAfter): the same
   path, audited RECOVER instead of ISSUE;
6. register the certificate ACTIVE in IoT, then attach the shared policy || attach the thing;
7. read the allowlist once more (a block that landed meanwhile rolls the request back), then
   commit the device row naming the new certificate (the intent removed, the previous one
   written down as retiring), with its audit entry and the attested key recorded as certified,
   in one transaction;
8. retire the previous certificate (REVOKED in IoT, detached, revoked in ACM PCA);
9. encrypt the private key to the device: the server's ephemeral key and the shared secret
   exist only from here on, never during an AWS call. (CSR mode: there is no key to send.)

Both modes issue through the APIPassthrough client-auth template: the certificate's subject and
its SAN URI naming the DSN are the service's (crypto.device_names), never the CSR's.

A failure before 7 is rolled back within the time left; whatever the rollback cannot finish,
and whatever a request that died could not, stays in the row's intent for the device's next
request or the sweeper. No certificate stays ACTIVE without a row naming it, and no row names a
certificate that is not ACTIVE, once that has run.
"""

from __future__ import annotations

import base64

from provisioning.domain.attestation import AttestedKey, x25519_spki_der
from provisioning.domain.budget import Budget
from provisioning.domain.crypto import (
    CheckedCsr,
    check_device_public_key,
    load_device_csr,
    seal_private_key,
)
from provisioning.domain.errors import DependencyFailed, Forbidden, NotFound
from provisioning.domain.expiry import ExpiryWindow, device_expiry, has_expired
from provisioning.domain.models import (
    CertificateRef,
    CertificateStatus,
    CommitGuard,
    DeviceRecord,
    DeviceStatus,
    ProvisionRequest,
    ProvisionResult,
    Release,
    User,
)
from provisioning.domain.views import device_view
from provisioning.lifecycle.issuance import IssuancePlan, NewCertificate, issue
from provisioning.lifecycle.lease import DeviceTask, iso
from provisioning.observability import logger
from provisioning.ports import Services
from provisioning.usecases.attestation import authorise_device, judge, read_allowlist


def provision_device(
    request: ProvisionRequest,
    caller: User,
    services: Services,
    budget: Budget,
    request_id: str,
) -> ProvisionResult:
    require_member(caller)
    csr = load_device_csr(request.csr_pem) if request.csr_mode else None
    if csr is None:
        check_device_public_key(request.device_public_key)
    attested = AttestedKey(
        request.dsn,
        csr.public_key_der if csr else x25519_spki_der(request.device_public_key),
        request.attestation,
        request.attestation_challenge,
    )
    with DeviceTask.running(services, caller, request.dsn, budget, request_id) as task:
        certified_key = _authorise_while_claiming(task, attested)
        issued = issue(task, _plan(task, csr, certified_key))

    encrypted_private_key = server_public_key = ""
    if issued.key is not None:
        sealed = seal_private_key(
            issued.key, request.device_public_key, request.encryption, request.dsn
        )
        encrypted_private_key = sealed.encrypted_private_key
        server_public_key = _b64(sealed.server_public_key)
    return ProvisionResult(
        certificate_pem=issued.certificate_pem,
        certificate_chain_pem=issued.chain_pem,
        encrypted_private_key=encrypted_private_key,
        server_public_key=server_public_key,
        thing_name=task.thing_name,
        certificate_id=issued.record.certificate_id,
        not_after=issued.record.not_after,
        iot_endpoint=services.iot.data_endpoint,
        encryption=request.encryption,
    )


def _authorise_while_claiming(task: DeviceTask, attested: AttestedKey) -> str:
    """The allowlist's reads and the lease at once (they are independent), then the decision
    and the challenge spent (attestation.py). A refusal is the one the check would have given
    first, and gives the lease straight back. Returns the attested key's id, or ""."""
    services = task.services
    reading = services.executor.submit(read_allowlist, services, attested)
    try:
        task.claim()
    except BaseException:
        judge(services, attested, reading.result())  # the check's refusal first
        raise
    try:
        certified_key = authorise_device(
            services, task.caller.sub, attested, task.request_id, reading.result()
        )
    except BaseException:
        task.release(work_left=bool(task.row and task.row.retiring))
        raise
    logger.info(
        "device claimed",
        extra={
            "thing_name": task.thing_name,
            "rotation": _current(task) is not None,
            "recovery": _recovering(task),
        },
    )
    return certified_key


def _current(task: DeviceTask) -> CertificateRef | None:
    row = task.row
    return row.certificate if row is not None and row.status == DeviceStatus.ACTIVE else None


def _recovering(task: DeviceTask) -> bool:
    """The owner (or an administrator: the claim checked that) provisions again a device whose
    certificate has expired."""
    return task.row is not None and has_expired(task.row, task.now())


def _plan(task: DeviceTask, csr: CheckedCsr | None, certified_key: str) -> IssuancePlan:
    """Provisioning's issuance: the thing made if need be, a rotation's certificate set
    INACTIVE while the new one is registered and retired after the commit, and the commit
    guarded by the allowlist (not blocked meanwhile; the attested key certified once). A
    rotation of an expired certificate is a recovery: the same plan, audited RECOVER."""
    services, row, previous = task.services, task.row, _current(task)
    recovering = previous is not None and _recovering(task)
    retiring = (
        *(row.retiring if row else ()),
        *((previous,) if previous else ()),
        # A renewal in its grace period ends with the rotation: its certificate goes too.
        *((row.superseded,) if row is not None and row.superseded else ()),
    )
    guards: tuple[CommitGuard, ...] = ()
    allowlist = services.allowlist
    if allowlist is not None:
        guards = (allowlist.not_blocked_guard(task.dsn),)
        if certified_key:
            at = iso(task.now())
            guards += (allowlist.certified_key_guard(task.dsn, certified_key, at, task.request_id),)

    def record(new: NewCertificate) -> DeviceRecord:
        at = iso(new.at)
        return DeviceRecord(
            dsn=task.dsn,
            owner_sub=row.owner_sub if row and row.owner_sub else task.caller.sub,
            thing_name=task.thing_name,
            certificate_id=new.ref.certificate_id,
            certificate_arn=new.ref.certificate_arn,
            pca_certificate_arn=new.pca_certificate_arn,
            serial=new.ref.serial,
            not_before=iso(new.facts.not_before),
            not_after=iso(new.facts.not_after),
            key_algorithm=new.key_algorithm,
            status=DeviceStatus.ACTIVE,
            created_at=at,
            updated_at=at,
        )

    return IssuancePlan(
        record=record,
        audit="RECOVER" if recovering else "ISSUE",
        csr=csr,
        retiring=retiring,
        deactivate=previous,
        guards=guards,
        make_thing=True,
        side_work=(lambda: services.iot.data_endpoint,),
        audit_details={"expired_certificate_id": previous.certificate_id}
        if recovering and previous
        else {},
    )


def describe_device(dsn: str, caller: User, services: Services) -> dict[str, str | bool]:
    """The owner or an administrator reads a device; anyone else learns nothing, not even that
    it exists."""
    record = _visible_device(services, dsn, caller)
    settings = services.settings
    window = ExpiryWindow(settings.cert_validity_days, settings.expiry_warning_percent)
    return device_view(record, caller) | {
        "expiry": device_expiry(record, window, services.clock()).value
    }


def revoke_device(
    dsn: str, caller: User, services: Services, budget: Budget, request_id: str
) -> dict[str, str | bool]:
    """Revoke the device's certificates everywhere and end its session; the owner keeps the
    device.

    The row first stops naming any certificate and writes every one it held down as retiring
    (lease.py, ``end_access``: a request that dies from here on leaves the revocation to be
    finished, never undone); then they are made REVOKED in IoT, detached and revoked in ACM
    PCA, and the live session is ended. A 200 means IoT has them REVOKED. Revoking a revoked
    device is a no-op.
    """
    _visible_device(services, dsn, caller)
    with DeviceTask.running(services, caller, dsn, budget, request_id) as task:
        row = task.claim(must_exist=True)
        if row is None:  # the claim insists the row exists; this only narrows the type
            raise NotFound("No such device.")
        current = row.certificate
        if current is None:
            unfinished = bool(row.retiring)
            task.release(work_left=unfinished)
            if unfinished:  # an earlier revocation is not finished in IoT yet
                raise DependencyFailed("REVOKE_CERTIFICATE")
            return device_view(row, caller)

        at = iso(task.now())
        held = row.held_certificates
        task.end_access(
            lambda held: services.store.commit_revocation(dsn, request_id, at, held),
            Release.RELEASE,
            status=DeviceStatus.REVOKED,
            updated_at=at,
        )
        revoked = task.row
        assert revoked is not None  # end_access leaves the row it wrote
        if any(ref in revoked.retiring and not _is_revoked(task, ref) for ref in held):
            raise DependencyFailed("REVOKE_CERTIFICATE")
    return device_view(revoked, caller) | {"revokedCertificateId": current.certificate_id}


def _is_revoked(task: DeviceTask, ref: CertificateRef) -> bool:
    try:
        return task.services.iot.status(ref.certificate_id) in (CertificateStatus.REVOKED, "")
    except Exception:
        return False


def _visible_device(services: Services, dsn: str, caller: User) -> DeviceRecord:
    """A provisioned device the caller owns (or any, for an administrator); else 404."""
    require_member(caller)
    record = services.store.get(dsn)
    if record is None or not record.status or not record.visible_to(caller):
        raise NotFound("No such device.")
    return record


def require_member(caller: User) -> None:
    if not caller.may_provision:
        raise Forbidden(
            "Only members of the Members or Administrators group may manage devices.",
            "NOT_A_MEMBER",
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
