"""Fleet management as plain Python: list devices, hand one to a new owner, release one.

Listing reads indexes only (adapters/fleet_store.py): a member's page costs the same whatever
the size of their fleet.

A transfer, in steps (each audited in the audit table):

1. the owner starts it: a random one-time code is shown once; the row keeps only a keyed hash
   of it, the transfer's id, its expiry and an attempt count (a new start replaces it);
2. another member claims with the DSN and the code: the try is counted first (at most
   ``TRANSFER_MAX_ATTEMPTS`` counted at once per transfer, so at most that many wrong codes
   are ever compared, however many requests run at the same time), then the code is compared
   in constant time; a code that matches gives its try back at once, so only wrong codes use
   tries up (a claim answered 409 and retried, or ``ALREADY_OWNER``, costs none). The last
   wrong try cancels the transfer, whoever made it: tries are counted per transfer, not per
   caller (docs/threat-model.md, transfer row). A blocked device (manufacturer allowlist) is
   neither offered nor claimed: it could never be provisioned again;
3. the claim takes the device's lease, then one transaction makes the claimant the owner, the
   row name no certificate (status REVOKED) and every certificate the old owner's device holds
   (a renewal's superseded one too) be written down as retiring, drops the transfer and keeps
   the audit entry; they are then revoked everywhere and the device's session ended, by the
   one rule revoke_device follows too (lease.py, ``end_access``), so the old owner's device
   loses access and the new owner provisions it again over BLE. A claim that dies after the
   commit leaves the revocation to the next request or the sweeper;
4. either side may cancel before the claim: the owner (or an administrator) by DSN alone; the
   recipient, who is known only by holding the code, by presenting it (a counted try). A cancel
   waits for a claim in progress.

A release, in steps: take the lease; one transaction removes the owner, the status, the
certificates and the list position, writes every certificate the device holds down as retiring
and the thing as to be taken out of its group (``ungroup``), with the audit entry; recovery then
revokes them everywhere, takes the thing out of its group and deletes the row, and the device's
session is ended (lease.py, ``end_access``). Whatever a
request that dies leaves, the next request for the DSN or the sweeper finishes (lease.py); the
audit trail stays. The DSN is then anyone's to provision.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from provisioning.domain.budget import Budget
from provisioning.domain.errors import Conflict, DependencyFailed, Forbidden, NotFound
from provisioning.domain.expiry import ExpiryWindow, device_expiry
from provisioning.domain.fleet_models import (
    LIST_STATUSES,
    OWNER_INDEX,
    STATUS_INDEX,
    TRANSFER_MAX_ATTEMPTS,
    TRANSFER_TTL_SECONDS,
    ListQuery,
    Transfer,
    code_matches,
    display_code,
    encode_token,
    new_transfer_code,
)
from provisioning.domain.models import (
    AuditEvent,
    CertificateRef,
    DeviceRecord,
    DeviceStatus,
    Release,
    User,
)
from provisioning.domain.views import device_view
from provisioning.lifecycle.lease import DeviceTask, iso
from provisioning.observability import logger
from provisioning.ports import Services
from provisioning.usecases.attestation import refuse_blocked
from provisioning.usecases.provision import _visible_device, require_member

CODE_REFUSED = "The transfer code is wrong or has expired, or no transfer is pending."


@runtime_checkable
class FleetStorePort(Protocol):
    """What fleet management needs of the devices table beyond the StorePort."""

    def newest(
        self, index: str, key: str, values: tuple[str, ...], after: str, limit: int
    ) -> list[Any]: ...
    def expiring_before(self, before: str, positions: Any, limit: int) -> tuple[list[Any], Any]: ...
    def pending_transfer(self, dsn: str) -> Transfer | None: ...
    def start_transfer(
        self, dsn: str, owner_sub: str, transfer: Any, audit: AuditEvent, request_id: str
    ) -> None: ...
    def cancel_transfer(
        self, dsn: str, transfer_id: str, audit: AuditEvent, request_id: str, now: int
    ) -> None: ...
    def count_attempt(self, dsn: str, now: int, max_attempts: int) -> Transfer | None: ...
    def return_attempt(self, dsn: str, transfer_id: str, request_id: str) -> None: ...
    def drop_transfer(
        self, dsn: str, transfer_id: str, audit: AuditEvent, request_id: str
    ) -> None: ...
    def lease_for_claim(
        self, dsn: str, transfer_id: str, request_id: str, now: int, lease_until: int
    ) -> DeviceRecord: ...
    def commit_claim(
        self,
        dsn: str,
        request_id: str,
        new_owner: str,
        at: str,
        held: tuple[CertificateRef, ...],
        audit: AuditEvent,
    ) -> None: ...
    def commit_release(
        self,
        dsn: str,
        request_id: str,
        thing_name: str,
        held: tuple[CertificateRef, ...],
        audit: AuditEvent,
        released_by: str = "",
    ) -> None: ...


def _fleet(services: Services) -> FleetStorePort:
    store = services.store
    if not isinstance(store, FleetStorePort):  # a deployment mistake, never a caller's
        raise TypeError("the devices store does not implement fleet management")
    return store


# --------------------------------------------------------------------------- list


def list_devices(query: ListQuery, services: Services) -> dict[str, Any]:
    """One page of the caller's devices (any, for an administrator), and the token for the
    next page when there may be one."""
    require_member(query.caller)
    fleet = _fleet(services)
    now = int(services.clock().timestamp())
    if query.mode == "expiry":
        positions = query.position if query.position else None
        devices, reached = fleet.expiring_before(query.expiring_before, positions, query.limit)
        token = encode_token(query, reached) if reached else None
    else:
        values: tuple[str, ...]
        if query.mode == "owner":
            index, key, values = OWNER_INDEX, "owner_sub", (query.owner,)
        elif query.mode == "status":
            index, key, values = STATUS_INDEX, "status", (query.status,)
        else:
            index, key, values = STATUS_INDEX, "status", LIST_STATUSES
        after = str(query.position.get("after", ""))
        devices = fleet.newest(index, key, values, after, query.limit + 1)
        token = None
        if len(devices) > query.limit:
            devices = devices[: query.limit]
            token = encode_token(query, {"after": devices[-1].listed_at})
    settings = services.settings
    window = ExpiryWindow(settings.cert_validity_days, settings.expiry_warning_percent)
    moment = services.clock()
    answer: dict[str, Any] = {
        "devices": [
            _listed(d.record, d.transfer_until, query.caller, now)
            | {"expiry": device_expiry(d.record, window, moment).value}
            for d in devices
        ]
    }
    if token:
        answer["nextToken"] = token
    return answer


def _listed(record: DeviceRecord, transfer_until: int, caller: User, now: int) -> dict[str, Any]:
    item: dict[str, Any] = dict(device_view(record, caller))
    item["transferPending"] = transfer_until > now
    if caller.is_admin:
        item["owner"] = record.owner_sub
    return item


# --------------------------------------------------------------------------- transfer


def start_transfer(
    dsn: str, caller: User, services: Services, request_id: str
) -> dict[str, str | int]:
    """The owner's one-time code for handing the device over; shown once, never stored."""
    record = _visible_device(services, dsn, caller)
    if record.owner_sub != caller.sub:
        raise Forbidden("Only the device's owner may hand it over.", "NOT_OWNER")
    refuse_blocked(services, dsn)
    fleet = _fleet(services)
    now = services.clock()
    transfer_id = secrets.token_hex(8)
    code = new_transfer_code(dsn, transfer_id)
    until = now + timedelta(seconds=TRANSFER_TTL_SECONDS)
    fleet.start_transfer(
        dsn,
        caller.sub,
        Transfer(
            transfer_id=transfer_id,
            digest=code.digest,
            salt=code.salt,
            until=int(until.timestamp()),
            attempts=0,
            started_by=caller.sub,
        ),
        _audit(dsn, "TRANSFER_START", caller, iso(now), request_id, transfer_id),
        request_id,
    )
    logger.info("transfer started", extra={"transfer_id": transfer_id})
    return {
        "DSN": dsn,
        "transferCode": display_code(code.code),
        "expiresAt": iso(until),
        "maxAttempts": TRANSFER_MAX_ATTEMPTS,
    }


