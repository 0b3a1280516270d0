"""What the API answers about a device and an allowlist entry: the response bodies, kept apart
from the stored rows (domain/models.py's ``DeviceRecord``, domain/attestation.py's
``AllowlistEntry``) so that a field added to a row is never answered by accident."""

from __future__ import annotations

from provisioning.domain.attestation import AllowlistEntry, public_key_pem
from provisioning.domain.models import DeviceRecord, User


def device_view(record: DeviceRecord, caller: User) -> dict[str, str | bool]:
    """What the owner or an administrator may read of a device; never key material."""
    return {
        "DSN": record.dsn,
        "thingName": record.thing_name,
        "status": record.status or "PENDING",
        "certificateId": record.certificate_id,
        "serial": record.serial,
        "notBefore": record.not_before,
        "notAfter": record.not_after,
        "keyAlgorithm": record.key_algorithm,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "ownedByCaller": record.owner_sub == caller.sub,
    }


def allowlist_entry_view(entry: AllowlistEntry) -> dict[str, str]:
    """An allowlist entry as an administrator reads it (who loaded or blocked it stays in the
    audit trail)."""
    return {
        "DSN": entry.dsn,
        "attestationPublicKey": public_key_pem(entry.public_key_der)
        if entry.public_key_der
        else "",
        "status": entry.status,
        "createdAt": entry.created_at,
        "updatedAt": entry.updated_at,
        "blockedAt": entry.blocked_at,
    }
