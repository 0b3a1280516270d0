"""The device's renewal topics (onboarding_ble.rules) and the template's topic rules agree, and
the rules stay inside the IoT SQL the offline broker runs (else `devstack up` fails)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from devstack.iot.topic_rules import parse_rule, topic_matches
from onboarding_ble import rules
from onboarding_ble.renewal import Topics

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def _topic_rules() -> dict[str, dict[str, Any]]:
    template, _ = decode(str(TEMPLATE))
    assert template is not None
    return {
        name: resource["Properties"]["TopicRulePayload"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::IoT::TopicRule"
    }


@pytest.mark.parametrize(
    ("rule", "suffix"), [("RenewRequestRule", ""), ("RenewConfirmRule", rules.RENEW_CONFIRM)]
)
def test_each_renewal_rule_selects_exactly_the_devices_topic(rule: str, suffix: str) -> None:
    payload = dict(_topic_rules()[rule])
    payload["Actions"] = [{"Lambda": {"FunctionArn": "arn:aws:lambda:::function:f"}}]
    parsed = parse_rule(rule, f"arn:aws:iot:::rule/{rule}", payload)
    topics = Topics("device_SN-1")
    own = rules.renew_topic("device_SN-1", suffix)
    assert topic_matches(parsed.query.source, own)
    others = {topics.renew, topics.accepted, topics.rejected, topics.confirm, topics.due} - {own}
    assert not [t for t in others if topic_matches(parsed.query.source, t)]
    # a payload naming IoT's values travels whole, as one opaque field, beside IoT's own
    forged = b'{"principal": "forged", "thingName": "device_B", "clientId": "B"}'
    event = parsed.query.project(own, forged, principal="P", client_id="C")
    assert event == {
        "payload": base64.b64encode(forged).decode(),
        "thingName": "device_SN-1",
        "principal": "P",
        "clientId": "C",
    }
    assert not parsed.query.select_all  # no `SELECT *`: nothing of the payload is a top field


def test_a_stale_renewal_request_cannot_outlive_the_unconfirmed_hold() -> None:
    """A request for another key from the superseded certificate is refused while it may have
    been published before the device got its answer: the hold must cover every event the
    function can still be running (the oldest it accepts, plus its timeout)."""
    from provisioning.usecases.renew import MAX_EVENT_AGE_SECONDS, UNCONFIRMED_HOLD_SECONDS

    template, _ = decode(str(TEMPLATE))
    assert template is not None
    function = template["Resources"]["RenewalFunction"]["Properties"]
    invoke = function["EventInvokeConfig"]
    timeout = function.get("Timeout", template["Globals"]["Function"]["Timeout"])
    assert invoke["MaximumRetryAttempts"] == 0
    assert invoke["MaximumEventAgeInSeconds"] == MAX_EVENT_AGE_SECONDS
    assert MAX_EVENT_AGE_SECONDS + timeout < UNCONFIRMED_HOLD_SECONDS
