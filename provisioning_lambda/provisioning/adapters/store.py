"""DynamoDB: the devices table (ownership, lease, current certificate) and the audit trail.

A provisioning request takes a short lease on the device row with one conditional write; the
lease stops two requests for one DSN from running at once and carries the ownership check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from botocore.exceptions import ClientError

from ..errors import Conflict, NotFound
from ..models import AuditEvent, CertificateRef, DeviceRecord
from .aws import aws_step, error_code

_RECORD_FIELDS = [f.name for f in dataclasses.fields(DeviceRecord) if f.name != "orphans"]


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _ref_to_item(ref: CertificateRef) -> dict[str, Any]:
    return {
        "M": {
            "certificate_id": _s(ref.certificate_id),
            "certificate_arn": _s(ref.certificate_arn),
            "serial": _s(ref.serial),
        }
    }


def _record_from_item(item: dict[str, Any]) -> DeviceRecord:
    values = {
        name: item[name]["S"] for name in _RECORD_FIELDS if name in item and "S" in item[name]
    }
    orphans = tuple(
        CertificateRef(
            entry["M"]["certificate_id"]["S"],
            entry["M"]["certificate_arn"]["S"],
            entry["M"]["serial"]["S"],
        )
        for entry in item.get("orphans", {}).get("L", [])
    )
    return DeviceRecord(**values, orphans=orphans)


class DeviceStore:
    def __init__(self, client: Any, devices_table: str, audit_table: str) -> None:
        self.client = client
        self._devices = devices_table
        self._audit = audit_table

    def claim(
        self,
        dsn: str,
        caller_sub: str,
        is_admin: bool,
        request_id: str,
        now: int,
        lease_until: int,
        must_exist: bool = False,
    ) -> DeviceRecord | None:
        """Take the device's lease; return the row as it was, or None for a new device.

        Members may claim a device nobody owns yet, their own device, or a row whose first
        provisioning never succeeded (no status); administrators may claim any device.
        """
        ownership = (
            ""
            if is_admin
            else " AND (attribute_not_exists(owner_sub) OR owner_sub = :sub"
            " OR attribute_not_exists(#status))"
        )
        existence = "attribute_exists(dsn) AND " if must_exist else ""
        owner = "owner_sub = if_not_exists(owner_sub, :sub)" if is_admin else "owner_sub = :sub"
        with aws_step("CLAIM_DEVICE"):
            try:
                response = self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression=f"SET lease_request_id = :rid, lease_until = :until, {owner}",
                    ConditionExpression=f"{existence}"
                    "(attribute_not_exists(lease_until) OR lease_until < :now)"
                    f"{ownership}",
                    **({} if is_admin else {"ExpressionAttributeNames": {"#status": "status"}}),
                    ExpressionAttributeValues={
                        ":rid": _s(request_id),
                        ":until": {"N": str(lease_until)},
                        ":now": {"N": str(now)},
                        ":sub": _s(caller_sub),
                    },
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                _raise_claim_conflict(error.response.get("Item", {}), caller_sub, is_admin)
        old = response.get("Attributes")
        return _record_from_item(old) if old else None

    def commit(self, record: DeviceRecord, request_id: str, audit: AuditEvent) -> None:
        """Name the new certificate and drop the lease, with its audit entry, atomically."""
        names = [n for n in _RECORD_FIELDS if n not in ("dsn", "owner_sub", "created_at")]
        values = {f":{n}": _s(getattr(record, n)) for n in names}
        values[":rid"] = _s(request_id)
        values[":created_at"] = _s(record.created_at)
        # Every name goes through a placeholder: several (status, ...) are reserved words.
        attribute_names = {f"#{n}": n for n in names}
        assignments = ", ".join(f"#{n} = :{n}" for n in names)
        self._commit(
            {
                "TableName": self._devices,
                "Key": {"dsn": _s(record.dsn)},
                "UpdateExpression": f"SET {assignments}, created_at = "
                "if_not_exists(created_at, :created_at) "
                "REMOVE lease_request_id, lease_until, orphans",
                "ConditionExpression": "lease_request_id = :rid",
                "ExpressionAttributeNames": attribute_names,
                "ExpressionAttributeValues": values,
            },
            audit,
        )

    def commit_revocation(self, dsn: str, request_id: str, at: str, audit: AuditEvent) -> None:
        """The row stops naming a certificate and says REVOKED; the owner keeps the device."""
        self._commit(
            {
                "TableName": self._devices,
                "Key": {"dsn": _s(dsn)},
                "UpdateExpression": "SET #status = :revoked, updated_at = :at "
                "REMOVE certificate_id, certificate_arn, pca_certificate_arn, "
                "serial, not_before, not_after, lease_request_id, lease_until",
                "ConditionExpression": "lease_request_id = :rid",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":revoked": _s("REVOKED"),
                    ":at": _s(at),
                    ":rid": _s(request_id),
                },
            },
            audit,
        )

    def _commit(self, device_update: dict[str, Any], audit: AuditEvent) -> None:
        """The device row's update (conditional on our lease) and its audit entry, atomically."""
        with aws_step("STORE_DEVICE"):
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {"Update": device_update},
                        {"Put": {"TableName": self._audit, "Item": _audit_item(audit)}},
                    ]
                )
            except ClientError as error:
                if error_code(error) == "TransactionCanceledException":
                    raise Conflict(
                        "Another request took over this device; retry.", "REQUEST_IN_FLIGHT"
                    ) from error
                raise

    def release(
        self, dsn: str, request_id: str, keep_row: bool, orphans: tuple[CertificateRef, ...]
    ) -> None:
        """Give the lease back after a failure, remembering certificates left to clean up."""
        with aws_step("RELEASE_DEVICE"):
            try:
                if not keep_row and not orphans:
                    self.client.delete_item(
                        TableName=self._devices,
                        Key={"dsn": _s(dsn)},
                        ConditionExpression="lease_request_id = :rid",
                        ExpressionAttributeValues={":rid": _s(request_id)},
                    )
                    return
                values: dict[str, Any] = {":rid": _s(request_id)}
                expression = "REMOVE lease_request_id, lease_until"
                if orphans:
                    values[":o"] = {"L": [_ref_to_item(o) for o in orphans]}
                    expression = "SET orphans = :o " + expression
                self.client.update_item(
                    TableName=self._devices,
                    Key={"dsn": _s(dsn)},
                    UpdateExpression=expression,
                    ConditionExpression="lease_request_id = :rid",
                    ExpressionAttributeValues=values,
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise

    def get(self, dsn: str) -> DeviceRecord | None:
        with aws_step("READ_DEVICE"):
            response = self.client.get_item(
                TableName=self._devices, Key={"dsn": _s(dsn)}, ConsistentRead=True
            )
        item = response.get("Item")
        return _record_from_item(item) if item else None

    def audit(self, event: AuditEvent) -> None:
        with aws_step("AUDIT"):
            self.client.put_item(TableName=self._audit, Item=_audit_item(event))


def _audit_item(event: AuditEvent) -> dict[str, Any]:
    item = {
        "pk": _s(event.subject),
        "sk": _s(f"{event.at}#{event.event}#{event.request_id}"),
        "event": _s(event.event),
        "actor": _s(event.actor),
        "at": _s(event.at),
        "request_id": _s(event.request_id),
    }
    item.update({key: _s(value) for key, value in event.details.items() if value})
    return item


def _raise_claim_conflict(item: dict[str, Any], caller_sub: str, is_admin: bool) -> None:
    if not item:
        raise NotFound("No such device.")
    owner = item.get("owner_sub", {}).get("S")
    if not is_admin and "status" in item and owner != caller_sub:
        raise Conflict("This device is registered to another user.", "DEVICE_OWNED")
    raise Conflict(
        "Another request is provisioning this device; retry in a few seconds.",
        "REQUEST_IN_FLIGHT",
    )
