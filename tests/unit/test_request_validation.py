"""Every malformed request is refused with 400 and a stable code, before anything is created."""

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from provisioning.domain.errors import BadRequest
from provisioning.domain.models import MAX_BODY_BYTES, User, parse_provision_request


def device_key() -> str:
    raw = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def body(**fields: object) -> str:
    return json.dumps(fields)


def test_a_well_formed_request_is_parsed() -> None:
    key = device_key()
    request = parse_provision_request(body(DSN="SN-0001_a", publicKey=key))
    assert request.dsn == "SN-0001_a"
    assert base64.b64encode(request.device_public_key).decode() == key
    assert request.encryption == "fernet-x25519"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "BODY_MISSING"),
        ("", "BODY_MISSING"),
        ("   ", "BODY_MISSING"),
        ("{not json", "BODY_NOT_JSON"),
        ("null", "BODY_NOT_OBJECT"),
        ("[]", "BODY_NOT_OBJECT"),
        ('"DSN"', "BODY_NOT_OBJECT"),
        ("{}", "FIELD_MISSING"),
        (body(publicKey="x"), "FIELD_MISSING"),
        (body(DSN=None, publicKey="x"), "FIELD_MISSING"),
        (body(DSN="A1"), "FIELD_MISSING"),
        (body(DSN=123, publicKey="x"), "FIELD_TYPE"),
        (body(DSN=["A"], publicKey="x"), "FIELD_TYPE"),
        (body(DSN="A1", publicKey=32), "FIELD_TYPE"),
        (body(DSN="A1", publicKey="x", extra=1), "UNKNOWN_FIELD"),
        ("x" * (MAX_BODY_BYTES + 1), "BODY_TOO_LARGE"),
        ('{"DSN": "A1", "DSN": "B2", "publicKey": "x"}', "DUPLICATE_FIELD"),
        ('{"DSN": NaN, "publicKey": "x"}', "BODY_NOT_JSON"),
        ("[" * 2000 + "]" * 2000, "BODY_TOO_DEEP"),
    ],
)
def test_malformed_bodies_are_refused(raw: str | None, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(raw)
    assert refused.value.code == code
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "has space",
        "../etc/passwd",
        "A1\n",
        "line\nbreak",
        "Ünïcode",
        "٣٣٣",  # Arabic-Indic digits match \d outside ASCII mode
        "A$B",
        "Abc;rm",
        # The original sample only checked the first character:
        "A/../../x",
        "a.b",
    ],
)
def test_every_character_of_the_dsn_is_checked(dsn: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(body(DSN=dsn, publicKey=device_key()))
    assert refused.value.code == "DSN_INVALID"


def test_a_dsn_whose_thing_name_passes_128_characters_is_refused() -> None:
    # The longest ThingPrefix (12 characters) and "_" leave 115 of IoT's 128 to the DSN.
    longest = 128 - 12 - 1
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(body(DSN="A" * (longest + 1), publicKey=device_key()))
    assert refused.value.code == "DSN_TOO_LONG"
    parse_provision_request(body(DSN="A" * longest, publicKey=device_key()))


@pytest.mark.parametrize(
    "key",
    [
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        base64.b64encode(b"\x01" * 32).decode()[:-1],
        base64.b64encode(b"\x01" * 32).decode() + "\n",
        "",
    ],
)
def test_a_public_key_that_is_not_32_bytes_of_base64_is_refused(key: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(body(DSN="A1", publicKey=key))
    assert refused.value.code == "PUBLIC_KEY_INVALID"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (base64.b64encode(b'{"DSN": "A1"}').decode(), "FIELD_MISSING"),
        ("not base64!", "BODY_NOT_JSON"),
        (base64.b64encode(b'{"DSN": "\xe9"}').decode(), "BODY_NOT_JSON"),
        (base64.b64encode(b"x" * (MAX_BODY_BYTES + 1)).decode(), "BODY_TOO_LARGE"),
    ],
)
def test_a_base64_encoded_body_is_decoded_strictly(raw: str, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(raw, base64_encoded=True)
    assert refused.value.code == code


def test_the_stronger_scheme_is_opt_in() -> None:
    request = parse_provision_request(
        body(DSN="A1", publicKey=device_key(), encryption="x25519-hkdf-sha256-aes256gcm")
    )
    assert request.encryption == "x25519-hkdf-sha256-aes256gcm"


def test_an_unknown_encryption_scheme_is_refused() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_provision_request(body(DSN="A1", publicKey=device_key(), encryption="rot13"))
    assert refused.value.code == "ENCRYPTION_INVALID"


@pytest.mark.parametrize(
    ("claim", "admin", "may_provision"),
    [
        ("Administrators", True, True),
        ("Members", False, True),
        ("Members,Administrators", True, True),
        ("[Members Administrators]", True, True),
        (["Members"], False, True),
        ("Visitors", False, False),
        (None, False, False),
        ("NotAdministrators", False, False),
    ],
)
def test_groups_from_the_authorizer_claims(claim: object, admin: bool, may_provision: bool) -> None:
    claims = {"sub": "user-1"} if claim is None else {"sub": "user-1", "cognito:groups": claim}
    caller = User.from_claims(claims)
    assert caller.is_admin is admin
    assert caller.may_provision is may_provision


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("A" * 200, "DSN_TOO_LONG"),
        ("A" * 116, "DSN_TOO_LONG"),  # the longest ThingPrefix leaves 115: never more
        ("a b" * 100, "DSN_INVALID"),
        ("A/" + "A" * 200, "DSN_INVALID"),
        ("", "DSN_INVALID"),
        (None, "DSN_INVALID"),
    ],
)
def test_a_path_dsn_is_held_to_the_bodys_rule(raw: str | None, code: str) -> None:
    from provisioning.domain.models import parse_dsn

    with pytest.raises(BadRequest) as refused:
        parse_dsn(raw)
    assert refused.value.code == code
    if raw:  # the body says the same about the same DSN
        with pytest.raises(BadRequest) as body_refused:
            parse_provision_request(body(DSN=raw, publicKey=device_key()))
        assert body_refused.value.code == code


def test_a_path_dsn_at_the_limit_is_taken() -> None:
    from provisioning.domain.models import parse_dsn

    assert parse_dsn("A" * 115) == "A" * 115
