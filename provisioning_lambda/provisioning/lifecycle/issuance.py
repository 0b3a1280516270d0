"""The certificate issuance engine: make a new certificate the device's, crash-safely.

Provisioning and renewal compose it (and so will recovery after expiry and CA rollover); what
differs between them is data in an ``IssuancePlan``, never a subclass: where the key comes from,
whether the thing must be made, the certificate set INACTIVE while the new one is registered,
what the commit writes down as retiring, the record it writes, the audit event, and the guards
the commit's transaction checks.

One run, under the device's lease (lease.py), with the calls on the critical path marked ``*``;
every other call overlaps them:

1. ``*`` IssueCertificate from ACM PCA (APIPassthrough: the service's subject and DSN SAN)
   || CreateThing and AddThingToThingGroup, when the plan makes the thing || the plan's
   lookups (provisioning: IoT's endpoint, on a container's first request);
2. ``*`` GetCertificate, polled with a short, growing delay || the intent written to the row
   (UpdateItem): from here on, a rollback or a recovery revokes the new certificate;
3. on rotation, the certificate being replaced set INACTIVE (reversible; off the common path);
4. ``*`` RegisterCertificate, ACTIVE in IoT;
5. ``*`` AttachPolicy || AttachThingPrincipal;
6. ``*`` the commit, one TransactWriteItems: the row names the new certificate, the intent goes,
   what is retiring is written down, the audit entry, and the plan's guards (the allowlist entry
   is not BLOCKED; an attested key is recorded as certified only once), all or nothing;
7. what is retiring is retired (REVOKED in IoT, detached, revoked at its issuer).

With the lease taken first (claim), that is the design's six: claim, issue, get, register,
attach, commit.

``issue`` owns the outcomes of a run: a commit whose answer was lost gives the lease back with
work left (the row decides, not the request); a lease lost to another request undoes only this
request's own certificate; anything else is rolled back exactly, within the time left, and what
the rollback cannot finish stays in the intent for the next request or the sweeper. So no
certificate stays ACTIVE without a row naming it, and no row names a certificate that is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from provisioning.domain.budget import ATTEMPT_SECONDS, FORWARD_RESERVE_SECONDS
from provisioning.domain.crypto import (
    CertificateFacts,
    CheckedCsr,
    DeviceKey,
    build_csr,
    certificate_facts,
    device_names,
    generate_device_key,
    issuer_certificate,
)
from provisioning.domain.errors import DependencyFailed, LeaseLost, OutcomeUnknown, OutOfTime
from provisioning.domain.models import (
    CertificateRef,
    CertificateStatus,
    CommitGuard,
    DeviceRecord,
    Intent,
    IssuedCertificate,
    Release,
)
from provisioning.lifecycle.lease import DeviceTask
from provisioning.observability import logger

FIRST_POLL_DELAY = 0.02
MAX_POLL_DELAY = 1.0


@dataclass(frozen=True)
class NewCertificate:
    """What the run knows of the certificate it issued, for the plan's record."""

    ref: CertificateRef
    facts: CertificateFacts
    pca_certificate_arn: str
    key_algorithm: str
    at: datetime


@dataclass(frozen=True)
class IssuancePlan:
    """What one kind of issuance needs of the engine.

    ``csr``: the device's CSR (CSR mode, renewal); None makes the key here (publicKey mode),
    and the run's ``key`` is then the device's private key, to be sealed to it.
    ``record``: the row the commit writes, from the new certificate.
    ``audit``: the commit's audit event and its details.
    ``retiring``: written down at the commit, retired right after it.
    ``deactivate``: set INACTIVE before the new certificate is registered (a rotation: never two
    ACTIVE certificates, and undone by a rollback).
    ``guards``: items the commit's transaction checks (``CommitGuard``).
    """

    record: Callable[[NewCertificate], DeviceRecord]
    audit: str
    csr: CheckedCsr | None = None
    retiring: tuple[CertificateRef, ...] = ()
    deactivate: CertificateRef | None = None
    guards: tuple[CommitGuard, ...] = ()
    make_thing: bool = False
    # Lookups the answer needs, run beside the issuance and awaited before the attach steps, so
    # that a failure rolls the issuance back rather than losing a committed certificate.
    side_work: tuple[Callable[[], object], ...] = ()
    purpose: str = ""  # salts ACM PCA's idempotency token: one request, one certificate per use
    audit_details: Mapping[str, str] = field(default_factory=dict)


@dataclass
class IssuanceResult:
    record: DeviceRecord
    certificate_pem: str
    key: DeviceKey | None  # the private key made here (publicKey mode), else None
    repeated: bool = False  # ACM PCA answered with the certificate the row already names
    chain_pem: str = ""  # the issuer's certificate up to the root, as ACM PCA answers it


def issue(task: DeviceTask, plan: IssuancePlan) -> IssuanceResult:
    """Run the plan under the task's lease; then retire what the commit wrote down."""
    run = CertificateIssuance(task, plan)
    try:
        result = run.run()
    except OutcomeUnknown:
        # The commit may have applied: the row decides, not this request. Only the lease is
        # given back, so the next request can recover at once.
        task.release(work_left=True)
        raise
    except LeaseLost:
        run.abandon()
        raise
    except BaseException:
        run.roll_back()
        raise
    run.retire()
    return result


