"""DynamoDB: the manufacturer allowlist (one item per DSN: attestation key, ALLOWED or BLOCKED).

Every write is one conditional write and safe to repeat: adding the same key again, or
blocking a blocked DSN, changes nothing (botocore repeats a write whose answer was lost).
A listed key is never replaced through the API: a different key for a listed DSN is a
conflict the operator resolves by hand, never a silent takeover of the device's identity.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..attestation import ALLOWED, BLOCKED, AllowlistEntry
from .aws import aws_step, error_code

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
    )


class AllowlistStore:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self._table = table

    def get(self, dsn: str) -> AllowlistEntry | None:
        with aws_step("READ_ALLOWLIST"):
            response = self.client.get_item(
                TableName=self._table, Key={"dsn": _s(dsn)}, ConsistentRead=True
            )
        item = response.get("Item")
        return _entry(item) if item else None

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
                if existing.public_key_der == public_key_der:
                    return UNCHANGED
                return KEY_CONFLICT
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
        return _entry(response["Attributes"])
