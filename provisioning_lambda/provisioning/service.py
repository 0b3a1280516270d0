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
5. on rotation, set the previous certificate INACTIVE (reversible);
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
import hashlib
from concurrent import futures
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from .attestation import AttestedKey, authorise_device, still_allowed, x25519_spki_der
from .budget import ATTEMPT_SECONDS, FORWARD_RESERVE_SECONDS, Budget
from .crypto import (
    CertificateFacts,
    CheckedCsr,
    DeviceKey,
    build_csr,
    certificate_facts,
    check_device_public_key,
    device_names,
    generate_device_key,
    load_device_csr,
    seal_private_key,
)
from .errors import DependencyFailed, Forbidden, LeaseLost, NotFound, OutcomeUnknown, OutOfTime
from .expiry import ExpiryWindow, device_expiry
from .lease import DeviceTask, iso
from .models import (
    Caller,
    CertificateRef,
    DeviceRecord,
    Intent,
    IssuedCertificate,
    ProvisionRequest,
    ProvisionResult,
    Release,
)
from .observability import logger
from .ports import Services

FIRST_POLL_DELAY = 0.02
MAX_POLL_DELAY = 1.0


def provision_device(
    request: ProvisionRequest,
    caller: Caller,
    services: Services,
    budget: Budget,
    request_id: str,
) -> ProvisionResult:
    _require_group(caller)
    csr = load_device_csr(request.csr_pem) if request.csr_mode else None
    if csr is None:
        check_device_public_key(request.device_public_key)
    with services.budgets.running(budget):
        certified_key = authorise_device(
            services,
            caller.sub,
            AttestedKey(
                request.dsn,
                csr.public_key_der if csr else x25519_spki_der(request.device_public_key),
                request.attestation,
                request.attestation_challenge,
            ),
            request_id,
        )
        task = DeviceTask(services, caller, request.dsn, budget, request_id)
        task.claim()
        issuance = _Issuance(task, request, csr, certified_key)
        logger.info(
            "device claimed",
            extra={"thing_name": task.thing_name, "rotation": issuance.previous is not None},
        )
        try:
            record, certificate_pem = issuance.run()
        except OutcomeUnknown:
            # The commit may have applied: the row decides, not this request. Only the lease
            # is given back, so the next request can recover at once.
            task.release(work_left=True)
            raise
        except LeaseLost:
            issuance.abandon()
            raise
        except BaseException:
            issuance.roll_back()
            raise
        issuance.retire_previous()

    encrypted_private_key = server_public_key = ""
    if issuance.key is not None:
        sealed = seal_private_key(
            issuance.key, request.device_public_key, request.encryption, request.dsn
        )
        encrypted_private_key = sealed.encrypted_private_key
        server_public_key = _b64(sealed.server_public_key)
    return ProvisionResult(
        certificate_pem=certificate_pem,
        encrypted_private_key=encrypted_private_key,
        server_public_key=server_public_key,
        thing_name=task.thing_name,
        certificate_id=record.certificate_id,
        not_after=record.not_after,
        iot_endpoint=services.iot.data_endpoint,
        encryption=request.encryption,
    )


def describe_device(dsn: str, caller: Caller, services: Services) -> dict[str, str | bool]:
    """The owner or an administrator reads a device; anyone else learns nothing, not even that
    it exists."""
    record = _visible_device(services, dsn, caller)
    settings = services.settings
    window = ExpiryWindow(settings.cert_validity_days, settings.expiry_warning_percent)
    return record.to_response(caller) | {
        "expiry": device_expiry(record, window, services.clock()).value
    }