def cancel_transfer(
    dsn: str, caller: User, code: str, services: Services, request_id: str
) -> dict[str, str | bool]:
    """Either side cancels: the owner or an administrator by DSN; the recipient with the code."""
    require_member(caller)
    fleet = _fleet(services)
    now = services.clock()
    if code:
        transfer_id, _ = _checked_code(dsn, code, caller, services, request_id)
        side = "recipient"
    else:
        record = _visible_device(services, dsn, caller)
        transfer = fleet.pending_transfer(dsn)
        if transfer is None or transfer.until <= int(now.timestamp()):
            raise NotFound("No transfer is pending for this device.", "TRANSFER_NOT_FOUND")
        transfer_id = transfer.transfer_id
        side = "owner" if record.owner_sub == caller.sub else "administrator"
    fleet.cancel_transfer(
        dsn,
        transfer_id,
        _audit(dsn, "TRANSFER_CANCEL", caller, iso(now), request_id, transfer_id, by=side),
        request_id,
        int(now.timestamp()),
    )
    return {"DSN": dsn, "transferCancelled": True}


def claim_device(
    dsn: str, code: str, caller: User, services: Services, budget: Budget, request_id: str
) -> dict[str, str | bool]:
    """Become the device's owner with its transfer code; its certificate is revoked."""
    require_member(caller)
    fleet = _fleet(services)
    transfer_id, previous_owner = _checked_code(dsn, code, caller, services, request_id)
    if previous_owner == caller.sub:
        raise Conflict("You already own this device.", "ALREADY_OWNER")
    refuse_blocked(services, dsn)  # told only to a caller holding the code
    with DeviceTask.running(services, caller, dsn, budget, request_id) as task:
        now = task.epoch()
        task.row = row = fleet.lease_for_claim(
            dsn, transfer_id, request_id, now, now + budget.lease_seconds()
        )
        if row.needs_recovery:
            task.recover(Release.KEEP)
            if task.row.intent is not None:
                task.release(work_left=True)
                raise DependencyFailed("RECOVER_DEVICE")
            row = task.row
        current = row.certificate
        at = iso(task.now())
        claimed = _audit(
            dsn,
            "TRANSFER_CLAIM",
            caller,
            at,
            request_id,
            transfer_id,
            previous_owner=row.owner_sub,
            certificate_id=current.certificate_id if current else "",
        )
        held = row.held_certificates
        task.end_access(
            lambda held: fleet.commit_claim(dsn, request_id, caller.sub, at, held, claimed),
            Release.RELEASE,
            owner_sub=caller.sub,
            status=DeviceStatus.REVOKED,
            updated_at=at,
        )
        revoked = not any(ref in task.row.retiring for ref in held)
    logger.info("transfer claimed", extra={"transfer_id": transfer_id})
    return device_view(task.row, caller) | {"previousCertificateRevoked": revoked}


