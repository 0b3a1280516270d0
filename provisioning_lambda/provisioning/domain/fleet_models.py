"""Fleet management requests: the list query and its page token, transfer codes.

Everything a caller sends to GET /devices, POST /devices/{dsn}/transfer|claim and
DELETE /devices/{dsn}/transfer is validated here, with stable codes; nothing here calls AWS.

The page token is opaque to clients but not secret: base64url of a small JSON object holding
a fingerprint of the query it continues (the caller's ``sub`` and the filters) and the
position reached. A token is refused (400 ``NEXT_TOKEN_INVALID``) unless it parses exactly,
names this query and this caller, and every position field has the shape the index gives it.
It can never widen what a caller sees: the index partition a page reads is always derived
from the caller and the filters, never from the token, so a forged position only moves within
the caller's own rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from provisioning.domain.errors import BadRequest, Forbidden
from provisioning.domain.models import (
    DSN_PATTERN,
    DeviceRecord,
    DeviceStatus,
    User,
    _body_text,
    _json_object,
)

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
LIST_STATUSES = tuple(DeviceStatus)
QUERY_PARAMETERS = frozenset({"limit", "nextToken", "owner", "status", "expiringBefore"})
ADMIN_FILTERS = ("owner", "status", "expiringBefore")
MAX_TOKEN_CHARS = 2048
# A Cognito sub is a UUID; other pools' subjects stay within this shape.
OWNER_PATTERN = re.compile(r"[A-Za-z0-9-]{1,128}", re.ASCII)
# listed_at = "<created_at ISO-8601 UTC>#<DSN>": unique per row, newest first when descending.
ISO_INSTANT = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"
LISTED_AT_PATTERN = re.compile(ISO_INSTANT + r"#[A-Za-z0-9_-]{1,115}", re.ASCII)
ISO_PATTERN = re.compile(ISO_INSTANT, re.ASCII)

# Transfer codes: 12 symbols of a 30-letter alphabet without look-alikes (about 59 bits),
# shown as XXXX-XXXX-XXXX; valid for TRANSFER_TTL_SECONDS, at most TRANSFER_MAX_ATTEMPTS tries.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CODE_SYMBOLS = 12
TRANSFER_TTL_SECONDS = 15 * 60
TRANSFER_MAX_ATTEMPTS = 5
CODE_PATTERN = re.compile(f"[{CODE_ALPHABET}]{{{CODE_SYMBOLS}}}", re.ASCII)


# --------------------------------------------------------------------------- the list query


@dataclass(frozen=True)
class ListQuery:
    """One page request of GET /devices, validated."""

    caller: User
    limit: int = DEFAULT_LIMIT
    owner: str = ""  # whose devices: the caller's own for a member
    status: str = ""
    expiring_before: str = ""
    position: Mapping[str, Any] = field(default_factory=dict)  # from the token; {} = first page

    @property
    def mode(self) -> str:
        """Which index answers: owner, status, expiry or all."""
        if self.expiring_before:
            return "expiry"
        if self.status:
            return "status"
        if self.owner:
            return "owner"
        return "all"

    def fingerprint(self) -> str:
        """Names this query and caller: a token carries it and must match."""
        text = "\0".join(
            (self.caller.sub, self.mode, self.owner, self.status, self.expiring_before)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def parse_list_query(
    caller: User,
    single: Mapping[str, str] | None,
    multi: Mapping[str, list[str]] | None,
) -> ListQuery:
    """Validate GET /devices's query string; raise BadRequest/Forbidden with stable codes."""
    params: dict[str, str] = {}
    for name, values in (multi or {}).items():
        if len(values) != 1:
            raise BadRequest(f"{name[:40]!r} is given more than once.", "DUPLICATE_PARAMETER")
        params[name] = values[0]
    for name, value in (single or {}).items():
        params.setdefault(name, value)
    unknown = sorted(set(params) - QUERY_PARAMETERS)
    if unknown:
        raise BadRequest(f"Unknown query parameter: {unknown[0][:40]!r}.", "UNKNOWN_PARAMETER")

    limit = DEFAULT_LIMIT
    if "limit" in params:
        raw = params["limit"]
        if not re.fullmatch(r"[0-9]{1,3}", raw, re.ASCII) or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadRequest(
                f"limit must be a whole number from 1 to {MAX_LIMIT}.", "LIMIT_INVALID"
            )
        limit = int(raw)

    filters = [name for name in ADMIN_FILTERS if name in params]
    if filters and not caller.is_admin:
        raise Forbidden(
            "Only administrators may filter by owner, status or expiry.", "FILTER_NOT_ALLOWED"
        )
    if len(filters) > 1:
        raise BadRequest(
            "Use at most one of owner, status and expiringBefore.", "FILTERS_EXCLUSIVE"
        )
    owner = params.get("owner", "")
    if "owner" in params and not OWNER_PATTERN.fullmatch(owner):
        raise BadRequest("owner must be a user's sub.", "OWNER_INVALID")
    status = params.get("status", "")
    if "status" in params and status not in LIST_STATUSES:
        raise BadRequest(f"status must be one of: {', '.join(LIST_STATUSES)}.", "STATUS_INVALID")
    expiring_before = ""
    if "expiringBefore" in params:
        expiring_before = _parse_instant(params["expiringBefore"])

    query = ListQuery(
        caller=caller,
        limit=limit,
        owner=owner if caller.is_admin else caller.sub,
        status=status,
        expiring_before=expiring_before,
    )
    if "nextToken" in params:
        query = ListQuery(
            caller=query.caller,
            limit=query.limit,
            owner=query.owner,
            status=query.status,
            expiring_before=query.expiring_before,
            position=decode_token(params["nextToken"], query),
        )
    return query


