"""Provisioning, as plain Python: no boto3 here, only the ports the adapters implement.

Order of work for one request (independent calls run concurrently):

1. validate the device key (X25519 agreement) and authorise the caller;
2. take the device's lease in DynamoDB (ownership check and in-flight guard in one write);
3. issue the certificate from ACM PCA  ||  create the thing in its group  ||  endpoint lookup;
4. on rotation, set the previous certificate INACTIVE (reversible);
5. register the certificate ACTIVE in IoT, then attach the shared policy || attach the thing;
6. commit the device row naming the new certificate, with its audit entry, in one transaction;
7. retire the previous certificate (REVOKED in IoT, detached, revoked in ACM PCA).

Any failure before 6 rolls back what this request created, so no certificate is left ACTIVE
without a row naming it and no row names a certificate that is not ACTIVE; what cannot be
rolled back now is written down as an orphan that the next request for the device cleans up.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .config import Settings
from .crypto import (
    agree_with_device,
    build_csr,
    certificate_facts,
    encrypt_private_key,
    generate_device_key,
)
from .errors import Forbidden, NotFound, OutOfTime
from .models import (
    AuditEvent,
    Caller,
    CertificateRef,
    DeviceRecord,
    IssuedCertificate,
    ProvisionRequest,
    ProvisionResult,
    RegisteredCertificate,
)
from .observability import logger

ROLLBACK_RESERVE_SECONDS = 3.0
LEASE_MARGIN_SECONDS = 5
FIRST_POLL_DELAY = 0.02
MAX_POLL_DELAY = 1.0


class PcaPort(Protocol):
    def issue(self, csr_pem: bytes, validity_days: int, idempotency_token: str) -> str: ...
    def fetch(self, certificate_arn: str) -> IssuedCertificate | None: ...
    def revoke(self, serial_hex: str, reason: str) -> None: ...


class IotPort(Protocol):
    @property
    def data_endpoint(self) -> str: ...
    def ensure_thing(self, thing_name: str) -> None: ...
    def register(self, certificate_pem: str, ca_pem: str) -> RegisteredCertificate: ...
    def attach_policy(self, certificate_arn: str) -> None: ...
    def attach_thing(self, thing_name: str, certificate_arn: str) -> None: ...
    def set_status(self, certificate_id: str, status: str) -> None: ...
    def detach(self, thing_name: str, certificate_arn: str) -> None: ...


class StorePort(Protocol):
    def claim(
        self,
        dsn: str,
        caller_sub: str,
        is_admin: bool,
        request_id: str,
        now: int,
        lease_until: int,
        must_exist: bool = False,
    ) -> DeviceRecord | None: ...
    def get(self, dsn: str) -> DeviceRecord | None: ...
    def commit_revocation(self, dsn: str, request_id: str, at: str, audit: AuditEvent) -> None: ...
    def commit(self, record: DeviceRecord, request_id: str, audit: AuditEvent) -> None: ...
    def release(
        self, dsn: str, request_id: str, keep_row: bool, orphans: tuple[CertificateRef, ...]
    ) -> None: ...
    def audit(self, event: AuditEvent) -> None: ...


@dataclass
class Services:
    settings: Settings
    pca: PcaPort
    iot: IotPort
    store: StorePort
    executor: ThreadPoolExecutor
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class Budget:
    """What is left of the Lambda's time; every wait and step is checked against it."""

    def __init__(self, remaining_ms: Callable[[], int]) -> None:
        self._remaining_ms = remaining_ms

    def seconds_left(self) -> float:
        return self._remaining_ms() / 1000

    def require(self, step: str, seconds: float = ROLLBACK_RESERVE_SECONDS) -> None:
        if self.seconds_left() < seconds:
            raise OutOfTime(step)


@dataclass
class _Attempt:
    """What this request has created so far, for an exact rollback."""

    pca_certificate_arn: str = ""
    serial: str = ""
    registered: RegisteredCertificate | None = None
    deactivated_previous: bool = False


