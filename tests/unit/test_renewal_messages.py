"""What the renewal topic rules deliver is checked whole before anything else happens."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from provisioning.config import ConfigError, Settings
from provisioning.domain.errors import BadRequest
from provisioning.usecases.renew import (
    answer_topic,
    is_confirm_event,
    parse_renewal_event,
    thing_of,
)

CERT = "ab" * 32
THING = "device_SN-1"


def raw_event(raw: bytes, **rule: Any) -> dict[str, Any]:
    """What the renewal rules deliver (template.yaml): the raw payload and IoT's own values."""
    payload = base64.b64encode(raw).decode()
    return {"payload": payload, "thingName": THING, "principal": CERT, "clientId": THING} | rule


def event(rule: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return raw_event(json.dumps(fields).encode(), **(rule or {}))


def test_a_renewal_and_a_confirm_are_told_apart_by_their_field() -> None:
    renewal = parse_renewal_event(event(csr="-----BEGIN"), "device")
    assert (renewal.dsn, renewal.csr_pem, renewal.is_confirm) == ("SN-1", b"-----BEGIN", False)
    confirm = parse_renewal_event(event(certificateId="cd" * 32), "device")
    assert (confirm.certificate_id, confirm.is_confirm) == ("cd" * 32, True)
    assert (is_confirm_event(event(certificateId="x")), is_confirm_event(event(csr="x"))) == (
        True,
        False,
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ([], "MESSAGE_INVALID"),
        (event({"thingName": "other_SN-1"}, csr="x"), "THING_INVALID"),
        (event({"thingName": "device_"}, csr="x"), "THING_INVALID"),
        (event({"thingName": "device_SN 1"}, csr="x"), "THING_INVALID"),
        (event({"thingName": "device_" + "A" * 121}, csr="x"), "THING_INVALID"),
        (event({"thingName": None}, csr="x"), "THING_INVALID"),
        (event({"principal": "AB" * 32}, csr="x"), "PRINCIPAL_INVALID"),
        (event({"principal": "ab" * 31}, csr="x"), "PRINCIPAL_INVALID"),
        (event({"principal": None}, csr="x"), "PRINCIPAL_INVALID"),
        (event({"clientId": 5}, csr="x"), "MESSAGE_INVALID"),
        (event(), "MESSAGE_INVALID"),
        (event(csr="x", certificateId=CERT), "MESSAGE_INVALID"),
        (event(csr="x", more="y"), "MESSAGE_INVALID"),
        (event(csr=5), "CSR_INVALID"),
        (event(csr="é"), "CSR_INVALID"),
        (event(certificateId="nope"), "MESSAGE_INVALID"),
        # the payload is read as strictly as an API body
        (raw_event(b'{"csr": "x", "csr": "y"}'), "DUPLICATE_FIELD"),
        (raw_event(b"not json"), "BODY_NOT_JSON"),
        (raw_event(b'["csr"]'), "BODY_NOT_OBJECT"),
        (raw_event(b'{"csr": NaN}'), "BODY_NOT_JSON"),
        (raw_event(b"\xff\xfe"), "BODY_NOT_JSON"),
        (raw_event(b""), "BODY_MISSING"),
        (raw_event(b"{}", payload="not base64!"), "BODY_NOT_JSON"),
        (raw_event(b"{}", payload=None), "BODY_MISSING"),
        (raw_event(b'{"csr": "' + b"A" * 9000 + b'"}'), "BODY_TOO_LARGE"),
        # nothing but the rule's fields: the function reads the device's only from the payload
        (event({"csr": "x"}, certificateId="y"), "MESSAGE_INVALID"),
    ],
)
def test_a_bad_message_is_refused_with_a_stable_code(raw: Any, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_renewal_event(raw, "device")
    assert refused.value.code == code


@pytest.mark.parametrize("field", ["thingName", "principal", "clientId"])
def test_the_payload_cannot_name_what_iot_supplies(field: str) -> None:
    # GIVEN a message whose payload carries a field of the name the rule gives IoT's own value
    forged = {"csr": "x", field: "device_victim" if field != "principal" else "cd" * 32}
    # WHEN it is parsed, THEN it is refused: the device's fields are csr or certificateId only
    with pytest.raises(BadRequest) as refused:
        parse_renewal_event(event(**forged), "device")
    assert refused.value.code == "MESSAGE_INVALID"


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
