"""The attestation rule (provisioning/domain/attestation.py): signed bytes, keys, the decision."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from provisioning.domain import attestation
from provisioning.domain.attestation import AllowlistEntry, check
from provisioning.domain.errors import BadRequest, Forbidden
from provisioning.domain.models import parse_provision_request

DSN = "SN-0001"
CHALLENGE = bytes(range(0xA0, 0xC0))  # what POST /certificate/challenge gave the caller


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
    challenge = bytes(range(0xA0, 0xC0))
    assert attestation.message("SN-1", challenge, spki) == (
        b"iot-device-onboarding/attestation/v2\x00SN-1\x00" + challenge + spki
    )
    # docs/ble-protocol.md 3.1.2's worked example, byte for byte
    assert attestation.message("SN-1", challenge, spki).hex() == (
        "696f742d6465766963652d6f6e626f617264696e672f6174746573746174696f6e2f763200"
        "534e2d3100"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "302a300506032b656e032100"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    )


def test_a_signature_over_another_challenge_does_not_verify(
    factory_key: ec.EllipticCurvePrivateKey, device_spki: bytes
) -> None:
    # GIVEN a signature a device made over the challenge another caller's app wrote to it
    entry = AllowlistEntry(DSN, _spki(factory_key))
    theirs = base64.b64decode(attestation.sign(factory_key, DSN, bytes(32), device_spki))
    # THEN it does not verify with this request's challenge
    with pytest.raises(Forbidden) as refused:
        check(
            required=True,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=theirs,
            challenge=CHALLENGE,
        )
    assert refused.value.code == "ATTESTATION_INVALID"


def test_a_device_signature_verifies_and_the_rule_accepts_it(
    factory_key: ec.EllipticCurvePrivateKey, device_spki: bytes
) -> None:
    # A device that signs with any ECDSA library (here: by hand, DER) over the documented bytes
    signature = factory_key.sign(
        attestation.message(DSN, CHALLENGE, device_spki), ec.ECDSA(hashes.SHA256())
    )
    entry = AllowlistEntry(DSN, _spki(factory_key))
    check(
        required=True,
        entry=entry,
        dsn=DSN,
        public_key_der=device_spki,
        signature=signature,
        challenge=CHALLENGE,
    )
    assert base64.b64decode(
        attestation.sign(factory_key, DSN, CHALLENGE, device_spki)
    )  # the helper too


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
        base64.b64decode(attestation.sign(signer, DSN, CHALLENGE, device_spki))
        if signature is not None
        else None
    )
    if not code:
        check(
            required=required,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=raw,
            challenge=CHALLENGE,
        )
        return
    with pytest.raises(Forbidden) as refused:
        check(
            required=required,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=raw,
            challenge=CHALLENGE,
        )
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


def test_the_request_carries_an_optional_attestation_with_its_challenge() -> None:
    key = base64.b64encode(bytes(32)).decode()
    body = '{"DSN": "SN-1", "publicKey": "%s"%s}'
    challenge = base64.b64encode(CHALLENGE).decode()
    with_challenge = f', "attestationChallenge": "{challenge}"'
    assert parse_provision_request(body % (key, "")).attestation is None
    assert parse_provision_request(body % (key, ', "attestation": null')).attestation is None
    signature = base64.b64encode(b"\x30" * 70).decode()
    parsed = parse_provision_request(
        body % (key, f', "attestation": "{signature}"' + with_challenge)
    )
    assert (parsed.attestation, parsed.attestation_challenge) == (b"\x30" * 70, CHALLENGE)
    for bad, code in (
        ('"not base64!"', "ATTESTATION_MALFORMED"),
        ('"QUJD"', "ATTESTATION_MALFORMED"),  # 3 bytes: no signature
        ('"' + "A" * 200 + '"', "FIELD_TYPE"),
        ("42", "FIELD_TYPE"),
    ):
        with pytest.raises(BadRequest) as refused:
            parse_provision_request(body % (key, f', "attestation": {bad}' + with_challenge))
        assert refused.value.code == code
    # the attestation and its challenge come together, the challenge 32 bytes of base64
    for extra, code in (
        (f', "attestation": "{signature}"', "CHALLENGE_MISSING"),
        (with_challenge, "ATTESTATION_MISSING"),
        (
            f', "attestation": "{signature}", "attestationChallenge": "QUJD"',
            "CHALLENGE_MALFORMED",
        ),
        (
            f', "attestation": "{signature}", "attestationChallenge": '
            f'"{base64.b64encode(bytes(31)).decode()}"',
            "CHALLENGE_MALFORMED",
        ),
        (f', "attestation": "{signature}", "attestationChallenge": 7', "FIELD_TYPE"),
    ):
        with pytest.raises(BadRequest) as refused:
            parse_provision_request(body % (key, extra))
        assert refused.value.code == code, extra


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
    good = base64.b64decode(attestation.sign(factory_key, DSN, CHALLENGE, device_spki))
    check(
        required=True,
        entry=entry,
        dsn=DSN,
        public_key_der=device_spki,
        signature=good,
        challenge=CHALLENGE,
    )
    with pytest.raises(Forbidden) as refused:
        check(
            required=True,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=good,
            challenge=CHALLENGE,
            certified=True,
        )
    assert refused.value.code == "ATTESTATION_REPLAYED"
    # a signature that does not verify is still ATTESTATION_INVALID, certified or not
    bad = base64.b64decode(
        attestation.sign(ec.generate_private_key(ec.SECP256R1()), DSN, CHALLENGE, device_spki)
    )
    with pytest.raises(Forbidden) as refused:
        check(
            required=True,
            entry=entry,
            dsn=DSN,
            public_key_der=device_spki,
            signature=bad,
            challenge=CHALLENGE,
            certified=True,
        )
    assert refused.value.code == "ATTESTATION_INVALID"
