"""DynamoDB for fleet management: listing devices from indexes, transfers, release.

Indexes on the devices table this module reads (never a scan):

- ``OwnerIndex`` (``owner_sub``, ``listed_at``): a user's devices, newest first;
- ``StatusIndex`` (``status``, ``listed_at``): every device in one status, newest first; an
  administrator's unfiltered list merges the ACTIVE and REVOKED partitions;
- ``ExpiryIndex`` (``expiry_shard``, ``not_after``; sparse, written by the expiry watch):
  devices whose certificate expires before a date, soonest first, merged over its shards.

``listed_at`` is ``<created_at>#<DSN>``: unique per row, so one value is a position in every
one of these partitions at once, and a device that changes partition between two pages (revoked,
transferred) is never listed twice.

A pending transfer lives on the device row as ``transfer_*`` attributes (the code only as a
keyed hash). Starting, cancelling, counting an attempt and giving a matching code's attempt
back do not take the device's lease; they change only those attributes, each conditional on
the transfer they mean, and cancelling waits for a request that holds the lease (a claim) to
finish.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError

from provisioning.adapters.aws import aws_step, error_code
from provisioning.adapters.store import (
    DeviceStore,
    _audit_item,
    _record_from_item,
    _s,
    _token,
    _Update,
    retire,
    sweep_shard,
)
from provisioning.domain.errors import Conflict, NotFound
from provisioning.domain.fleet_models import (
    EXPIRY_INDEX,
    EXPIRY_SHARDS,
    TRANSFER_FIELDS,
    ListedDevice,
    Transfer,
)
from provisioning.domain.models import AuditEvent, CertificateRef, DeviceRecord, DeviceStatus


def _listed(item: dict[str, Any]) -> ListedDevice:
    return ListedDevice(
        _record_from_item(item),
        item.get("listed_at", {}).get("S", ""),
        int(item.get("transfer_until", {}).get("N", "0")),
    )


class FleetStore(DeviceStore):
    # ------------------------------------------------------------------ lists

    def newest(
        self, index: str, key: str, values: tuple[str, ...], after: str, limit: int
    ) -> list[ListedDevice]:
        """Up to ``limit`` rows of one or more partitions of a listed_at index, newest first,
        strictly older than ``after`` (a listed_at; "" for the first page)."""
        streams = [self._newest_in(index, key, value, after, limit) for value in values]
        merged = heapq.merge(*streams, key=lambda d: d.listed_at, reverse=True)
        return [device for device, _ in zip(merged, range(limit), strict=False)]

    def _newest_in(
        self, index: str, key: str, value: str, after: str, limit: int
    ) -> Iterator[ListedDevice]:
        condition = "#k = :k" + (" AND listed_at < :after" if after else "")
        values = {":k": _s(value), **({":after": _s(after)} if after else {})}
        start: dict[str, Any] | None = None
        yielded = 0
        while yielded < limit:
            with aws_step("LIST_DEVICES"):
                response = self.client.query(
                    TableName=self._devices,
                    IndexName=index,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames={"#k": key},
                    ExpressionAttributeValues=values,
                    ScanIndexForward=False,
                    Limit=limit,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            for item in response.get("Items", []):  # only rows carrying both keys
                yielded += 1
                yield _listed(item)
            start = response.get("LastEvaluatedKey")
            if not start:
                return

    def expiring_before(
        self, before: str, positions: Mapping[str, Mapping[str, str] | None] | None, limit: int
    ) -> tuple[list[ListedDevice], dict[str, dict[str, str] | None]]:
        """Rows whose certificate expires before ``before``, soonest first, merged over the
        expiry index's shards; and where each shard stopped.

        ``positions`` maps each shard still to read to its last listed row (None: from its
        start); None on the first page means every shard from its start. A shard the answer
        leaves out is exhausted.
        """
        state: Mapping[str, Mapping[str, str] | None] = (
            positions if positions is not None else {f"exp#{n}": None for n in range(EXPIRY_SHARDS)}
        )
        heads: list[tuple[str, str, str]] = []
        ended: dict[str, bool] = {}
        for shard, last in state.items():
            start = None
            if last is not None:
                start = {
                    "dsn": _s(last["dsn"]),
                    "expiry_shard": _s(shard),
                    "not_after": _s(last["not_after"]),
                }
            with aws_step("LIST_DEVICES"):
                response = self.client.query(
                    TableName=self._devices,
                    IndexName=EXPIRY_INDEX,
                    KeyConditionExpression="expiry_shard = :s AND not_after < :before",
                    ExpressionAttributeValues={":s": _s(shard), ":before": _s(before)},
                    ScanIndexForward=True,
                    Limit=limit,
                    **({"ExclusiveStartKey": start} if start else {}),
                )
            heads += [
                (item["not_after"]["S"], item["dsn"]["S"], shard)
                for item in response.get("Items", [])
            ]
            ended[shard] = not response.get("LastEvaluatedKey")
        # Each shard is in order and gave at most `limit` rows: the first `limit` of them all
        # are the next `limit` rows of the merged order.
        chosen = sorted(heads)[:limit]
        reached: dict[str, dict[str, str] | None] = {}
        for shard in state:
            fetched = sum(1 for h in heads if h[2] == shard)
            taken = [h for h in chosen if h[2] == shard]
            if ended[shard] and len(taken) == fetched:
                continue  # exhausted
            reached[shard] = (
                {"dsn": taken[-1][1], "not_after": taken[-1][0]}
                if taken
                else (dict(last) if (last := state[shard]) is not None else None)
            )
        rows = self._rows([h[1] for h in chosen])
        return [rows[h[1]] for h in chosen if h[1] in rows], reached

    def _rows(self, dsns: list[str]) -> dict[str, ListedDevice]:
        """The full rows (the expiry index need not project what a list shows)."""
        found: dict[str, ListedDevice] = {}
        keys = [{"dsn": _s(dsn)} for dsn in dict.fromkeys(dsns)]
        attempts = 0
        while keys and attempts < 5:
            attempts += 1
            with aws_step("LIST_DEVICES"):
                response = self.client.batch_get_item(
                    RequestItems={self._devices: {"Keys": keys[:100], "ConsistentRead": True}}
                )
            for item in response.get("Responses", {}).get(self._devices, []):
                found[item["dsn"]["S"]] = _listed(item)
            unprocessed = response.get("UnprocessedKeys", {}).get(self._devices, {})
            keys = list(unprocessed.get("Keys", [])) + keys[100:]
        return found

    # ------------------------------------------------------------------ transfers

    def pending_transfer(self, dsn: str) -> Transfer | None:
        """The device's transfer, if its row has one (pending or expired)."""
        with aws_step("READ_DEVICE"):
            response = self.client.get_item(
                TableName=self._devices, Key={"dsn": _s(dsn)}, ConsistentRead=True
            )
        return _transfer_of(response.get("Item") or {})

    def start_transfer(
        self,
        dsn: str,
        owner_sub: str,
        transfer: Transfer,
        audit: AuditEvent,
        request_id: str,
    ) -> None:
        """Write a new pending transfer (replacing any other), if ``owner_sub`` still owns the
        provisioned device."""
        update = _Update()
        update.set("transfer_id", _s(transfer.transfer_id))
        update.set("transfer_digest", _s(transfer.digest))
        update.set("transfer_salt", _s(transfer.salt))
        update.set("transfer_until", {"N": str(transfer.until)})
        update.set("transfer_attempts", {"N": "0"})
        update.set("transfer_by", _s(transfer.started_by))
        write = {
            "Update": {
                "TableName": self._devices,
                "Key": {"dsn": _s(dsn)},
                "UpdateExpression": "SET " + ", ".join(update.sets),
                "ConditionExpression": "owner_sub = :owner AND attribute_exists(#status)",
                "ExpressionAttributeNames": {**update.names, "#status": "status"},
                "ExpressionAttributeValues": {**update.values, ":owner": _s(owner_sub)},
            }
        }
        self._write_with_audit("START_TRANSFER", request_id, write, audit, NotFound)

    def cancel_transfer(
        self, dsn: str, transfer_id: str, audit: AuditEvent, request_id: str, now: int
    ) -> None:
        """Drop the pending transfer ``transfer_id``; refused (409) while a request holds the
        device's lease, so a claim in progress finishes first."""
        write = {
            "Update": {
                "TableName": self._devices,
                "Key": {"dsn": _s(dsn)},
                "UpdateExpression": "REMOVE " + ", ".join(TRANSFER_FIELDS),
                "ConditionExpression": "transfer_id = :tid AND "
                "(attribute_not_exists(lease_request_id) OR lease_until < :now)",
                "ExpressionAttributeValues": {":tid": _s(transfer_id), ":now": {"N": str(now)}},
            }
        }
        self._write_with_audit("CANCEL_TRANSFER", request_id, write, audit, Conflict)

    def count_attempt(self, dsn: str, now: int, max_attempts: int) -> Transfer | None:
        """Count one try at a pending, unexpired transfer's code before it is compared; the
        transfer after counting, or None when there is none to try (none, expired, used up)."""
        with aws_step("COUNT_TRANSFER_ATTEMPT"):
            try:
                response = self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression="ADD transfer_attempts :one",
                    ConditionExpression="attribute_exists(transfer_id) AND transfer_until > :now"
                    " AND transfer_attempts < :max",
                    ExpressionAttributeValues={
                        ":one": {"N": "1"},
                        ":now": {"N": str(now)},
                        ":max": {"N": str(max_attempts)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as error:
                if error_code(error) == "ConditionalCheckFailedException":
                    return None
                raise
        return _transfer_of(response["Attributes"])

    def return_attempt(self, dsn: str, transfer_id: str, request_id: str) -> None:
        """Give back the try ``count_attempt`` took for a code that matched: only wrong codes
        use tries up. Once per request: a repeated write (a lost answer) finds its own mark and
        changes nothing; a transfer gone or replaced meanwhile has nothing to give back."""
        with aws_step("RETURN_TRANSFER_ATTEMPT"):
            try:
                self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression="ADD transfer_attempts :back SET transfer_returned = :rid",
                    ConditionExpression="transfer_id = :tid AND transfer_attempts > :zero AND "
                    "(attribute_not_exists(transfer_returned) OR transfer_returned <> :rid)",
                    ExpressionAttributeValues={
                        ":back": {"N": "-1"},
                        ":zero": {"N": "0"},
                        ":tid": _s(transfer_id),
                        ":rid": _s(request_id),
                    },
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise

    def drop_transfer(self, dsn: str, transfer_id: str, audit: AuditEvent, request_id: str) -> None:
        """Drop a transfer whatever holds the lease (its attempts are used up or it expired)."""
        write = {
            "Update": {
                "TableName": self._devices,
                "Key": {"dsn": _s(dsn)},
                "UpdateExpression": "REMOVE " + ", ".join(TRANSFER_FIELDS),
                "ConditionExpression": "transfer_id = :tid",
                "ExpressionAttributeValues": {":tid": _s(transfer_id)},
            }
        }
        # Gone already (claimed, cancelled or replaced meanwhile): nothing to drop.
        with contextlib.suppress(Conflict):
            self._write_with_audit("CANCEL_TRANSFER", request_id, write, audit, Conflict)

    def lease_for_claim(
        self, dsn: str, transfer_id: str, request_id: str, now: int, lease_until: int
    ) -> DeviceRecord:
        """Take the device's lease for the claim of transfer ``transfer_id``."""
        with aws_step("CLAIM_DEVICE"):
            try:
                response = self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression="SET lease_request_id = :rid, lease_until = :until, "
                    "sweep = :sweep",
                    ConditionExpression="transfer_id = :tid AND transfer_until > :now AND "
                    "(attribute_not_exists(lease_request_id) OR lease_until < :now)",
                    ExpressionAttributeValues={
                        ":rid": _s(request_id),
                        ":until": {"N": str(lease_until)},
                        ":now": {"N": str(now)},
                        ":sweep": _s(sweep_shard(dsn)),
                        ":tid": _s(transfer_id),
                    },
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                item = error.response.get("Item", {})
                if item.get("lease_request_id", {}).get("S") == request_id:
                    record = self.get(dsn)  # our own first attempt took it; its answer was lost
                    if record is not None:
                        return record
                if item.get("transfer_id", {}).get("S") != transfer_id:
                    raise NotFound("The transfer was cancelled.", "TRANSFER_NOT_FOUND") from None
                lease_left = int(item.get("lease_until", {}).get("N", "0")) - now
                if lease_left >= 0 and "lease_request_id" in item:
                    raise Conflict(
                        "Another request is working on this device; retry in a few seconds.",
                        "REQUEST_IN_FLIGHT",
                        retry_after=max(1, lease_left + 1),
                    ) from None
                raise NotFound("The transfer has expired.", "TRANSFER_NOT_FOUND") from None
        return _record_from_item(response["Attributes"])

    def commit_claim(
        self,
        dsn: str,
        request_id: str,
        new_owner: str,
        at: str,
        held: tuple[CertificateRef, ...],
        audit: AuditEvent,
    ) -> None:
        """The device is the new owner's: no certificate named (every one it held written down
        to be revoked everywhere), the transfer gone, the audit entry kept; the lease stays."""
        update = _Update()
        update.set("owner_sub", _s(new_owner))
        update.set("status", _s(DeviceStatus.REVOKED.value))
        update.set("updated_at", _s(at))
        retire(update, held)
        update.remove(*TRANSFER_FIELDS)
        write = {"Update": update.request(self._devices, dsn, request_id)}
        self._transact("CLAIM_TRANSFER", request_id, write, (audit,))

    def commit_release(
        self,
        dsn: str,
        request_id: str,
        thing_name: str,
        held: tuple[CertificateRef, ...],
        audit: AuditEvent,
        released_by: str = "",
    ) -> None:
        """The device is nobody's: no owner, status, certificate, list position or transfer;
        every certificate it held written down to be revoked and the thing to leave its group
        (``ungroup``), with who released it (who may repeat the release until it is done); the
        lease stays until both are done and the row is deleted."""
        update = _Update()
        update.set("ungroup", _s(thing_name))
        update.set("released_by", _s(released_by))
        retire(update, held)
        update.remove("owner_sub", "status", "created_at", "listed_at", *TRANSFER_FIELDS)
        write = {"Update": update.request(self._devices, dsn, request_id)}
        self._transact("RELEASE_DEVICE", request_id, write, (audit,))

    def _write_with_audit(
        self,
        step: str,
        request_id: str,
        write: dict[str, Any],
        audit: AuditEvent,
        refused: type[NotFound] | type[Conflict],
    ) -> None:
        """One conditional row write and its audit entry, atomically. A refused condition
        raises ``refused``; DynamoDB applies a repeated attempt (a lost answer) once."""
        items = [write, {"Put": {"TableName": self._audit, "Item": _audit_item(audit)}}]
        with aws_step(step):
            try:
                self.client.transact_write_items(
                    TransactItems=items, ClientRequestToken=_token(request_id, step)
                )
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                if refused is NotFound:
                    raise NotFound("No such device.") from None
                raise Conflict(
                    "Another request is working on this device, or the transfer changed; "
                    "retry in a few seconds.",
                    "REQUEST_IN_FLIGHT",
                    retry_after=1,
                ) from None


def _transfer_of(item: dict[str, Any]) -> Transfer | None:
    if "transfer_id" not in item:
        return None
    return Transfer(
        transfer_id=item["transfer_id"]["S"],
        digest=item.get("transfer_digest", {}).get("S", ""),
        salt=item.get("transfer_salt", {}).get("S", ""),
        until=int(item.get("transfer_until", {}).get("N", "0")),
        attempts=int(item.get("transfer_attempts", {}).get("N", "0")),
        started_by=item.get("transfer_by", {}).get("S", ""),
        owner_sub=item.get("owner_sub", {}).get("S", ""),
    )
