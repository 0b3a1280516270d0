"""DynamoDB: the devices table (ownership, lease, intent, current certificate) and the audit trail.

A request takes a lease on the device row with one conditional write; the lease stops two
requests for one DSN from running at once and carries the ownership check. While the row has
a lease or unfinished work it carries ``sweep`` (one of ``SWEEP_SHARDS`` values), which puts it
in the sparse ``SweepIndex`` (``sweep``, ``lease_until``): the sweeper finds expired leases
there, never by scanning the table.

While the row names an ACTIVE certificate it carries ``expiry_shard`` (one of
``EXPIRY_SHARDS`` values), which with the row's ``not_after`` puts it in the sparse
``ExpiryIndex``: the commit that names a certificate sets it, the revocation that stops naming
one removes it, in the same write (expiry.py reads the index).

Certificates being retired are top-level attributes ``retire_<certificate id>``, so that one
can be added or removed by name in any write without the others, and every write is safe to
repeat (botocore repeats a write whose answer was lost).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.adapters.aws import NoTimeForAttempt, aws_step, error_code
from provisioning.domain.errors import Conflict, LeaseLost, NotFound, OutcomeUnknown
from provisioning.domain.models import (
    AuditEvent,
    CertificateRef,
    CommitGuard,
    DeviceRecord,
    DeviceStatus,
    ExpiringDevice,
    ExpiringPage,
    Intent,
    Release,
)

SWEEP_SHARDS = 4
SWEEP_INDEX = "SweepIndex"
EXPIRY_SHARDS = 4
EXPIRY_INDEX = "ExpiryIndex"
EXPIRY_SHARD = "expiry_shard"
# The row where the expiry watch keeps its position between runs: not a device (no DSN has a
# "#"), never in an index; the watch may read and write only this key (template.yaml).
WATCH_CURSOR_KEY = "#expiry-watch"
RETIRE_PREFIX = "retire_"
# The SweepIndex partition of rows the sweeper gave up on: never among the "due#" shards it
# reads, so they cannot starve the rows behind them; a claim puts a row back in its shard.
PARKED = "parked"
# What a row holds while it names a certificate; ending access removes all of it.
CERTIFICATE_FIELDS = (
    "certificate_id",
    "certificate_arn",
    "pca_certificate_arn",
    "issuer_arn",
    "serial",
    "not_before",
    "not_after",
    EXPIRY_SHARD,
    "superseded",
    "grace_until",
)
_STRING_FIELDS = [
    f.name
    for f in dataclasses.fields(DeviceRecord)
    if f.type in ("str", str) and f.name != "lease_request_id"
]
# Attributes a commit writes from the record (the key, the owner and the creation time aside).
_COMMITTED_FIELDS = [n for n in _STRING_FIELDS if n not in ("dsn", "owner_sub", "created_at")]
_LEASE_FIELDS = "lease_request_id, lease_until, sweep"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _token(request_id: str, step: str) -> str:
    """A ClientRequestToken: DynamoDB applies a repeated transaction once (10 minutes)."""
    return hashlib.sha256(f"{request_id}:{step}".encode()).hexdigest()[:36]


def sweep_shard(dsn: str) -> str:
    return f"due#{int(hashlib.sha256(dsn.encode()).hexdigest()[:8], 16) % SWEEP_SHARDS}"


def expiry_shard(dsn: str) -> str:
    """The ExpiryIndex partition of a device: spreads the fleet over a few partitions."""
    return f"exp#{int(hashlib.sha256(dsn.encode()).hexdigest()[:8], 16) % EXPIRY_SHARDS}"


def _ref_item(ref: CertificateRef) -> dict[str, Any]:
    return {
        "M": {
            "certificate_arn": _s(ref.certificate_arn),
            "serial": _s(ref.serial),
            "issuer_arn": _s(ref.issuer_arn),
        }
    }


def _superseded_item(ref: CertificateRef) -> dict[str, Any]:
    return {"M": {"certificate_id": _s(ref.certificate_id), **_ref_item(ref)["M"]}}


def _ref_from_item(certificate_id: str, value: dict[str, Any]) -> CertificateRef:
    raw = {k: v.get("S", "") for k, v in value["M"].items()}
    return CertificateRef(
        certificate_id, raw["certificate_arn"], raw["serial"], raw.get("issuer_arn", "")
    )


def _intent_item(intent: Intent) -> dict[str, Any]:
    return {
        "M": {
            "request_id": _s(intent.request_id),
            "pca_certificate_arn": _s(intent.pca_certificate_arn),
            "previous_certificate_id": _s(intent.previous_certificate_id),
        }
    }


def _record_from_item(item: dict[str, Any]) -> DeviceRecord:
    values: dict[str, Any] = {
        name: item[name]["S"] for name in _STRING_FIELDS if "S" in item.get(name, {})
    }
    values.setdefault("owner_sub", "")  # a released row has no owner (fleet_store.py)
    values["lease_request_id"] = item.get("lease_request_id", {}).get("S", "")
    values["lease_until"] = int(item.get("lease_until", {}).get("N", "0"))
    if "intent" in item:
        raw = {k: v["S"] for k, v in item["intent"]["M"].items()}
        values["intent"] = Intent(
            request_id=raw["request_id"],
            pca_certificate_arn=raw["pca_certificate_arn"],
            previous_certificate_id=raw.get("previous_certificate_id", ""),
        )
    if "superseded" in item:
        superseded = item["superseded"]
        values["superseded"] = _ref_from_item(superseded["M"]["certificate_id"]["S"], superseded)
        values["grace_until"] = int(item.get("grace_until", {}).get("N", "0"))
    values["sweep_attempts"] = int(item.get("sweep_attempts", {}).get("N", "0"))
    values["retiring"] = tuple(
        _ref_from_item(name[len(RETIRE_PREFIX) :], value)
        for name, value in sorted(item.items())
        if name.startswith(RETIRE_PREFIX)
    )
    return DeviceRecord(**values)


def retire(update: _Update, held: tuple[CertificateRef, ...]) -> None:
    """The write that ends a device's access: every certificate it held written down to be
    retired, none named any more (no current, no superseded, no place in the expiry index)."""
    for ref in held:
        update.set(RETIRE_PREFIX + ref.certificate_id, _ref_item(ref))
    update.remove(*CERTIFICATE_FIELDS)


class _Update:
    """An UpdateExpression built clause by clause, every name through a placeholder."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def _name(self, attribute: str) -> str:
        placeholder = f"#a{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def set(self, attribute: str, value: dict[str, Any], expression: str = "{value}") -> None:
        name, placeholder = self._name(attribute), f":v{len(self.values)}"
        self.values[placeholder] = value
        self.sets.append(f"{name} = " + expression.format(value=placeholder, name=name))

    def remove(self, *attributes: str) -> None:
        self.removes.extend(self._name(attribute) for attribute in attributes)

    def request(self, table: str, dsn: str, request_id: str) -> dict[str, Any]:
        """The Update, conditional on the caller holding the device's lease."""
        lease = self._name("lease_request_id")
        self.values[":rid"] = _s(request_id)
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        return {
            "TableName": table,
            "Key": {"dsn": _s(dsn)},
            "UpdateExpression": " ".join(clauses),
            "ConditionExpression": f"{lease} = :rid",
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": self.values,
        }


