"""DynamoDB: the manufacturer allowlist (one item per DSN: attestation key, ALLOWED or BLOCKED).

Every write is one conditional write and safe to repeat: adding the same key again, or
blocking a blocked DSN, changes nothing (botocore repeats a write whose answer was lost).
A listed key is never replaced through the API: a different key for a listed DSN is a
conflict the operator resolves by hand, never a silent takeover of the device's identity.

Each attested key the service certified is an item of its own, ``<dsn>#key#<sha256 of its
SPKI DER>`` (a DSN never holds ``#``, so the two kinds of item never meet; the DSN's own item
stays small). Every listed row and every block is in the audit trail (``ALLOWLIST_ADD``,
``ALLOWLIST_BLOCK``): one entry per row or block, keyed by the row's own creation or block
time, so writing it again (a repeated load or block) changes nothing.

Provisioning's commit puts the certified key's item, conditionally, in the same transaction
as the device row (``certified_key_guard``): an attested key is certified once; and it
checks there that the DSN is not BLOCKED (``not_blocked_guard``).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from provisioning.adapters.aws import aws_step, error_code
from provisioning.adapters.store import _audit_item
from provisioning.domain.attestation import (
    ALLOWED,
    BLOCKED,
    AllowlistEntry,
    device_blocked,
    replayed,
)
from provisioning.domain.models import AuditEvent, CommitGuard

ADDED = "ADDED"
UNCHANGED = "UNCHANGED"
KEY_CONFLICT = "KEY_CONFLICT"
DEVICE_BLOCKED = "DEVICE_BLOCKED"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _entry(item: dict[str, Any]) -> AllowlistEntry:
    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return AllowlistEntry(
        dsn=text("dsn"),
        public_key_der=bytes(item.get("attestation_public_key", {}).get("B", b"")),
        status=text("status") or ALLOWED,
        created_at=text("created_at"),
        updated_at=text("updated_at"),
        blocked_at=text("blocked_at"),
        blocked_by=text("blocked_by"),
        loaded_by=text("loaded_by"),
    )


KEY_MARK = "#key#"


def certified_key_item_id(dsn: str, key_id: str) -> str:
    return f"{dsn}{KEY_MARK}{key_id}"


class AllowlistStore:
    def __init__(self, client: Any, table: str, audit_table: str = "") -> None:
        self.client = client
        self._table = table
        self._audit = audit_table

    def _write_audit(self, event: AuditEvent) -> None:
        """One audit entry; its key comes from the row, so repeating it writes the same item."""
        if not self._audit:
            return
        with aws_step("STORE_AUDIT"):
            self.client.put_item(TableName=self._audit, Item=_audit_item(event))

    def get(self, dsn: str) -> AllowlistEntry | None:
        with aws_step("READ_ALLOWLIST"):
            response = self.client.get_item(
                TableName=self._table, Key={"dsn": _s(dsn)}, ConsistentRead=True
            )
        item = response.get("Item")
        return _entry(item) if item else None

    def is_certified(self, dsn: str, key_id: str) -> bool:
        """Whether the attested key ``key_id`` (attestation.certified_key_id) was certified."""
        with aws_step("READ_ALLOWLIST"):
            response = self.client.get_item(
                TableName=self._table,
                Key={"dsn": _s(certified_key_item_id(dsn, key_id))},
                ConsistentRead=True,
                ProjectionExpression="dsn",
            )
        return "Item" in response

    def certified_key_guard(self, dsn: str, key_id: str, at: str, request_id: str) -> CommitGuard:
        """The TransactWriteItems entry that records the key as certified (once only)."""
        item = {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "dsn": _s(certified_key_item_id(dsn, key_id)),
                    "certified_at": _s(at),
                    "request_id": _s(request_id),
                },
                "ConditionExpression": "attribute_not_exists(dsn)",
            }
        }
        return CommitGuard(item, replayed())

    def not_blocked_guard(self, dsn: str) -> CommitGuard:
        """The TransactWriteItems check that the DSN is not BLOCKED when the commit applies."""
        item = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": {"dsn": _s(dsn)},
                "ConditionExpression": "attribute_not_exists(dsn) OR #status <> :blocked",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":blocked": _s(BLOCKED)},
            }
        }
        return CommitGuard(item, device_blocked())

    def add(self, dsn: str, public_key_der: bytes, at: str, actor: str) -> str:
        """List the DSN with its key: ADDED, UNCHANGED (the same key), KEY_CONFLICT (another
        key is listed) or DEVICE_BLOCKED."""
        with aws_step("STORE_ALLOWLIST"):
            try:
                self.client.put_item(
                    TableName=self._table,
                    Item={
                        "dsn": _s(dsn),
                        "attestation_public_key": {"B": public_key_der},
                        "status": _s(ALLOWED),
                        "created_at": _s(at),
                        "updated_at": _s(at),
                        "loaded_by": _s(actor),
                    },
                    ConditionExpression="attribute_not_exists(dsn)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                existing = _entry(error.response.get("Item") or {"dsn": _s(dsn)})
                if existing.blocked:
                    return DEVICE_BLOCKED
                if existing.public_key_der != public_key_der:
                    return KEY_CONFLICT
                # The same row again (maybe a repeat whose first answer, or audit, was lost).
                self._write_audit(_add_event(existing, actor))
                return UNCHANGED
        self._write_audit(
            _add_event(AllowlistEntry(dsn, public_key_der, created_at=at, loaded_by=actor), actor)
        )
        return ADDED

    def block(self, dsn: str, at: str, actor: str) -> AllowlistEntry:
        """Mark the DSN BLOCKED (listed or not); the first block's time and actor are kept."""
        with aws_step("BLOCK_DEVICE"):
            response = self.client.update_item(
                TableName=self._table,
                Key={"dsn": _s(dsn)},
                UpdateExpression="SET #status = :blocked, "
                "blocked_at = if_not_exists(blocked_at, :at), "
                "blocked_by = if_not_exists(blocked_by, :actor), "
                "created_at = if_not_exists(created_at, :at), updated_at = :at",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":blocked": _s(BLOCKED),
                    ":at": _s(at),
                    ":actor": _s(actor),
                },
                ReturnValues="ALL_NEW",
            )
        entry = _entry(response["Attributes"])
        # Keyed by the first block's time and actor: every repeat writes the same entry.
        self._write_audit(
            AuditEvent(
                subject=dsn,
                event="ALLOWLIST_BLOCK",
                actor=entry.blocked_by or actor,
                at=entry.blocked_at or at,
                request_id="",
                details={},
            )
        )
        return entry


def _add_event(entry: AllowlistEntry, actor: str) -> AuditEvent:
    return AuditEvent(
        subject=entry.dsn,
        event="ALLOWLIST_ADD",
        actor=entry.loaded_by or actor,
        at=entry.created_at,
        request_id="",
        details={},
    )
