"""The attestation rule (provisioning/attestation.py): the signed bytes, the keys, the decision."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from provisioning import attestation
from provisioning.attestation import AllowlistEntry, check
from provisioning.errors import BadRequest, Forbidden
from provisioning.models import parse_provision_request

DSN = "SN-0001"


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def factory_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def device_spki() -> bytes:
    raw = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return attestation.x25519_spki_der(raw)


def test_the_signed_bytes_are_exactly_the_documented_ones() -> None:
    raw = bytes(range(32))
    spki = attestation.x25519_spki_der(raw)
    # RFC 8410: the X25519 SPKI is a fixed 12-byte header and the raw key
    assert spki == bytes.fromhex("302a300506032b656e032100") + raw
    assert attestation.message("SN-1", spki) == (
        b"iot-device-onboarding/attestation/v1\x00SN-1\x00" + spki
    )


def test_a_device_signature_verifies_and_the_rule_accepts_it(
    factory_key: ec.EllipticCurvePrivateKey, device_spki: bytes
) -> None:
    # A device that signs with any ECDSA library (here: by hand, DER) over the documented bytes
    signature = factory_key.sign(attestation.message(DSN, device_spki), ec.ECDSA(hashes.SHA256()))
    entry = AllowlistEntry(DSN, _spki(factory_key))
    check(required=True, entry=entry, dsn=DSN, public_key_der=device_spki, signature=signature)
    assert base64.b64decode(attestation.sign(factory_key, DSN, device_spki))  # the helper too


DECISIONS = [
    # required, listed, blocked, signature ("good", "bad", None), expected code or ""
    (True, True, False, "good", ""),
    (True, True, False, None, "ATTESTATION_REQUIRED"),
    (True, True, False, "bad", "ATTESTATION_INVALID"),
    (True, False, False, "good", "DEVICE_NOT_ALLOWED"),
    (True, False, False, None, "ATTESTATION_REQUIRED"),
    (True, True, True, "good", "DEVICE_BLOCKED"),
    (False, False, False, None, ""),
    (False, False, False, "bad", ""),
    (False, True, False, None, ""),
    (False, True, False, "good", ""),
    (False, True, False, "bad", "ATTESTATION_INVALID"),
    (False, True, True, None, "DEVICE_BLOCKED"),
    (False, False, True, None, "DEVICE_BLOCKED"),  # blocked before it was ever listed
]


@pytest.mark.parametrize(("required", "listed", "blocked", "signature", "code"), DECISIONS)
def test_the_decision_table(
    factory_key: ec.EllipticCurvePrivateKey,
    device_spki: bytes,
    required: bool,
    listed: bool,
    blocked: bool,
    signature: str | None,
    code: str,
) -> None:
    entry = None
    if listed or blocked:
        entry = AllowlistEntry(
            DSN, _spki(factory_key) if listed else b"", "BLOCKED" if blocked else "ALLOWED"
        )
    signer = factory_key if signature == "good" else ec.generate_private_key(ec.SECP256R1())
    raw = (
        base64.b64decode(attestation.sign(signer, DSN, device_spki))
        if signature is not None
        else None
    )
    if not code:
        check(required=required, entry=entry, dsn=DSN, public_key_der=device_spki, signature=raw)
        return
    with pytest.raises(Forbidden) as refused:
        check(required=required, entry=entry, dsn=DSN, public_key_der=device_spki, signature=raw)
    assert (refused.value.status, refused.value.code) == (403, code)


def test_operator_keys_are_pem_or_base64_spki_and_p256_only(
    factory_key: ec.EllipticCurvePrivateKey,
) -> None:
    der = _spki(factory_key)
    pem = factory_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert attestation.load_attestation_public_key(pem.decode()) == der
    assert attestation.load_attestation_public_key(base64.b64encode(der).decode()) == der
    assert attestation.public_key_pem(der) == pem.decode()
    others = [
        _spki(ec.generate_private_key(ec.SECP384R1())),
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]
    for text in [base64.b64encode(d).decode() for d in others] + ["", "x" * 600, "!!", "QUJD"]:
        with pytest.raises(ValueError):
            attestation.load_attestation_public_key(text)


def test_the_request_carries_an_optional_attestation() -> None:
    key = base64.b64encode(bytes(32)).decode()
    body = '{"DSN": "SN-1", "publicKey": "%s"%s}'
    assert parse_provision_request(body % (key, ""), 100).attestation is None
    assert parse_provision_request(body % (key, ', "attestation": null'), 100).attestation is None
    signature = base64.b64encode(b"\x30" * 70).decode()
    parsed = parse_provision_request(body % (key, f', "attestation": "{signature}"'), 100)
    assert parsed.attestation == b"\x30" * 70
    for bad, code in (
        ('"not base64!"', "ATTESTATION_MALFORMED"),
        ('"QUJD"', "ATTESTATION_MALFORMED"),  # 3 bytes: no signature
        ('"' + "A" * 200 + '"', "FIELD_TYPE"),
        ("42", "FIELD_TYPE"),
    ):
        with pytest.raises(BadRequest) as refused:
            parse_provision_request(body % (key, f', "attestation": {bad}'), 100)
        assert refused.value.code == code


def test_an_operator_key_with_anything_after_it_is_refused(
    factory_key: ec.EllipticCurvePrivateKey,
) -> None:
    der = _spki(factory_key)
    pem = attestation.public_key_pem(der)
    other = attestation.public_key_pem(_spki(ec.generate_private_key(ec.SECP256R1())))
    for text in [pem + other, pem + "trailing", base64.b64encode(der + b"\x00").decode()]:
        with pytest.raises(ValueError):
            attestation.load_attestation_public_key(text)
    assert attestation.load_attestation_public_key("\n" + pem + "\n") == der


def test_a_verified_attestation_over_a_certified_key_is_a_replay(
    factory_key: ec.EllipticCurvePrivateKey, device_spki: bytes
) -> None:
    entry = AllowlistEntry(DSN, _spki(factory_key))
    good = base64.b64decode(attestation.sign(factory_key, DSN, device_spki))
    check(required=True, entry=entry, dsn=DSN, public_key_der=device_spki, signature=good)
    with pytest.raises(Forbidden) as refused:
        check(
            required=True,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=good,
            certified=True,
        )
    assert refused.value.code == "ATTESTATION_REPLAYED"
    # a signature that does not verify is still ATTESTATION_INVALID, certified or not
    bad = base64.b64decode(
        attestation.sign(ec.generate_private_key(ec.SECP256R1()), DSN, device_spki)
    )
    with pytest.raises(Forbidden) as refused:
        check(
            required=True,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=bad,
            certified=True,
        )
    assert refused.value.code == "ATTESTATION_INVALID"