class CertificateIssuance:
    """Steps 1-7 of one issuance (module docstring), and their exact rollback."""

    def __init__(self, task: DeviceTask, plan: IssuancePlan) -> None:
        self.task = task
        self.plan = plan
        self.retiring = plan.retiring
        self.intent: Intent | None = None
        self.in_flight: list[Future[Any]] = []  # what a rollback must wait for first
        self.repeated = False

    def run(self) -> IssuanceResult:
        task, plan, services = self.task, self.plan, self.task.services
        settings, pca, iot = services.settings, services.pca, services.iot
        executor = services.executor
        budget, thing_name, row = task.budget, task.thing_name, task.row
        names = device_names(
            thing_name, task.dsn, settings.subject_o, settings.subject_ou, settings.subject_c
        )
        key: DeviceKey | None = None
        if plan.csr is not None:
            csr, key_algorithm = plan.csr.pem, plan.csr.key_algorithm
        else:
            key = generate_device_key(settings.device_key_algorithm)
            key_algorithm = settings.device_key_algorithm
            csr = build_csr(
                key,
                thing_name,
                task.dsn,
                settings.subject_o,
                settings.subject_ou,
                settings.subject_c,
            )
        side_work: list[Future[Any]] = []
        if plan.make_thing:
            side_work.append(executor.submit(iot.ensure_thing, thing_name))
        side_work += [executor.submit(work) for work in plan.side_work]
        self.in_flight += side_work

        budget.require("ISSUE_CERTIFICATE")
        seed = f"{task.request_id}:{task.dsn}" + (f":{plan.purpose}" if plan.purpose else "")
        token = hashlib.sha256(seed.encode()).hexdigest()[:36]
        pca_certificate_arn = pca.issue(csr, settings.cert_validity_days, token, names)
        if row is not None and row.certificate and pca_certificate_arn == row.pca_certificate_arn:
            # ACM PCA answered with the certificate the row names (an idempotency token it has
            # seen): the outcome is the current certificate. No intent (its recovery would
            # revoke it), nothing to register or commit, nothing retired because of it.
            _wait_all(side_work)
            self.repeated, self.retiring = True, row.retiring
            issued = self._wait_for_certificate(pca_certificate_arn)
            return IssuanceResult(
                row, issued.certificate_pem, None, repeated=True, chain_pem=issued.chain_pem
            )
        issued, facts, new = self._record_intent_and_fetch(
            Intent(
                request_id=task.request_id,
                pca_certificate_arn=pca_certificate_arn,
                previous_certificate_id=plan.deactivate.certificate_id if plan.deactivate else "",
            )
        )
        # Never retire what this issuance's commit names.
        self.retiring = tuple(r for r in self.retiring if r.certificate_id != new.certificate_id)

        if plan.deactivate is not None:
            budget.require("DEACTIVATE_CERTIFICATE")
            iot.set_status(plan.deactivate.certificate_id, CertificateStatus.INACTIVE)

        budget.require("REGISTER_CERTIFICATE")
        registered = iot.register(issued.certificate_pem, issuer_certificate(issued.chain_pem))
        if registered.certificate_id != new.certificate_id:
            raise DependencyFailed("REGISTER_CERTIFICATE")  # IoT named it otherwise: never
        _wait_all(side_work)
        _wait_all(
            [
                executor.submit(iot.attach_policy, new.certificate_arn),
                executor.submit(iot.attach_thing, thing_name, new.certificate_arn),
            ]
        )

        record = plan.record(
            NewCertificate(new, facts, pca_certificate_arn, key_algorithm, task.now())
        )
        budget.require("STORE_DEVICE", ATTEMPT_SECONDS)
        services.store.commit(
            record,
            task.request_id,
            task.audit(
                plan.audit,
                new,
                pca_certificate_arn=pca_certificate_arn,
                thing_name=thing_name,
                **plan.audit_details,
            ),
            retiring=self.retiring,
            superseded=record.superseded,
            grace_until=record.grace_until,
            guards=plan.guards,
        )
        task.row = replace(record, retiring=self.retiring)
        return IssuanceResult(record, issued.certificate_pem, key, chain_pem=issued.chain_pem)

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
        """Ask at once (ACM PCA often has it by the time the intent is written), then poll with
        a short, growing delay; give up while there is still time to roll back."""
        services, budget = self.task.services, self.task.budget
        delay = 0.0
        while True:
            if not budget.allows(delay + FORWARD_RESERVE_SECONDS):
                raise OutOfTime("GET_CERTIFICATE")
            if delay:
                services.sleep(delay)
            issued = services.pca.fetch(certificate_arn)
            if issued is not None:
                return issued
            delay = min(max(delay * 2, FIRST_POLL_DELAY), MAX_POLL_DELAY)

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

    def retire(self) -> None:
        """Revoke what the commit wrote down as retiring (the lease is still ours); after a
        repeat, give back the lease and finish what recovery left."""
        if not self.retiring and not self.repeated:
            return
        if self.task.recover(Release.RELEASE).unfinished:
            logger.warning("retiring certificates left to the sweeper")


def _wait_all(pending: list[Future[Any]]) -> None:
    """Wait for every future, then raise the first failure (nothing is left running)."""
    errors = [f.exception() for f in pending]
    for error in errors:
        if error is not None:
            raise error