def _checked_code(
    dsn: str, code: str, caller: User, services: Services, request_id: str
) -> tuple[str, str]:
    """Count a try at the pending transfer's code, then compare; the transfer's id and the
    device's owner.

    A code that matches gives its try back before anything else can refuse the request, so
    only wrong codes use tries up; a wrong code's try is never given back. Every refusal reads
    the same, whether there is no device, no transfer, an expired one, or a wrong code: a
    caller learns nothing about a DSN without its code.
    """
    fleet = _fleet(services)
    now = services.clock()
    transfer = fleet.count_attempt(dsn, int(now.timestamp()), TRANSFER_MAX_ATTEMPTS)
    if transfer is None:
        raise Forbidden(CODE_REFUSED, "TRANSFER_CODE_INVALID")
    if code_matches(code, transfer.salt, transfer.digest, dsn, transfer.transfer_id):
        fleet.return_attempt(dsn, transfer.transfer_id, request_id)
        return transfer.transfer_id, transfer.owner_sub
    at = iso(now)
    rejected = _audit(dsn, "TRANSFER_CODE_REJECTED", caller, at, request_id, transfer.transfer_id)
    rejected = replace(
        rejected,
        details={**rejected.details, "attempt": str(transfer.attempts)},
    )
    if transfer.attempts >= TRANSFER_MAX_ATTEMPTS:
        # The last try failed: the transfer ends (the owner may start a new one).
        services.store.settle(dsn, request_id, release=Release.KEEP, audits=(rejected,))
        fleet.drop_transfer(
            dsn,
            transfer.transfer_id,
            _audit(
                dsn, "TRANSFER_CANCEL", caller, at, request_id, transfer.transfer_id, by="attempts"
            ),
            request_id,
        )
    else:
        services.store.settle(dsn, request_id, release=Release.KEEP, audits=(rejected,))
    raise Forbidden(CODE_REFUSED, "TRANSFER_CODE_INVALID")