def provision_device(
    request: ProvisionRequest,
    caller: Caller,
    services: Services,
    budget: Budget,
    request_id: str,
) -> ProvisionResult:
    _require_group(caller)
    exchange = agree_with_device(request.device_public_key)
    settings = services.settings
    thing_name = settings.thing_name(request.dsn)
    previous = _claim(services, budget, request.dsn, caller, request_id)
    logger.info(
        "device claimed",
        extra={"thing_name": thing_name, "rotation": bool(previous and previous.certificate)},
    )

    attempt = _Attempt()
    try:
        key = generate_device_key(settings.device_key_algorithm)
        record, certificate_pem = _issue_and_register(
            request, caller, services, budget, request_id, thing_name, key, previous, attempt
        )
    except BaseException:
        _roll_back(services, request, request_id, caller, thing_name, previous, attempt)
        raise

    if previous is not None and previous.certificate is not None:
        _retire(services, request, request_id, caller, thing_name, previous.certificate)

    return ProvisionResult(
        certificate_pem=certificate_pem,
        encrypted_private_key=encrypt_private_key(key, exchange, request.encryption, request.dsn),
        server_public_key=_b64(exchange.server_public_key),
        thing_name=thing_name,
        certificate_id=record.certificate_id,
        not_after=record.not_after,
        iot_endpoint=services.iot.data_endpoint,
        encryption=request.encryption,
    )


def describe_device(dsn: str, caller: Caller, services: Services) -> dict[str, str | bool]:
    """The owner or an administrator reads a device; anyone else learns nothing, not even that
    it exists."""
    return _visible_device(services, dsn, caller).to_response(caller)


def revoke_device(
    dsn: str, caller: Caller, services: Services, budget: Budget, request_id: str
) -> dict[str, str | bool]:
    """Revoke the device's certificate everywhere; the owner keeps the device.

    The certificate is made INACTIVE first (reversible), then the row stops naming it, then it
    is made REVOKED, detached and revoked in ACM PCA. Revoking a revoked device is a no-op.
    """
    _visible_device(services, dsn, caller)
    previous = _claim(services, budget, dsn, caller, request_id, must_exist=True)
    if previous is None:  # the claim insists the row exists; this only narrows the type
        raise NotFound("No such device.")
    current = previous.certificate
    if current is None:
        services.store.release(dsn, request_id, keep_row=True, orphans=previous.orphans)
        return previous.to_response(caller)

    at = _iso(services.clock())
    deactivated = False
    try:
        budget.require("DEACTIVATE_CERTIFICATE")
        services.iot.set_status(current.certificate_id, "INACTIVE")
        deactivated = True
        services.store.commit_revocation(
            dsn,
            request_id,
            at,
            AuditEvent(
                subject=f"device#{dsn}",
                event="REVOKE",
                actor=caller.sub,
                at=at,
                request_id=request_id,
                details={
                    "ca_arn": services.settings.ca_arn,
                    "serial": current.serial,
                    "certificate_id": current.certificate_id,
                    "reason": "revoked by request",
                },
            ),
        )
    except BaseException:
        if deactivated:
            _quietly(
                "ACTIVATE_CERTIFICATE", services.iot.set_status, current.certificate_id, "ACTIVE"
            )
        _quietly("RELEASE_DEVICE", services.store.release, dsn, request_id, True, previous.orphans)
        raise
    if not _revoke_everywhere(services, previous.thing_name, current, quiet=True):
        logger.warning(
            "revoked certificate left INACTIVE", extra={"certificate_id": current.certificate_id}
        )
    return DeviceRecord(
        dsn=dsn,
        owner_sub=previous.owner_sub,
        thing_name=previous.thing_name,
        key_algorithm=previous.key_algorithm,
        status="REVOKED",
        created_at=previous.created_at,
        updated_at=at,
    ).to_response(caller) | {"revokedCertificateId": current.certificate_id}


def _visible_device(services: Services, dsn: str, caller: Caller) -> DeviceRecord:
    """A provisioned device the caller owns (or any, for an administrator); else 404."""
    _require_group(caller)
    record = services.store.get(dsn)
    if record is None or not record.status or not record.visible_to(caller):
        raise NotFound("No such device.")
    return record


