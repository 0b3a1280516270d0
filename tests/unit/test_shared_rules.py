"""One rule, two homes that cannot drift: the example's ``onboarding_ble.rules`` and the Lambda.

Neither package may import the other (a device cannot ship Lambda code; a Lambda package is
its CodeUri), so the example owns the rules a device and an app need, and these tests fail
as soon as the provisioning function or the template's API model says something else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cfnlint.decode import decode

from onboarding_ble import protocol, rules
from onboarding_ble.protocol import ProtocolError
from provisioning.domain import crypto, models

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def _template_dsn_pattern() -> re.Pattern[str]:
    """The API model's DSN pattern, with JSON Schema's (ECMA-262) meaning of a final ``$``."""
    template, _ = decode(str(TEMPLATE))
    assert template is not None
    api = template["Resources"]["ProvisioningApi"]["Properties"]
    pattern: str = api["Models"]["CertificateRequest"]["properties"]["DSN"]["pattern"]
    assert pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


TEMPLATE_DSN_PATTERN = _template_dsn_pattern()


def test_the_encryption_schemes_and_their_default_are_the_lambdas() -> None:
    assert rules.ENCRYPTION_SCHEMES == models.ENCRYPTION_SCHEMES
    assert (rules.FERNET_X25519, rules.HKDF_AES_GCM) == (crypto.FERNET_X25519, crypto.HKDF_AES_GCM)
    assert rules.HKDF_LABEL == crypto.HKDF_LABEL


SAMPLES = [
    "A",
    "SN-0001",
    "ABC_123-x",
    "Z" * 115,
    "",
    "Z" * 116,
    "SN 0001",
    "SN/0001",
    "SN-0001\n",
    "ÄBC",
    "١٢٣",  # Arabic-Indic digits: \d would accept them without re.ASCII
    "A.B",
]


@pytest.mark.parametrize("dsn", SAMPLES)
def test_the_dsn_rule_is_the_same_for_device_app_lambda_and_api_model(dsn: str) -> None:
    expected = rules.is_valid_dsn(dsn)
    assert bool(models.DSN_PATTERN.fullmatch(dsn)) is expected
    assert bool(TEMPLATE_DSN_PATTERN.search(dsn)) is expected
    if expected:
        assert protocol.validate_dsn(dsn) == dsn
    else:
        with pytest.raises(ProtocolError):
            protocol.validate_dsn(dsn)


def test_the_dsn_length_leaves_room_for_the_thing_prefix() -> None:
    # "<ThingPrefix>_<DSN>" must fit IoT's 128 characters with the template's 12-character prefix
    assert rules.DSN_MAX_LEN + 1 + 12 == 128
    assert re.fullmatch(rules.DSN_PATTERN, "Z" * rules.DSN_MAX_LEN)


def test_the_certificate_names_its_device_the_same_way_on_both_sides() -> None:
    assert rules.DSN_URI_PREFIX == crypto.DSN_URI_PREFIX
    for thing in ("device_SN-0001", "device_" + "Z" * 115, "p" * 12 + "_" + "Z" * 51):
        assert rules.common_name_for(thing) == crypto.common_name_for(thing)


@pytest.mark.parametrize("prefix", ["device", "fleet-7", "A" * 12, "device_x", "", "A" * 13])
def test_the_thing_prefix_rule_is_the_same_for_device_lambda_and_template(prefix: str) -> None:
    from provisioning import config

    template, _ = decode(str(TEMPLATE))
    assert template is not None
    pattern = template["Parameters"]["ThingPrefix"]["AllowedPattern"]
    expected = bool(rules.THING_PREFIX_PATTERN.fullmatch(prefix))
    assert bool(config.THING_PREFIX_PATTERN.fullmatch(prefix)) is expected
    assert bool(re.fullmatch(pattern[1:-1], prefix)) is expected
    assert expected is (prefix in ("device", "fleet-7", "A" * 12))


@pytest.mark.parametrize(
    "key",
    [
        bytes(range(1, 33)),
        bytes(31) + b"\x80",
        (2**255 - 20).to_bytes(32, "little"),
        (2**255 - 19).to_bytes(32, "little"),
        b"\xff" * 32,
        bytes(31),
    ],
)
def test_both_sides_refuse_the_same_x25519_public_keys(key: bytes) -> None:
    assert rules.is_canonical_x25519(key) is crypto.is_canonical_x25519(key)


def test_the_attestation_bytes_are_the_lambdas() -> None:
    from provisioning.domain import attestation
    from provisioning.domain import challenge as api_challenge

    assert rules.ATTESTATION_PREFIX == attestation.MESSAGE_PREFIX
    assert rules.CHALLENGE_LEN == api_challenge.CHALLENGE_BYTES
    spki = attestation.x25519_spki_der(bytes(range(32)))
    challenge = bytes(range(100, 132))
    assert rules.attestation_message("SN-1", challenge, spki) == attestation.message(
        "SN-1", challenge, spki
    )
    # Each part counts: another challenge, DSN or key is another message on both sides.
    for other in (("SN-2", challenge, spki), ("SN-1", bytes(32), spki), ("SN-1", challenge, b"")):
        assert rules.attestation_message(*other) != rules.attestation_message(
            "SN-1", challenge, spki
        )
        assert attestation.message(*other) == rules.attestation_message(*other)
    # A challenge of another length is refused by both, never signed.
    for side in (rules.attestation_message, attestation.message):
        with pytest.raises(ValueError):
            side("SN-1", bytes(31), spki)
