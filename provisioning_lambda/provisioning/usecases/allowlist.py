"""The manufacturer allowlist, as plain Python: who may be provisioned, and the admin routes.

- ``load_entries`` (POST /allowlist): up to ``MAX_BATCH`` rows of ``{DSN, attestationPublicKey}``;
  each row is answered on its own (ADDED, UNCHANGED, or REFUSED with a stable code), so a
  batch can be sent again as it is after any failure.
- ``read_entry`` (GET /allowlist/{dsn}).
- ``block_entry`` (POST /allowlist/{dsn}/block): the DSN is marked BLOCKED first, so no new
  request can provision it, then its current certificate is revoked through
  ``service.revoke_device`` (crash-safe: its row writes the revocation down before doing it).
  A 200 means both are done; any other answer leaves the DSN blocked, and repeating the call
  finishes the revocation. While a request holds the device's lease (its first provisioning
  among them: the row has no status yet) the block answers 409 REQUEST_IN_FLIGHT with
  Retry-After: that request reads the allowlist again before it commits and rolls back, or
  committed already, and the repeated block revokes what it committed.

Only members of the Administrators group may use the admin routes.
"""

from __future__ import annotations

from typing import Any

from provisioning.domain.attestation import AllowlistEntry, load_attestation_public_key
from provisioning.domain.budget import ATTEMPT_SECONDS, HARD_STOP_SECONDS, Budget
from provisioning.domain.errors import BadRequest, Conflict, Forbidden, NotFound
from provisioning.domain.models import DSN_PATTERN, User, _body_text, _json_object, parse_dsn
from provisioning.domain.views import allowlist_entry_view
from provisioning.lifecycle.lease import iso
from provisioning.ports import AllowlistPort, Services
from provisioning.usecases.provision import revoke_device

MAX_BATCH = 100
# 100 rows of a PEM key (about 180 characters) and a DSN, with room to spare.
MAX_LOAD_BODY_BYTES = 64 * 1024
ROW_FIELDS = frozenset({"DSN", "attestationPublicKey"})


def require_admin(caller: User) -> None:
    if not caller.is_admin:
        raise Forbidden(
            "Only members of the Administrators group may manage the allowlist.", "NOT_AN_ADMIN"
        )


def _allowlist(services: Services) -> AllowlistPort:
    if services.allowlist is None:  # a deployment without the table: a configuration error
        raise NotFound("There is no allowlist in this deployment.", "NOT_FOUND")
    return services.allowlist


def parse_load_request(body: str | None, *, base64_encoded: bool = False) -> list[Any]:
    """The body's ``devices`` list (1-100 entries); each row is checked by ``load_entries``."""
    data = _json_object(_body_text(body, base64_encoded, limit=MAX_LOAD_BODY_BYTES))
    unknown = sorted(set(data) - {"devices"})
    if unknown:
        raise BadRequest(f"Unknown field: {unknown[0][:40]!r}.", "UNKNOWN_FIELD")
    rows = data.get("devices")
    if not isinstance(rows, list) or not rows:
        raise BadRequest("devices must be a list of 1 to 100 rows.", "FIELD_TYPE")
    if len(rows) > MAX_BATCH:
        raise BadRequest(f"At most {MAX_BATCH} rows per request.", "BATCH_TOO_LARGE")
    return rows


def load_entries(
    body: str | None,
    caller: User,
    services: Services,
    budget: Budget,
    *,
    base64_encoded: bool = False,
) -> dict[str, Any]:
    require_admin(caller)
    rows = parse_load_request(body, base64_encoded=base64_encoded)
    store = _allowlist(services)
    at = iso(services.clock())
    results: list[dict[str, str]] = []
    seen: set[str] = set()
    with services.budgets.running(budget):
        for row in rows:
            dsn, outcome = _row_dsn(row), ""
            if not isinstance(row, dict) or set(row) - ROW_FIELDS:
                outcome = "ROW_INVALID"
            elif not dsn:
                outcome = "DSN_INVALID"
            elif dsn in seen:
                outcome = "DUPLICATE_ROW"
            if outcome:
                results.append(_refused(dsn, outcome))
                continue
            seen.add(dsn)
            try:
                key_der = load_attestation_public_key(row.get("attestationPublicKey", ""))
            except ValueError:
                results.append(_refused(dsn, "PUBLIC_KEY_INVALID"))
                continue
            # The row's write and its audit entry, with retries, must still fit before the
            # hard stop.
            budget.require("STORE_ALLOWLIST", seconds=2 * ATTEMPT_SECONDS + HARD_STOP_SECONDS)
            added = store.add(dsn, key_der, at, caller.sub)
            results.append(
                {"DSN": dsn, "result": added}
                if added in ("ADDED", "UNCHANGED")
                else _refused(dsn, added)
            )
    counts: dict[str, int] = {}
    for row_result in results:
        counts[row_result["result"]] = counts.get(row_result["result"], 0) + 1
    return {"results": results, "counts": counts}


def _row_dsn(row: Any) -> str:
    value = row.get("DSN") if isinstance(row, dict) else None
    return value if isinstance(value, str) and DSN_PATTERN.fullmatch(value) else ""


def _refused(dsn: str, code: str) -> dict[str, str]:
    return {"DSN": dsn, "result": "REFUSED", "code": code}


def read_entry(dsn: str, caller: User, services: Services) -> dict[str, str]:
    require_admin(caller)
    dsn = parse_dsn(dsn)
    entry: AllowlistEntry | None = _allowlist(services).get(dsn)
    if entry is None:
        raise NotFound("This DSN is not in the allowlist.", "NOT_IN_ALLOWLIST")
    return allowlist_entry_view(entry)


def block_entry(
    dsn: str, caller: User, services: Services, budget: Budget, request_id: str
) -> dict[str, str]:
    require_admin(caller)
    dsn = parse_dsn(dsn)
    store = _allowlist(services)
    with services.budgets.running(budget):
        budget.require("BLOCK_DEVICE")
        entry: AllowlistEntry = store.block(dsn, iso(services.clock()), caller.sub)
        device = services.store.get(dsn)
    now = int(services.clock().timestamp())
    in_flight = device is not None and device.lease_request_id and device.lease_until >= now
    if device is not None and in_flight and not device.status:
        # A first provisioning is running: it may still commit; only a 200 means revoked.
        raise Conflict(
            "Another request is working on this device; the DSN is blocked, repeat the "
            "block in a few seconds to finish.",
            "REQUEST_IN_FLIGHT",
            retry_after=max(1, device.lease_until - now + 1),
        )
    revoked = ""
    if device is not None and device.status:
        answer = revoke_device(dsn, caller, services, budget, request_id)
        revoked = str(answer.get("revokedCertificateId", ""))
    return allowlist_entry_view(entry) | {
        "revokedCertificateId": revoked,
        "deviceStatus": "REVOKED" if device is not None and device.status else "NONE",
    }