def _claim(
    services: Services,
    budget: Budget,
    dsn: str,
    caller: Caller,
    request_id: str,
    must_exist: bool = False,
) -> DeviceRecord | None:
    """Take the device's lease for as long as this invocation can run, plus a margin."""
    now = int(services.clock().timestamp())
    return services.store.claim(
        dsn,
        caller.sub,
        caller.is_admin,
        request_id,
        now=now,
        lease_until=int(now + budget.seconds_left() + LEASE_MARGIN_SECONDS),
        must_exist=must_exist,
    )


def _require_group(caller: Caller) -> None:
    if not caller.may_provision:
        raise Forbidden(
            "Only members of the Members or Administrators group may manage devices.",
            "NOT_A_MEMBER",
        )


def _issue_and_register(
    request: ProvisionRequest,
    caller: Caller,
    services: Services,
    budget: Budget,
    request_id: str,
    thing_name: str,
    key: Any,
    previous: DeviceRecord | None,
    attempt: _Attempt,
) -> tuple[DeviceRecord, str]:
    settings, pca, iot, run = services.settings, services.pca, services.iot, services.executor
    csr = build_csr(key, thing_name, settings.subject_o, settings.subject_ou, settings.subject_c)

    side_work: list[Future[Any]] = [
        run.submit(iot.ensure_thing, thing_name),
        run.submit(lambda: iot.data_endpoint),
    ]
    for orphan in previous.orphans if previous else ():
        side_work.append(run.submit(_revoke_everywhere, services, thing_name, orphan))

    budget.require("ISSUE_CERTIFICATE")
    token = hashlib.sha256(f"{request_id}:{request.dsn}".encode()).hexdigest()[:36]
    attempt.pca_certificate_arn = pca.issue(csr, settings.cert_validity_days, token)
    issued = _wait_for_certificate(services, budget, attempt.pca_certificate_arn)
    facts = certificate_facts(issued.certificate_pem)
    attempt.serial = facts.serial_hex

    if previous is not None and previous.certificate is not None:
        # Before the new one is registered: there is never a moment with two ACTIVE
        # certificates, and INACTIVE can still be undone if the rotation fails.
        budget.require("DEACTIVATE_CERTIFICATE")
        attempt.deactivated_previous = True
        iot.set_status(previous.certificate.certificate_id, "INACTIVE")

    budget.require("REGISTER_CERTIFICATE")
    attempt.registered = iot.register(issued.certificate_pem, issued.chain_pem)
    arn = attempt.registered.certificate_arn
    _wait_all(side_work)
    _wait_all([run.submit(iot.attach_policy, arn), run.submit(iot.attach_thing, thing_name, arn)])

    at = _iso(services.clock())
    record = DeviceRecord(
        dsn=request.dsn,
        owner_sub=previous.owner_sub if previous and previous.owner_sub else caller.sub,
        thing_name=thing_name,
        certificate_id=attempt.registered.certificate_id,
        certificate_arn=arn,
        pca_certificate_arn=attempt.pca_certificate_arn,
        serial=facts.serial_hex,
        not_before=_iso(facts.not_before),
        not_after=_iso(facts.not_after),
        key_algorithm=settings.device_key_algorithm,
        status="ACTIVE",
        created_at=at,
        updated_at=at,
    )
    budget.require("STORE_DEVICE", seconds=1.0)
    services.store.commit(
        record,
        request_id,
        AuditEvent(
            subject=f"device#{request.dsn}",
            event="ISSUE",
            actor=caller.sub,
            at=at,
            request_id=request_id,
            details={
                "ca_arn": settings.ca_arn,
                "pca_certificate_arn": attempt.pca_certificate_arn,
                "serial": facts.serial_hex,
                "certificate_id": record.certificate_id,
                "thing_name": thing_name,
            },
        ),
    )
    return record, issued.certificate_pem