class DeviceStore:
    def __init__(self, client: Any, devices_table: str, audit_table: str) -> None:
        self.client = client
        self._devices = devices_table
        self._audit = audit_table

    # ------------------------------------------------------------------ the lease

    def claim(
        self,
        dsn: str,
        owner_check: str | None,
        new_owner: str,
        request_id: str,
        now: int,
        lease_until: int,
        must_exist: bool = False,
    ) -> DeviceRecord | None:
        """Take the device's lease; return the row as it was, or None for a new device.

        ``owner_check``: the sub that must own the device (a member: a device nobody owns yet,
        their own device, or a row whose first provisioning never succeeded, with no status),
        or None (an administrator, the device itself, the service). ``new_owner``: the sub that
        owns a device that has no owner yet ("": the owner is left as it is). The lease is free
        when no request holds it or its time is past.
        """
        ownership = (
            " AND (attribute_not_exists(owner_sub) OR owner_sub = :sub"
            " OR attribute_not_exists(#status))"
            if owner_check is not None
            else ""
        )
        existence = "attribute_exists(dsn) AND " if must_exist else ""
        if owner_check is not None:
            owner = ", owner_sub = :sub"
        elif new_owner:
            owner = ", owner_sub = if_not_exists(owner_sub, :sub)"
        else:
            owner = ""
        with aws_step("CLAIM_DEVICE"):
            try:
                response = self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression="SET lease_request_id = :rid, lease_until = :until, "
                    f"sweep = :sweep{owner}",
                    ConditionExpression=f"{existence}"
                    "(attribute_not_exists(lease_request_id) OR lease_until < :now)"
                    f"{ownership}",
                    **(
                        {"ExpressionAttributeNames": {"#status": "status"}}
                        if owner_check is not None
                        else {}
                    ),
                    ExpressionAttributeValues={
                        ":rid": _s(request_id),
                        ":until": {"N": str(lease_until)},
                        ":now": {"N": str(now)},
                        **({":sub": _s(owner_check or new_owner)} if owner else {}),
                        ":sweep": _s(sweep_shard(dsn)),
                    },
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                item = error.response.get("Item", {})
                if item.get("lease_request_id", {}).get("S") == request_id:
                    # Our own first attempt took it and its answer was lost: the lease is ours,
                    # but the row as it was before is gone; read what is there now.
                    return self._reread_after_own_claim(dsn)
                _raise_claim_conflict(item, owner_check, now)
        old = response.get("Attributes")
        return _record_from_item(old) if old else None

    def _reread_after_own_claim(self, dsn: str) -> DeviceRecord | None:
        record = self.get(dsn)
        if record is None:
            return None
        # A row that only our claim created is a new device.
        return record if (record.status or record.needs_recovery) else None

    def record_intent(self, dsn: str, request_id: str, intent: Intent) -> None:
        """Write down what the request is about to do to IoT, before it does it."""
        update = _Update()
        update.set("intent", _intent_item(intent))
        self._update_leased("RECORD_INTENT", dsn, request_id, update)

    # ------------------------------------------------------------------ commits

    def commit(
        self,
        record: DeviceRecord,
        request_id: str,
        audit: AuditEvent,
        retiring: tuple[CertificateRef, ...] = (),
        superseded: CertificateRef | None = None,
        grace_until: int = 0,
        guards: tuple[CommitGuard, ...] = (),
    ) -> None:
        """Name the new certificate, drop the intent and keep the audit entry, atomically.

        ``guards``: more items in the same transaction (adapters/allowlist.py: the DSN is not
        BLOCKED; an attested key recorded as certified once); when the condition of one of them
        alone fails, the commit is refused with its refusal and nothing is written.

        Certificates in ``retiring`` are written down to be revoked; while there are any the
        lease is kept (the request goes on to retire them), otherwise it is released.
        ``superseded`` (a renewal) is the certificate the device renewed from, kept ACTIVE until
        ``grace_until``; without it the row names no superseded certificate any more.
        """
        update = _Update()
        for name in _COMMITTED_FIELDS:
            update.set(name, _s(getattr(record, name)))
        update.set("created_at", _s(record.created_at), "if_not_exists({name}, {value})")
        # The device lists' sort key (adapters/fleet_store.py): unique, fixed for the row's life.
        update.set(
            "listed_at",
            _s(f"{record.created_at}#{record.dsn}"),
            "if_not_exists({name}, {value})",
        )
        if record.status == DeviceStatus.ACTIVE and record.not_after:
            update.set(EXPIRY_SHARD, _s(expiry_shard(record.dsn)))
        else:
            update.remove(EXPIRY_SHARD)
        for ref in retiring:
            update.set(RETIRE_PREFIX + ref.certificate_id, _ref_item(ref))
        update.remove("intent")
        if superseded is not None:
            update.set("superseded", _superseded_item(superseded))
            update.set("grace_until", {"N": str(grace_until)})
        else:
            update.remove("superseded", "grace_until")
        if not retiring:
            if superseded is not None:  # the sweeper looks again when the grace period ends
                update.remove("lease_request_id")
                update.set("lease_until", {"N": str(grace_until)})
            else:
                update.remove("lease_request_id", "lease_until", "sweep")
        write = {"Update": update.request(self._devices, record.dsn, request_id)}
        self._transact("STORE_DEVICE", request_id, write, (audit,), guards)

    def commit_revocation(
        self,
        dsn: str,
        request_id: str,
        at: str,
        held: tuple[CertificateRef, ...],
    ) -> None:
        """The row says REVOKED and names no certificate; every certificate it held (the
        current one and a renewal's superseded one) is written down to be revoked everywhere.
        The lease is kept: the request goes on to revoke them."""
        update = _Update()
        update.set("status", _s(DeviceStatus.REVOKED.value))
        update.set("updated_at", _s(at))
        retire(update, held)
        self._update_leased("STORE_DEVICE", dsn, request_id, update)

    def retire_superseded(self, dsn: str, request_id: str, ref: CertificateRef) -> None:
        """A renewal is over (confirmed, or its grace period ended): the certificate the device
        renewed from is written down to be revoked everywhere, in one write."""
        update = _Update()
        update.set(RETIRE_PREFIX + ref.certificate_id, _ref_item(ref))
        update.remove("superseded", "grace_until")
        self._update_leased("STORE_DEVICE", dsn, request_id, update)

    def _update_leased(self, step: str, dsn: str, request_id: str, update: _Update) -> None:
        """One update of the row, conditional on our lease (safe to repeat while we hold it)."""
        with aws_step(step):
            try:
                self.client.update_item(**update.request(self._devices, dsn, request_id))
            except ClientError as error:
                if error_code(error) == "ConditionalCheckFailedException":
                    raise _lease_lost() from error
                raise

    def settle(
        self,
        dsn: str,
        request_id: str,
        *,
        release: Release,
        clear_intent: bool = False,
        retired: tuple[CertificateRef, ...] = (),
        audits: tuple[AuditEvent, ...] = (),
        work_left: bool = False,
        now: int = 0,
        wake_at: int = 0,
        attempts: int = 0,
        park: bool = False,
    ) -> None:
        """Write down what recovery finished (the intent resolved, certificates retired, with
        their audit entries) and, unless ``KEEP``, give the lease back.

        With ``work_left`` the row stays in the sweeper's index with an expired lease, behind
        every row already there, and ``attempts`` is how many settles in a row left work; with
        ``park`` it leaves the sweeper's queue for the parked partition (``parked``), where
        only a request for the device or an operator takes it up again. With ``wake_at`` (a
        renewal's grace deadline) it stays in the index until then. Every write here is safe to
        repeat.
        """
        # Audit entries first: a settle that dies half-way is repeated by the next recovery,
        # so the trail may hold an entry twice but never miss one.
        with aws_step("SETTLE_DEVICE"):
            for event in audits:
                self.client.put_item(TableName=self._audit, Item=_audit_item(event))
        if release is Release.DELETE and not work_left:
            write, request = (
                self.client.delete_item,
                {
                    "TableName": self._devices,
                    "Key": {"dsn": _s(dsn)},
                    "ConditionExpression": "lease_request_id = :rid",
                    "ExpressionAttributeValues": {":rid": _s(request_id)},
                },
            )
        else:
            update = _Update()
            if clear_intent:
                update.remove("intent")
            update.remove(*(RETIRE_PREFIX + ref.certificate_id for ref in retired))
            if release is not Release.KEEP:
                if work_left:
                    update.remove("lease_request_id")
                    update.set("lease_until", {"N": str(now)})
                    update.set("sweep_attempts", {"N": str(attempts)})
                    if park:
                        update.set("sweep", _s(PARKED))
                elif wake_at:
                    update.remove("lease_request_id", "sweep_attempts")
                    update.set("lease_until", {"N": str(wake_at)})
                else:
                    update.remove("lease_request_id", "lease_until", "sweep", "sweep_attempts")
            if not update.removes:
                return
            write, request = self.client.update_item, update.request(self._devices, dsn, request_id)
        with aws_step("SETTLE_DEVICE"):
            try:
                write(**request)
            except ClientError as error:
                # The lease is no longer ours: our own earlier attempt applied (its answer was
                # lost), or it expired and another request took it; either way, nothing to do.
                if error_code(error) != "ConditionalCheckFailedException":
                    raise

    def _transact(
        self,
        step: str,
        request_id: str,
        device_write: dict[str, Any],
        audits: tuple[AuditEvent, ...],
        guards: tuple[CommitGuard, ...] = (),
    ) -> None:
        """The device row's write (conditional on our lease) and its audit entries, atomically.

        When the answer says anything but success (none came, or a repeated attempt was refused
        because the first one applied, or the retries ran out), the outcome is read back: the
        transaction wrote its first audit entry or nothing at all.
        """
        items = [device_write]
        items += [{"Put": {"TableName": self._audit, "Item": _audit_item(a)}} for a in audits]
        items += [guard.item for guard in guards]
        try:
            self.client.transact_write_items(
                TransactItems=items, ClientRequestToken=_token(request_id, step)
            )
            return
        except (ClientError, BotoCoreError, NoTimeForAttempt) as error:
            failure: Exception = error
        try:
            applied = self._audit_exists(audits[0])
        except (ClientError, BotoCoreError, NoTimeForAttempt):
            raise OutcomeUnknown(step) from failure
        if applied:
            return
        if (
            isinstance(failure, ClientError)
            and error_code(failure) == "TransactionCanceledException"
        ):
            reasons = failure.response.get("CancellationReasons") or []
            codes = [reason.get("Code") for reason in reasons]
            if len(codes) == len(items) and codes[0] != "ConditionalCheckFailed":
                # Our lease still holds: a guard's condition failed (a block that landed while
                # the request worked, a key certified by another request meanwhile).
                first_guard = len(items) - len(guards)
                for guard, code in zip(guards, codes[first_guard:], strict=True):
                    if code == "ConditionalCheckFailed":
                        raise guard.refusal from failure
            raise _lease_lost() from failure
        with aws_step(step):
            raise failure

    def _audit_exists(self, event: AuditEvent) -> bool:
        response = self.client.get_item(
            TableName=self._audit,
            Key={"pk": _s(event.subject), "sk": _s(_audit_sort_key(event))},
            ConsistentRead=True,
            ProjectionExpression="pk",
        )
        return "Item" in response

    # ------------------------------------------------------------------ reads

    def get(self, dsn: str) -> DeviceRecord | None:
        with aws_step("READ_DEVICE"):
            response = self.client.get_item(
                TableName=self._devices, Key={"dsn": _s(dsn)}, ConsistentRead=True
            )
        item = response.get("Item")
        return _record_from_item(item) if item else None

    def due(self, now: int, limit: int) -> list[str]:
        """DSNs whose lease has expired (with or without work left), oldest first."""
        found: list[tuple[int, str]] = []
        with aws_step("FIND_DUE_DEVICES"):
            for shard in range(SWEEP_SHARDS):
                response = self.client.query(
                    TableName=self._devices,
                    IndexName=SWEEP_INDEX,
                    KeyConditionExpression="sweep = :shard AND lease_until < :now",
                    ExpressionAttributeValues={
                        ":shard": _s(f"due#{shard}"),
                        ":now": {"N": str(now)},
                    },
                    ProjectionExpression="dsn, lease_until",
                    Limit=limit,
                )
                found += [
                    (int(item["lease_until"]["N"]), item["dsn"]["S"])
                    for item in response.get("Items", [])
                ]
        return [dsn for _, dsn in sorted(found)[:limit]]

    def parked(self, limit: int) -> list[str]:
        """DSNs the sweeper gave up on (``settle(park=True)``), longest parked first."""
        with aws_step("FIND_PARKED_DEVICES"):
            response = self.client.query(
                TableName=self._devices,
                IndexName=SWEEP_INDEX,
                KeyConditionExpression="sweep = :parked",
                ExpressionAttributeValues={":parked": _s(PARKED)},
                ProjectionExpression="dsn",
                Limit=limit,
            )
        return [item["dsn"]["S"] for item in response.get("Items", [])]

    def expiring(
        self, shard: int, since: str, until: str, cursor: object = None, limit: int = 100
    ) -> ExpiringPage:
        """One page of a shard's devices whose certificate's notAfter is in [since, until],
        soonest first; ``cursor`` is the previous page's (None: the first page)."""
        request: dict[str, Any] = {
            "TableName": self._devices,
            "IndexName": EXPIRY_INDEX,
            "KeyConditionExpression": "#shard = :shard AND not_after BETWEEN :since AND :until",
            "ExpressionAttributeNames": {"#shard": EXPIRY_SHARD},
            "ExpressionAttributeValues": {
                ":shard": _s(f"exp#{shard}"),
                ":since": _s(since),
                ":until": _s(until),
            },
            "Limit": limit,
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = cursor
        with aws_step("FIND_EXPIRING_DEVICES"):
            response = self.client.query(**request)
        devices = tuple(
            ExpiringDevice(
                dsn=item["dsn"]["S"],
                thing_name=item.get("thing_name", {}).get("S", ""),
                not_after=item["not_after"]["S"],
            )
            for item in response.get("Items", [])
        )
        return ExpiringPage(devices, response.get("LastEvaluatedKey"))

    def count_expired(self, shard: int, before: str, cursor: object = None) -> tuple[int, object]:
        """How many of a shard's devices have a notAfter before ``before`` (one page of the
        count), and the cursor of the next page (None: done)."""
        request: dict[str, Any] = {
            "TableName": self._devices,
            "IndexName": EXPIRY_INDEX,
            "KeyConditionExpression": "#shard = :shard AND not_after < :before",
            "ExpressionAttributeNames": {"#shard": EXPIRY_SHARD},
            "ExpressionAttributeValues": {":shard": _s(f"exp#{shard}"), ":before": _s(before)},
            "Select": "COUNT",
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = cursor
        with aws_step("COUNT_EXPIRED_DEVICES"):
            response = self.client.query(**request)
        return int(response.get("Count", 0)), response.get("LastEvaluatedKey")

    def watch_cursors(self, since: str, until: str) -> dict[int, object]:
        """Where the last run of the expiry watch stopped, per shard: the ``expiring`` cursor
        to go on from. A position outside [since, until] (expired since, or past the window's
        end) is dropped: DynamoDB refuses a start key outside the query's range."""
        with aws_step("READ_WATCH_POSITION"):
            response = self.client.get_item(
                TableName=self._devices,
                Key={"dsn": _s(WATCH_CURSOR_KEY)},
                ConsistentRead=True,
                ProjectionExpression="cursors",
            )
        stored = response.get("Item", {}).get("cursors", {}).get("M", {})
        cursors: dict[int, object] = {}
        for shard, value in stored.items():
            position = {k: v.get("S", "") for k, v in value.get("M", {}).items()}
            not_after, dsn = position.get("not_after", ""), position.get("dsn", "")
            if shard.isascii() and shard.isdigit() and dsn and since <= not_after <= until:
                cursors[int(shard)] = {
                    EXPIRY_SHARD: _s(f"exp#{shard}"),
                    "not_after": _s(not_after),
                    "dsn": _s(dsn),
                }
        return cursors

    def save_watch_cursors(self, cursors: dict[int, object]) -> None:
        """Keep the watch's position (``expiring`` cursors by shard); empty: start afresh."""
        stored: dict[str, Any] = {}
        for shard, cursor in cursors.items():
            key: dict[str, Any] = cursor  # type: ignore[assignment]  # our own LastEvaluatedKey
            stored[str(shard)] = {
                "M": {"not_after": key["not_after"], "dsn": key["dsn"]},
            }
        with aws_step("STORE_WATCH_POSITION"):
            self.client.put_item(
                TableName=self._devices,
                Item={"dsn": _s(WATCH_CURSOR_KEY), "cursors": {"M": stored}},
            )


def _audit_sort_key(event: AuditEvent) -> str:
    return f"{event.at}#{event.event}#{event.request_id}#{event.details.get('certificate_id', '')}"


def _audit_item(event: AuditEvent) -> dict[str, Any]:
    item = {
        "pk": _s(event.subject),
        "sk": _s(_audit_sort_key(event)),
        "event": _s(event.event),
        "actor": _s(event.actor),
        "at": _s(event.at),
        "request_id": _s(event.request_id),
    }
    item.update({key: _s(value) for key, value in event.details.items() if value})
    return item


def _lease_lost() -> LeaseLost:
    return LeaseLost()


def _raise_claim_conflict(item: dict[str, Any], owner_check: str | None, now: int) -> None:
    if not item:
        raise NotFound("No such device.")
    owner = item.get("owner_sub", {}).get("S")
    if owner_check is not None and "status" in item and owner != owner_check:
        raise Conflict("This device is registered to another user.", "DEVICE_OWNED")
    lease_until = int(item.get("lease_until", {}).get("N", "0"))
    raise Conflict(
        "Another request is working on this device; retry in a few seconds.",
        "REQUEST_IN_FLIGHT",
        retry_after=max(1, lease_until - now + 1),
    )