# --------------------------------------------------------------------------- release


def release_device(
    dsn: str, caller: User, services: Services, budget: Budget, request_id: str
) -> dict[str, str | bool]:
    """Give the device up: its certificate revoked everywhere, the thing out of its group, no
    owner; the audit trail stays. A 200 with ``finished`` false means the sweeper finishes.

    A release whose answer was lost (the request died after its row write) is the releasing
    user's to repeat: the repeat finishes it now, session included, instead of a 404 while the
    device may still be online until the sweeper comes by.
    """
    if _finish_release(dsn, caller, services, budget, request_id):
        return {"DSN": dsn, "released": True, "finished": True}
    _visible_device(services, dsn, caller)
    fleet = _fleet(services)
    with DeviceTask.running(services, caller, dsn, budget, request_id) as task:
        row = task.claim(must_exist=True)
        if row is None or not row.status:  # released meanwhile
            task.release()
            raise NotFound("No such device.")
        current = row.certificate
        thing = task.thing_name
        at = iso(task.now())
        released = _audit(
            dsn,
            "RELEASE",
            caller,
            at,
            request_id,
            "",
            owner=row.owner_sub,
            thing_name=thing,
            certificate_id=current.certificate_id if current else "",
        )
        unfinished = (
            task.end_access(
                lambda held: fleet.commit_release(
                    dsn, request_id, thing, held, released, released_by=caller.sub
                ),
                Release.DELETE,
                owner_sub="",
                status="",
                created_at="",
                updated_at=at,
                ungroup=thing,
            ).unfinished
            > 0
        )
    if unfinished:
        logger.warning("release left to the sweeper")
    answer: dict[str, str | bool] = {"DSN": dsn, "released": True, "finished": not unfinished}
    if current is not None:
        answer["revokedCertificateId"] = current.certificate_id
    return answer


def _finish_release(
    dsn: str, caller: User, services: Services, budget: Budget, request_id: str
) -> bool:
    """Finish a release its own user (or an administrator) repeats; False when the row is not
    an unfinished release of theirs (the caller then sees what anyone would)."""
    require_member(caller)
    row = services.store.get(dsn)
    if row is None or not row.releasing:
        return False
    if not (caller.is_admin or (row.released_by and row.released_by == caller.sub)):
        return False
    with DeviceTask.running(services, caller, dsn, budget, request_id) as task:
        task.row = task.claim(must_exist=True)  # recovers what the release left
        if task.row is None or not task.row.releasing:
            return False  # provisioned again meanwhile: not a release to finish any more
        if task.recover(Release.DELETE).unfinished:
            raise DependencyFailed("RELEASE_DEVICE")
        task.disconnect()
    return True


def _audit(
    dsn: str,
    event: str,
    caller: User,
    at: str,
    request_id: str,
    transfer_id: str,
    **details: str,
) -> AuditEvent:
    return AuditEvent(
        subject=f"device#{dsn}",
        event=event,
        actor=caller.sub,
        at=at,
        request_id=request_id,
        details={"transfer_id": transfer_id, **details},
    )