def _wait_for_certificate(
    services: Services, budget: Budget, certificate_arn: str
) -> IssuedCertificate:
    """Poll with a short, growing delay; give up while there is still time to roll back."""
    delay = FIRST_POLL_DELAY
    while True:
        if budget.seconds_left() - delay < ROLLBACK_RESERVE_SECONDS:
            raise OutOfTime("GET_CERTIFICATE")
        services.sleep(delay)
        issued = services.pca.fetch(certificate_arn)
        if issued is not None:
            return issued
        delay = min(delay * 2, MAX_POLL_DELAY)


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait for every future, then raise the first failure (nothing is left running)."""
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _roll_back(
    services: Services,
    request: ProvisionRequest,
    request_id: str,
    caller: Caller,
    thing_name: str,
    previous: DeviceRecord | None,
    attempt: _Attempt,
) -> None:
    """Undo this request's changes; never raises, so the original error is what the caller sees."""
    orphans = list(previous.orphans) if previous else []
    if attempt.registered is not None:
        new = CertificateRef(
            attempt.registered.certificate_id, attempt.registered.certificate_arn, attempt.serial
        )
        if not _revoke_everywhere(services, thing_name, new, quiet=True):
            orphans.append(new)
        else:
            _audit_quietly(services, request, request_id, caller, "REVOKE", new, "rollback")
    elif attempt.serial:
        _quietly("REVOKE_CERTIFICATE", services.pca.revoke, attempt.serial, "SUPERSEDED")
    if attempt.deactivated_previous and previous is not None and previous.certificate:
        _quietly(
            "ACTIVATE_CERTIFICATE",
            services.iot.set_status,
            previous.certificate.certificate_id,
            "ACTIVE",
        )
    # A device that was ever provisioned keeps its row (and so its owner), even if revoked.
    keep_row = previous is not None and bool(previous.status)
    _quietly(
        "RELEASE_DEVICE", services.store.release, request.dsn, request_id, keep_row, tuple(orphans)
    )


def _retire(
    services: Services,
    request: ProvisionRequest,
    request_id: str,
    caller: Caller,
    thing_name: str,
    old: CertificateRef,
) -> None:
    """The previous certificate is already INACTIVE; make it REVOKED everywhere."""
    if _revoke_everywhere(services, thing_name, old, quiet=True):
        _audit_quietly(services, request, request_id, caller, "REVOKE", old, "superseded")
    else:
        logger.warning(
            "previous certificate left INACTIVE", extra={"certificate_id": old.certificate_id}
        )


def _revoke_everywhere(
    services: Services, thing_name: str, ref: CertificateRef, quiet: bool = False
) -> bool:
    """REVOKED in IoT (terminal), detached from thing and policy, revoked in ACM PCA."""
    steps: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
        ("DEACTIVATE_CERTIFICATE", services.iot.set_status, (ref.certificate_id, "REVOKED")),
        ("DETACH_CERTIFICATE", services.iot.detach, (thing_name, ref.certificate_arn)),
    ]
    if ref.serial:
        steps.append(("REVOKE_CERTIFICATE", services.pca.revoke, (ref.serial, "SUPERSEDED")))
    ok = True
    for step, fn, args in steps:
        if quiet:
            ok = _quietly(step, fn, *args) and ok
        else:
            fn(*args)
    return ok


def _quietly(step: str, fn: Callable[..., Any], *args: Any) -> bool:
    try:
        fn(*args)
    except Exception as error:
        logger.warning("clean-up step failed", extra={"step": step, "error": type(error).__name__})
        return False
    return True


def _audit_quietly(
    services: Services,
    request: ProvisionRequest,
    request_id: str,
    caller: Caller,
    event: str,
    ref: CertificateRef,
    reason: str,
) -> None:
    _quietly(
        "AUDIT",
        services.store.audit,
        AuditEvent(
            subject=f"device#{request.dsn}",
            event=event,
            actor=caller.sub,
            at=_iso(services.clock()),
            request_id=request_id,
            details={
                "ca_arn": services.settings.ca_arn,
                "serial": ref.serial,
                "certificate_id": ref.certificate_id,
                "reason": reason,
            },
        ),
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
