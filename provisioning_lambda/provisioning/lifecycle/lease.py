"""One request's hold on one device: the lease, recovery of what others left, and the steps
every request is made of.

A request can die at any instruction (Lambda's timeout, a lost network, out of memory) and an
answer can be lost after the write applied. What keeps the invariants whatever happens:

- the device row carries the **intent** of the request holding its lease, written before the
  request does anything to IoT: the new certificate as ACM PCA issued it (its IoT id is the
  SHA-256 of its DER, so it can be found before and after registering) and, for a rotation,
  the certificate it is about to set INACTIVE;
- certificates the device no longer uses stay written down as **retiring** until they are
  REVOKED in IoT, detached, and revoked in ACM PCA;
- whoever next takes the lease (the device's next request, or the sweeper once the lease has
  expired) **recovers** first: it revokes the intent's certificate, makes the row's own
  certificate ACTIVE again, retires what is retiring (and a renewal's superseded certificate
  once its grace period has ended), and only then goes on;
- a write whose outcome is unknown is read back, never assumed to have failed.

So every ACTIVE certificate from the CA is attached to its thing and named by its row, and a
row names only an ACTIVE certificate, once recovery has run.

Ending a device's access (revoke, block, release, a transfer's claim) has one rule,
``DeviceTask.end_access``: whatever renewal state the device is in, every certificate the row
lets the device use (the current one, confirmed or not, and a renewal's superseded one) is
written down as retiring in the same write that changes the row, then retired, and the thing's
live MQTT session is ended at once (IoT's DeleteConnection), since IoT drops a session whose
certificate left ACTIVE only eventually.

A row whose recovery keeps failing (a CA that refuses the revocation, say) goes to the back of
the sweeper's queue after each attempt, and after ``MAX_SWEEP_ATTEMPTS`` it is parked: out of
the queue, counted in the sweeper's metric and listed by ``devstack sweep``, until a request for
the device or an operator takes it up again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self

from provisioning.domain.budget import ATTEMPT_SECONDS, Budget
from provisioning.domain.crypto import certificate_facts
from provisioning.domain.errors import DependencyFailed, ProvisioningError
from provisioning.domain.models import (
    AuditEvent,
    CertificateRef,
    CertificateStatus,
    DeviceRecord,
    DeviceStatus,
    Principal,
    Release,
    User,
    issuer_of,
)
from provisioning.observability import logger
from provisioning.ports import Services

# IoT statuses in which a certificate no longer authenticates and never will again.
_GONE = (CertificateStatus.REVOKED, "")
# Recoveries in a row that may end with work left before the row is parked.
MAX_SWEEP_ATTEMPTS = 8


@dataclass
class Recovery:
    """What one recovery did, for the sweeper's metric and the logs."""

    intents_resolved: int = 0
    certificates_retired: int = 0
    unfinished: int = 0
    parked: int = 0

    def __iadd__(self, other: Recovery) -> Self:
        self.intents_resolved += other.intents_resolved
        self.certificates_retired += other.certificates_retired
        self.unfinished += other.unfinished
        self.parked += other.parked
        return self