def revoke_device(
    dsn: str, caller: Caller, services: Services, budget: Budget, request_id: str
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
    with services.budgets.running(budget):
        task = DeviceTask(services, caller, dsn, budget, request_id)
        row = task.claim(must_exist=True)
        if row is None:  # the claim insists the row exists; this only narrows the type
            raise NotFound("No such device.")
        current = row.certificate
        if current is None:
            unfinished = bool(row.retiring)
            task.release(work_left=unfinished)
            if unfinished:  # an earlier revocation is not finished in IoT yet
                raise DependencyFailed("REVOKE_CERTIFICATE")
            return row.to_response(caller)

        at = iso(task.now())
        held = row.held_certificates
        task.end_access(
            lambda held: services.store.commit_revocation(dsn, request_id, at, held),
            Release.RELEASE,
            status="REVOKED",
            updated_at=at,
        )
        revoked = task.row
        assert revoked is not None  # end_access leaves the row it wrote
        if any(ref in revoked.retiring and not _is_revoked(task, ref) for ref in held):
            raise DependencyFailed("REVOKE_CERTIFICATE")
    return revoked.to_response(caller) | {"revokedCertificateId": current.certificate_id}


def _is_revoked(task: DeviceTask, ref: CertificateRef) -> bool:
    try:
        return task.services.iot.status(ref.certificate_id) in ("REVOKED", "")
    except Exception:
        return False


class _Issuance:
    """Steps 3-8 of one provisioning request, and its exact rollback."""

    def __init__(
        self,
        task: DeviceTask,
        request: ProvisionRequest,
        csr: CheckedCsr | None = None,
        certified_key: str = "",
    ) -> None:
        self.task = task
        self.request = request
        self.csr = csr
        self.certified_key = certified_key  # attestation.certified_key_id, or ""
        self.key: DeviceKey | None = None
        row = task.row
        self.previous = row.certificate if row is not None and row.status == "ACTIVE" else None
        # Certificates the row must keep as retiring after the commit: what recovery left, and
        # on rotation the previous certificate.
        self.retiring = (
            *(row.retiring if row else ()),
            *((self.previous,) if self.previous else ()),
            # A renewal in its grace period ends with the rotation: its certificate goes too.
            *((row.superseded,) if row is not None and row.superseded else ()),
        )
        self.intent: Intent | None = None
        self.in_flight: list[Future[Any]] = []  # what a rollback must wait for first

    def run(self) -> tuple[DeviceRecord, str]:
        task, services = self.task, self.task.services
        settings, pca, iot, run = services.settings, services.pca, services.iot, services.executor
        budget, thing_name = task.budget, task.thing_name
        names = device_names(
            thing_name, task.dsn, settings.subject_o, settings.subject_ou, settings.subject_c
        )
        if self.csr is not None:
            csr, key_algorithm = self.csr.pem, self.csr.key_algorithm
        else:
            self.key = generate_device_key(settings.device_key_algorithm)
            key_algorithm = settings.device_key_algorithm
            csr = build_csr(
                self.key,
                thing_name,
                task.dsn,
                settings.subject_o,
                settings.subject_ou,
                settings.subject_c,
            )
        side_work: list[Future[Any]] = [
            run.submit(iot.ensure_thing, thing_name),
            run.submit(lambda: iot.data_endpoint),
        ]
        self.in_flight += side_work

        budget.require("ISSUE_CERTIFICATE")
        token = hashlib.sha256(f"{task.request_id}:{task.dsn}".encode()).hexdigest()[:36]
        pca_certificate_arn = pca.issue(csr, settings.cert_validity_days, token, names)
        issued, facts, new = self._record_intent_and_fetch(
            Intent(
                request_id=task.request_id,
                pca_certificate_arn=pca_certificate_arn,
                previous_certificate_id=self.previous.certificate_id if self.previous else "",
            )
        )

        if self.previous is not None:
            # Before the new one is registered: there is never a moment with two ACTIVE
            # certificates, and INACTIVE can still be undone if the rotation fails.
            budget.require("DEACTIVATE_CERTIFICATE")
            iot.set_status(self.previous.certificate_id, "INACTIVE")

        budget.require("REGISTER_CERTIFICATE")
        registered = iot.register(issued.certificate_pem, issued.chain_pem)
        if registered.certificate_id != new.certificate_id:
            raise DependencyFailed("REGISTER_CERTIFICATE")  # IoT named it otherwise: never
        _wait_all(side_work)
        _wait_all(
            [
                run.submit(iot.attach_policy, new.certificate_arn),
                run.submit(iot.attach_thing, thing_name, new.certificate_arn),
            ]
        )

        at = iso(task.now())
        row = task.row
        record = DeviceRecord(
            dsn=task.dsn,
            owner_sub=row.owner_sub if row and row.owner_sub else task.caller.sub,
            thing_name=thing_name,
            certificate_id=new.certificate_id,
            certificate_arn=new.certificate_arn,
            pca_certificate_arn=pca_certificate_arn,
            serial=new.serial,
            not_before=iso(facts.not_before),
            not_after=iso(facts.not_after),
            key_algorithm=key_algorithm,
            status="ACTIVE",
            created_at=at,
            updated_at=at,
        )
        # A block that landed while this request worked: roll back rather than commit (the
        # block, meanwhile, answers 409 while our lease is held: only its 200 means revoked).
        budget.require("READ_ALLOWLIST", 2 * ATTEMPT_SECONDS)  # the read, then the commit
        still_allowed(services, task.dsn)
        budget.require("STORE_DEVICE", ATTEMPT_SECONDS)
        services.store.commit(
            record,
            task.request_id,
            task.audit(
                "ISSUE",
                new,
                pca_certificate_arn=pca_certificate_arn,
                thing_name=thing_name,
            ),
            retiring=self.retiring,
            also_put=services.allowlist.certified_key_put(
                task.dsn, self.certified_key, at, task.request_id
            )
            if self.certified_key and services.allowlist is not None
            else None,
        )
        task.row = replace(record, retiring=self.retiring)
        return record, issued.certificate_pem

    def _record_intent_and_fetch(
        self, intent: Intent
    ) -> tuple[IssuedCertificate, CertificateFacts, CertificateRef]:
        """Write the intent while ACM PCA finishes the certificate (whoever resolves the intent
        can fetch it there; from here on, a rollback or a recovery revokes it), then the
        certificate, its facts and its reference, once both are done."""
        services = self.task.services
        self.intent = intent
        intent_written = services.executor.submit(
            services.store.record_intent, self.task.dsn, self.task.request_id, intent
        )
        self.in_flight.append(intent_written)
        issued = self._wait_for_certificate(intent.pca_certificate_arn)
        facts = certificate_facts(issued.certificate_pem)
        new = CertificateRef(
            facts.iot_certificate_id,
            services.iot.certificate_arn(facts.iot_certificate_id),
            facts.serial_hex,
        )
        self.intent = replace(intent, certificate=new)
        _wait_all([intent_written])
        return issued, facts, new

    def _wait_for_certificate(self, certificate_arn: str) -> IssuedCertificate:
        """Poll with a short, growing delay; give up while there is still time to roll back."""
        services, budget = self.task.services, self.task.budget
        delay = FIRST_POLL_DELAY
        while True:
            if not budget.allows(delay + FORWARD_RESERVE_SECONDS):
                raise OutOfTime("GET_CERTIFICATE")
            services.sleep(delay)
            issued = services.pca.fetch(certificate_arn)
            if issued is not None:
                return issued
            delay = min(delay * 2, MAX_POLL_DELAY)

    def roll_back(self) -> None:
        """Undo this request's changes within the time left; never raises, so the original
        error is what the caller sees. What is not undone stays in the intent."""
        task = self.task
        # Steps still running (the intent's write among them) end first: the clients bound
        # each to the budget, and a rollback that raced them could release the lease before
        # the intent landed.
        futures.wait(self.in_flight)
        if self.intent is None:
            task.release()
            return
        base = task.row or DeviceRecord(dsn=task.dsn, owner_sub=task.caller.sub)
        task.row = replace(base, intent=self.intent)
        task.recover(Release.DELETE)

    def abandon(self) -> None:
        """This request outlived its lease and another took the device over: undo only what is
        this request's alone (its new certificate), never the row or the certificate it names,
        which the other request may be changing right now."""
        task = self.task
        futures.wait(self.in_flight)
        if self.intent is None:
            return
        new = self.intent.certificate or task.issued(self.intent.pca_certificate_arn)
        if new is not None and task.revoke_everywhere(new, "rolled back"):
            task.write_audits()

    def retire_previous(self) -> None:
        """Revoke what the commit wrote down as retiring (the lease is still ours)."""
        if not self.retiring:
            return
        if self.task.recover(Release.RELEASE).unfinished:
            logger.warning("retiring certificates left to the sweeper")


def _visible_device(services: Services, dsn: str, caller: Caller) -> DeviceRecord:
    """A provisioned device the caller owns (or any, for an administrator); else 404."""
    _require_group(caller)
    record = services.store.get(dsn)
    if record is None or not record.status or not record.visible_to(caller):
        raise NotFound("No such device.")
    return record


def _require_group(caller: Caller) -> None:
    if not caller.may_provision:
        raise Forbidden(
            "Only members of the Members or Administrators group may manage devices.",
            "NOT_A_MEMBER",
        )


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait for every future, then raise the first failure (nothing is left running)."""
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
