"""The list query, its page token and transfer codes: validation a caller would notice."""

from __future__ import annotations

import base64
import json

import pytest

from provisioning.domain.errors import BadRequest, Forbidden
from provisioning.domain.fleet_models import (
    CODE_ALPHABET,
    ListQuery,
    code_matches,
    decode_token,
    display_code,
    encode_token,
    new_transfer_code,
    parse_code_body,
    parse_list_query,
)
from provisioning.domain.models import User

MEMBER = User("sub-m", frozenset({"Members"}))
OTHER = User("sub-o", frozenset({"Members"}))
ADMIN = User("sub-a", frozenset({"Administrators"}))


def test_a_member_always_lists_their_own_devices() -> None:
    query = parse_list_query(MEMBER, None, None)
    assert (query.mode, query.owner, query.limit) == ("owner", "sub-m", 25)
    assert parse_list_query(ADMIN, None, None).mode == "all"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2030-01-31", "2030-01-31T00:00:00Z"),
        ("2030-01-31T10:00:00Z", "2030-01-31T10:00:00Z"),
        ("2030-01-31T12:00:00+02:00", "2030-01-31T10:00:00Z"),
    ],
)
def test_expiring_before_is_read_as_utc(raw: str, expected: str) -> None:
    query = parse_list_query(ADMIN, {"expiringBefore": raw}, None)
    assert (query.mode, query.expiring_before) == ("expiry", expected)


def test_a_token_round_trips_for_its_own_query_only() -> None:
    query = parse_list_query(MEMBER, None, None)
    token = encode_token(query, {"after": "2026-01-01T00:00:00Z#SN-1"})
    assert decode_token(token, query) == {"after": "2026-01-01T00:00:00Z#SN-1"}
    for other in (
        parse_list_query(OTHER, None, None),
        parse_list_query(ADMIN, None, None),
        parse_list_query(ADMIN, {"owner": "sub-m"}, None),
    ):
        with pytest.raises(BadRequest) as refused:
            decode_token(token, other)
        assert refused.value.code == "NEXT_TOKEN_INVALID"


@pytest.mark.parametrize(
    "position",
    [
        {"after": "not a position"},
        {"after": 5},
        {"after": "2026-01-01T00:00:00Z#SN-1", "extra": 1},
        {},
        {"exp#0": None},
    ],
)
def test_a_token_with_a_position_of_the_wrong_shape_is_refused(position: object) -> None:
    query = parse_list_query(MEMBER, None, None)
    payload = {"v": 1, "q": query.fingerprint(), "p": position}
    raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(BadRequest):
        decode_token(raw, query)


def test_expiry_positions_name_shards_and_rows() -> None:
    query = parse_list_query(ADMIN, {"expiringBefore": "2030-01-01"}, None)
    good = {"exp#0": None, "exp#2": {"dsn": "SN-1", "not_after": "2029-01-01T00:00:00Z"}}
    assert decode_token(encode_token(query, good), query) == good
    bad = {"exp#2": {"dsn": "SN 1", "not_after": "2029-01-01T00:00:00Z"}}
    with pytest.raises(BadRequest):
        decode_token(encode_token(query, bad), query)


def test_filters_are_for_administrators_and_one_at_a_time() -> None:
    with pytest.raises(Forbidden):
        parse_list_query(MEMBER, {"owner": "sub-m"}, None)
    with pytest.raises(BadRequest) as refused:
        parse_list_query(ADMIN, {"status": "ACTIVE", "expiringBefore": "2030-01-01"}, None)
    assert refused.value.code == "FILTERS_EXCLUSIVE"


def test_a_transfer_code_is_random_and_only_its_hash_is_kept() -> None:
    first, second = new_transfer_code("SN-1", "t1"), new_transfer_code("SN-1", "t1")
    assert first.code != second.code and first.salt != second.salt
    assert set(first.code) <= set(CODE_ALPHABET) and len(first.code) == 12
    assert first.code not in first.digest
    assert code_matches(first.code, first.salt, first.digest, "SN-1", "t1")
    # bound to the device and the transfer
    assert not code_matches(first.code, first.salt, first.digest, "SN-2", "t1")
    assert not code_matches(first.code, first.salt, first.digest, "SN-1", "t2")
    assert not code_matches(second.code, first.salt, first.digest, "SN-1", "t1")
    assert not code_matches(first.code, "not hex", first.digest, "SN-1", "t1")


def test_a_code_is_read_as_people_type_it() -> None:
    code = new_transfer_code("SN-1", "t").code
    typed = display_code(code).lower().replace("-", " - ")
    assert parse_code_body(json.dumps({"code": typed}), required=True) == code
    assert parse_code_body(None, required=False) == ""
    with pytest.raises(BadRequest):
        parse_code_body(None, required=True)
    with pytest.raises(BadRequest) as refused:
        parse_code_body('{"code": "IIII-OOOO-1111"}', required=True)  # look-alikes: never issued
    assert refused.value.code == "CODE_INVALID"


def test_the_fingerprint_changes_with_every_part_of_the_query() -> None:
    base = ListQuery(caller=ADMIN)
    variants = [
        ListQuery(caller=MEMBER),
        ListQuery(caller=ADMIN, owner="x"),
        ListQuery(caller=ADMIN, status="ACTIVE"),
        ListQuery(caller=ADMIN, expiring_before="2030-01-01T00:00:00Z"),
    ]
    assert len({base.fingerprint(), *(v.fingerprint() for v in variants)}) == 5


def test_the_readme_lists_every_code_the_fleet_routes_answer() -> None:
    """Each stable code fleet management raises is in the README's route reference."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    package = root / "provisioning_lambda" / "provisioning"
    raised: set[str] = set()
    for name in ("usecases/fleet.py", "domain/fleet_models.py", "adapters/fleet_store.py"):
        source = (package / name).read_text()
        # a domain error's code is its last argument: Forbidden("...", "CODE")
        raised |= set(re.findall(r',\s*"([A-Z][A-Z_]{3,})",?\s*(?:retry_after=[^)]*)?\)', source))
    # the one rule for a blocked device (domain/attestation.py), which fleet management applies
    if "refuse_blocked(" in (package / "usecases" / "fleet.py").read_text():
        from provisioning.domain.attestation import device_blocked

        raised.add(device_blocked().code)
    assert {"TRANSFER_CODE_INVALID", "DEVICE_BLOCKED", "TRANSFER_NOT_FOUND", "LIMIT_INVALID"} <= (
        raised
    )
    readme = (root / "README.md").read_text()
    routes = readme[readme.index("Every route below answers") : readme.index("**Allowlist")]

    def listed(code: str) -> bool:  # by name, or as a family: `FIELD_*`
        family = code.split("_")[0] + "_*"
        return re.search(rf"\b{code}\b", routes) is not None or family in routes

    assert sorted(code for code in raised if not listed(code)) == []