def _parse_instant(raw: str) -> str:
    """An ISO-8601 date or instant, as the rows store it (UTC, seconds, Z)."""
    error = BadRequest(
        "expiringBefore must be an ISO-8601 date or UTC time, e.g. 2027-01-31 or "
        "2027-01-31T00:00:00Z.",
        "EXPIRING_BEFORE_INVALID",
    )
    if len(raw) > 32 or not re.fullmatch(r"[0-9T:+.Z-]+", raw, re.ASCII):
        raise error
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise error from None
    if moment.tzinfo is None:
        if "T" in raw:
            raise error  # a time without a zone is ambiguous
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_token(query: ListQuery, position: Mapping[str, Any]) -> str:
    payload = json.dumps({"v": 1, "q": query.fingerprint(), "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(raw: str, query: ListQuery) -> dict[str, Any]:
    """The position a token names, once it is known to continue exactly this query."""
    error = BadRequest(
        "nextToken is not a token this query returned; start again without it.",
        "NEXT_TOKEN_INVALID",
    )
    if not raw or len(raw) > MAX_TOKEN_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", raw):
        raise error
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise error from None
    if not isinstance(data, dict) or set(data) != {"v", "q", "p"} or data["v"] != 1:
        raise error
    if not isinstance(data["q"], str) or not hmac.compare_digest(data["q"], query.fingerprint()):
        raise error
    position = data["p"]
    if not isinstance(position, dict) or not _valid_position(position, query):
        raise error
    return position


def _valid_position(position: dict[str, Any], query: ListQuery) -> bool:
    if query.mode != "expiry":
        # One cursor for every stream: the last listed_at returned.
        return set(position) == {"after"} and _matches(LISTED_AT_PATTERN, position["after"])
    # The expiry index's sort key is not unique: each shard resumes from its own last row.
    # A shard absent from the position is exhausted.
    if len(position) > 16:
        return False
    for shard, key in position.items():
        if not re.fullmatch(r"exp#[0-9]{1,2}", shard):
            return False
        if key is None:  # the shard is read from its start
            continue
        if not isinstance(key, dict):
            return False
        if set(key) != {"dsn", "not_after"}:
            return False
        if not _matches(DSN_PATTERN, key["dsn"]) or not _matches(ISO_PATTERN, key["not_after"]):
            return False
    return True


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


# --------------------------------------------------------------------------- transfer codes


@dataclass(frozen=True)
class TransferCode:
    """A new code as shown to the owner once, and what the row keeps of it."""

    code: str  # shown once, never stored
    salt: str
    digest: str


def new_transfer_code(dsn: str, transfer_id: str) -> TransferCode:
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_SYMBOLS))
    salt = secrets.token_hex(16)
    return TransferCode(code=code, salt=salt, digest=code_digest(code, salt, dsn, transfer_id))


def code_digest(code: str, salt: str, dsn: str, transfer_id: str) -> str:
    """What the row stores: a keyed hash, bound to the device and this transfer."""
    message = f"{dsn}\0{transfer_id}\0{code}".encode()
    return hmac.new(bytes.fromhex(salt), message, hashlib.sha256).hexdigest()


def code_matches(code: str, salt: str, digest: str, dsn: str, transfer_id: str) -> bool:
    try:
        computed = code_digest(code, salt, dsn, transfer_id)
    except ValueError:
        return False
    return hmac.compare_digest(computed, digest)


def display_code(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def parse_code_body(body: str | None, *, base64_encoded: bool = False, required: bool) -> str:
    """``{"code": "XXXX-XXXX-XXXX"}`` (any case, dashes and spaces ignored); "" if no body is
    given and none is required."""
    if not required and (body is None or not body.strip()):
        return ""
    data = _json_object(_body_text(body, base64_encoded))
    unknown = sorted(set(data) - {"code"})
    if unknown:
        raise BadRequest(f"Unknown field: {unknown[0][:40]!r}.", "UNKNOWN_FIELD")
    if "code" not in data or data["code"] is None:
        raise BadRequest("code is required.", "FIELD_MISSING")
    if not isinstance(data["code"], str):
        raise BadRequest("code must be a string.", "FIELD_TYPE")
    code = re.sub(r"[\s-]", "", data["code"]).upper()
    if not CODE_PATTERN.fullmatch(code):
        raise BadRequest(
            f"code must be the {CODE_SYMBOLS}-letter transfer code the owner was given.",
            "CODE_INVALID",
        )
    return code


# --------------------------------------------------------------------------- stored shapes

OWNER_INDEX = "OwnerIndex"
STATUS_INDEX = "StatusIndex"
EXPIRY_INDEX = "ExpiryIndex"
EXPIRY_SHARDS = 4  # interfaces: exp#<0..3>
TRANSFER_FIELDS = (
    "transfer_id",
    "transfer_digest",
    "transfer_salt",
    "transfer_until",
    "transfer_attempts",
    "transfer_by",
    "transfer_returned",  # the last request that gave its try back (fleet_store.return_attempt)
)


@dataclass(frozen=True)
class Transfer:
    """A device's pending transfer, as its row keeps it, with the row's owner."""

    transfer_id: str
    digest: str
    salt: str
    until: int
    attempts: int
    started_by: str
    owner_sub: str = ""


@dataclass(frozen=True)
class ListedDevice:
    """A row as a list shows it, with its position in the lists."""

    record: DeviceRecord
    listed_at: str
    transfer_until: int = 0
