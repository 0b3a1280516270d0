"""What the renewal topic rules deliver is checked whole before anything else happens."""

from __future__ import annotations

from typing import Any

import pytest

from provisioning.config import ConfigError, Settings
from provisioning.errors import BadRequest
from provisioning.renewal import answer_topic, parse_renewal_event, thing_of

CERT = "ab" * 32
THING = "device_SN-1"


def event(**fields: Any) -> dict[str, Any]:
    return {"thingName": THING, "principal": CERT, "clientId": THING, **fields}


def test_a_renewal_and_a_confirm_are_told_apart_by_their_field() -> None:
    renewal = parse_renewal_event(event(csr="-----BEGIN"), "device", 120)
    assert (renewal.dsn, renewal.csr_pem, renewal.is_confirm) == ("SN-1", b"-----BEGIN", False)
    confirm = parse_renewal_event(event(certificateId="cd" * 32), "device", 120)
    assert (confirm.certificate_id, confirm.is_confirm) == ("cd" * 32, True)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ([], "MESSAGE_INVALID"),
        (event(csr="x", thingName="other_SN-1"), "THING_INVALID"),
        (event(csr="x", thingName="device_"), "THING_INVALID"),
        (event(csr="x", thingName="device_SN 1"), "THING_INVALID"),
        (event(csr="x", thingName="device_" + "A" * 121), "THING_INVALID"),
        (event(csr="x", thingName=None), "THING_INVALID"),
        (event(csr="x", principal="AB" * 32), "PRINCIPAL_INVALID"),
        (event(csr="x", principal="ab" * 31), "PRINCIPAL_INVALID"),
        (event(csr="x", principal=None), "PRINCIPAL_INVALID"),
        (event(csr="x", clientId=5), "MESSAGE_INVALID"),
        (event(), "MESSAGE_INVALID"),
        (event(csr="x", certificateId=CERT), "MESSAGE_INVALID"),
        (event(csr="x", more="y"), "MESSAGE_INVALID"),
        (event(csr=5), "CSR_INVALID"),
        (event(csr="é"), "CSR_INVALID"),
        (event(certificateId="nope"), "MESSAGE_INVALID"),
    ],
)
def test_a_bad_message_is_refused_with_a_stable_code(raw: Any, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_renewal_event(raw, "device", 120)
    assert refused.value.code == code


def test_answers_go_to_the_devices_own_topics_only() -> None:
    assert answer_topic(THING, True) == "things/device_SN-1/certificate/renew/accepted"
    assert answer_topic(THING, False) == "things/device_SN-1/certificate/renew/rejected"
    assert thing_of({"thingName": "device_SN-1/#"}, "device") == ""
    assert thing_of({"thingName": "other_SN-1"}, "device") == ""


BASE = {
    "DEVICES_TABLE": "d",
    "AUDIT_TABLE": "a",
    "CA_ARN": "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/x",
    "CA_SIGNING_ALGORITHM": "SHA256WITHECDSA",
    "CA_CERTIFICATE_MODE": "DEFAULT",
    "THING_PREFIX": "device",
    "THING_GROUP": "g",
    "IOT_POLICY_NAME": "p",
    "DEVICE_CERT_VALIDITY_DAYS": "365",
    "DEVICE_KEY_ALGORITHM": "EC_prime256v1",
}


def test_the_grace_period_is_a_checked_setting() -> None:
    assert Settings.from_env(BASE).renewal_grace_hours == 72
    assert Settings.from_env(BASE | {"RENEWAL_GRACE_HOURS": "5"}).renewal_grace_hours == 5
    for bad in ("0", "721", "x", "-1"):
        with pytest.raises(ConfigError):
            Settings.from_env(BASE | {"RENEWAL_GRACE_HOURS": bad})