@dataclass
class DeviceTask:
    """A request's work on one device: who asks, which device, how much time is left, the
    device row as the request found it, and what the request has changed."""

    services: Services
    caller: Principal
    dsn: str
    budget: Budget
    request_id: str
    row: DeviceRecord | None = None
    audits: list[AuditEvent] = field(default_factory=list)
    disconnected: bool = False  # the thing's session was ended by this request

    @classmethod
    @contextmanager
    def running(
        cls, services: Services, principal: Principal, dsn: str, budget: Budget, request_id: str
    ) -> Iterator[DeviceTask]:
        """One request's task on one device, its budget bounding every AWS call made meanwhile
        (each client's attempts and retries read it)."""
        with services.budgets.running(budget):
            yield cls(services, principal, dsn, budget, request_id)

    @property
    def thing_name(self) -> str:
        return (self.row.thing_name if self.row else "") or self.services.settings.thing_name(
            self.dsn
        )

    def now(self) -> datetime:
        return self.services.clock()

    def epoch(self) -> int:
        return int(self.now().timestamp())

    # ------------------------------------------------------------------ lease

    def claim(self, must_exist: bool = False) -> DeviceRecord | None:
        """Take the device's lease for as long as this invocation can run, plus a margin;
        then finish or undo what an earlier request left."""
        self.take_lease(must_exist)
        if self.row is not None and (self.row.needs_recovery or self.row.grace_over(self.epoch())):
            logger.info("recovering what an earlier request left")
            self.recover(Release.KEEP)
            if self.row.intent is not None:  # unresolved: going on would write over it
                self.release(work_left=True)
                raise DependencyFailed("RECOVER_DEVICE")
        return self.row

    def take_lease(self, must_exist: bool = False) -> DeviceRecord | None:
        """Only take the lease; return the row as it was, or None for a new device (the caller
        recovers, or not, itself)."""
        now = self.epoch()
        self.row = self.services.store.claim(
            self.dsn,
            *_claim_terms(self.caller),
            self.request_id,
            now=now,
            lease_until=now + self.budget.lease_seconds(),
            must_exist=must_exist,
        )
        return self.row

    def recover(self, release: Release) -> Recovery:
        """Resolve the row's intent and retire its retiring certificates, then write down what
        was done (and, unless KEEP, give the lease back). Never raises."""
        row = self.row
        if row is None:
            return Recovery()
        done = Recovery()
        clear_intent = False
        if row.superseded is not None and row.grace_over(self.epoch()):
            # The renewal's grace period is over: the certificate renewed from is retired like
            # any other (written down first, so a death from here on finishes it, never undoes).
            superseded = row.superseded
            if self._quietly(
                "STORE_DEVICE",
                self.services.store.retire_superseded,
                self.dsn,
                self.request_id,
                superseded,
            ):
                row = self.row = replace(
                    row, superseded=None, grace_until=0, retiring=(*row.retiring, superseded)
                )
        if row.intent is not None:
            intent = row.intent
            new = intent.certificate or self.issued(intent.pca_certificate_arn)
            undone = new is not None and self.revoke_everywhere(new, "rolled back")
            if undone and intent.previous_certificate_id:
                current = row.certificate
                if current is not None and current.certificate_id == intent.previous_certificate_id:
                    undone = self.ensure_status(current.certificate_id, CertificateStatus.ACTIVE)
            clear_intent = undone
            done.intents_resolved += int(undone)
        retired = tuple(ref for ref in row.retiring if self.revoke_everywhere(ref, "superseded"))
        done.certificates_retired += len(retired)
        if retired and row.status != DeviceStatus.ACTIVE:
            # What an ended access left part-way (revoke, release, claim): its session ends
            # now too, whoever finishes it (the device's next request or the sweeper).
            self.disconnect()
        left = (row.intent is not None and not clear_intent) or len(retired) < len(row.retiring)
        if row.ungroup:
            # A release not finished: its row is deleted below once nothing else is left.
            left = (
                not self._quietly("UNGROUP_THING", self.services.iot.remove_from_group, row.ungroup)
                or left
            )
        done.unfinished += int(left)
        attempts = row.sweep_attempts + 1 if left else 0
        park = release is not Release.KEEP and attempts >= MAX_SWEEP_ATTEMPTS
        if park:
            done.parked += 1
            logger.error("device parked: recovery keeps failing", extra={"attempts": attempts})
        if release is Release.DELETE and row.status:
            release = Release.RELEASE
        self._quietly(
            "SETTLE_DEVICE",
            self.services.store.settle,
            self.dsn,
            self.request_id,
            release=release,
            clear_intent=clear_intent,
            retired=retired,
            audits=tuple(self.audits),
            work_left=left,
            now=self.epoch(),
            wake_at=row.wake_at,
            attempts=attempts,
            park=park,
        )
        self.audits.clear()
        self.row = replace(
            row,
            intent=None if clear_intent else row.intent,
            retiring=tuple(ref for ref in row.retiring if ref not in retired),
            sweep_attempts=attempts,
        )
        return done

    def end_access(
        self,
        commit: Callable[[tuple[CertificateRef, ...]], None],
        release: Release,
        **after: Any,
    ) -> Recovery:
        """The one rule for ending the device's access, whatever renewal state it is in.

        ``commit`` writes the row's new state (``after``: its owner, status, ...) and every
        certificate it held as retiring, in one write that keeps the lease; then they are
        retired (REVOKED in IoT, detached, revoked at their issuer) and the thing's live session
        is ended. A commit that fails leaves the lease to the sweeper, whatever it did; what
        recovery cannot finish stays written down for the next request or the sweeper.
        """
        row = self.row
        assert row is not None, "end_access needs the claimed row"
        held = row.held_certificates
        try:
            self.budget.require("STORE_DEVICE")
            commit(held)
        except BaseException:
            self.release(work_left=True)
            raise
        self.row = replace(
            row,
            certificate_id="",
            certificate_arn="",
            pca_certificate_arn="",
            issuer_arn="",
            serial="",
            not_before="",
            not_after="",
            superseded=None,
            grace_until=0,
            retiring=(*row.retiring, *(ref for ref in held if ref not in row.retiring)),
            **after,
        )
        done = self.recover(release)
        self.disconnect()  # also when nothing could be retired yet: IoT refuses it anyway
        return done

    def disconnect(self) -> None:
        """End the thing's MQTT session now (client id = thing name), so a device whose access
        ended cannot go on publishing until IoT notices its certificate (never raises)."""
        connections = self.services.connections
        if self.disconnected or connections is None or not self.budget.allows(ATTEMPT_SECONDS):
            return
        self.disconnected = self._quietly(
            "DISCONNECT_DEVICE", connections.disconnect, self.thing_name
        )

    def release(self, work_left: bool = False) -> None:
        """Give the lease back (never raises); a row never provisioned is dropped."""
        row = self.row
        provisioned = row is not None and bool(row.status)
        self._quietly(
            "RELEASE_DEVICE",
            self.services.store.settle,
            self.dsn,
            self.request_id,
            release=Release.RELEASE if provisioned or work_left else Release.DELETE,
            work_left=work_left,
            now=self.epoch(),
            wake_at=row.wake_at if row is not None else 0,
            attempts=row.sweep_attempts if row is not None else 0,
        )

    # ------------------------------------------------------------------ certificates

    def revoke_everywhere(self, ref: CertificateRef, reason: str) -> bool:
        """REVOKED in IoT (terminal), detached from thing and policy, revoked in ACM PCA.

        Returns whether all of it is done; an audit entry is queued for the next settle.
        Never raises: what is not done stays written down for the next attempt.
        """
        iot, pca = self.services.iot, self.services.pca
        done = self.ensure_status(ref.certificate_id, CertificateStatus.REVOKED)
        detached = self._quietly(
            "DETACH_CERTIFICATE", iot.detach, self.thing_name, ref.certificate_arn
        )
        revoked = not ref.serial or self._quietly(
            "REVOKE_CERTIFICATE", pca.revoke, ref.issuer_arn, ref.serial, "SUPERSEDED"
        )
        done = done and detached and revoked
        if done:
            self.audits.append(self.audit("REVOKE", ref, reason=reason))
        return done

    def ensure_status(self, certificate_id: str, status: str) -> bool:
        """Set a certificate's IoT status; when the answer is lost or an error, read it back.

        A certificate IoT does not know, or one already REVOKED, counts as REVOKED (and, being
        terminal, as settled for a request to re-activate it: an operator revoked it).
        """
        if self._quietly(f"SET_{status}", self.services.iot.set_status, certificate_id, status):
            return True
        try:
            actual = self.services.iot.status(certificate_id)
        except ProvisioningError:
            return False
        return actual == status or (
            actual in _GONE and status in (CertificateStatus.REVOKED, CertificateStatus.ACTIVE)
        )

    def issued(self, pca_certificate_arn: str) -> CertificateRef | None:
        """The certificate ACM PCA issued, as IoT and ACM PCA name it; None while unknown."""
        try:
            issued = self.services.pca.fetch(pca_certificate_arn)
        except ProvisioningError:
            return None
        if issued is None:  # still issuing: the next recovery will know
            return None
        facts = certificate_facts(issued.certificate_pem)
        return CertificateRef(
            facts.iot_certificate_id,
            self.services.iot.certificate_arn(facts.iot_certificate_id),
            facts.serial_hex,
            issuer_of(pca_certificate_arn),
        )

    def write_audits(self) -> None:
        """The queued audit entries alone, without touching the row (never raises)."""
        self._quietly(
            "AUDIT",
            self.services.store.settle,
            self.dsn,
            self.request_id,
            release=Release.KEEP,
            audits=tuple(self.audits),
        )
        self.audits.clear()

    def audit(self, event: str, ref: CertificateRef, **details: str) -> AuditEvent:
        """An entry for one use of the CA on ``ref``: the CA is the certificate's issuer."""
        return self.audit_event(
            event,
            ca_arn=ref.issuer_arn or self.services.settings.ca_arn,
            serial=ref.serial,
            certificate_id=ref.certificate_id,
            **details,
        )

    def audit_event(self, event: str, **details: str) -> AuditEvent:
        return AuditEvent(
            subject=f"device#{self.dsn}",
            event=event,
            actor=self.caller.sub,
            at=iso(self.now()),
            request_id=self.request_id,
            details=details,
        )

    @staticmethod
    def _quietly(step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        try:
            fn(*args, **kwargs)
        except Exception as error:
            logger.warning(
                "clean-up step failed", extra={"step": step, "error": type(error).__name__}
            )
            return False
        return True


def _claim_terms(principal: Principal) -> tuple[str | None, str]:
    """Whose ownership the claim checks (None: none), and who owns a device with no owner yet
    ("": nobody new): a member owns what they provision; an administrator may act on any device
    and owns one nobody owns yet; the device and the service act as themselves, owning nothing."""
    if isinstance(principal, User):
        return (None if principal.is_admin else principal.sub), principal.sub
    return None, ""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
