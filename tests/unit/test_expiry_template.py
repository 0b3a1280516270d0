"""template.yaml's expiry pieces: the Rules that refuse short-lived mode with an over-long
validity, the ExpiryIndex as the interface fixes it, the watch's wiring; and the warning
window's arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from devstack.cloudformation.rules import RuleFailed, check_rules
from devstack.errors import DeployError
from provisioning.adapters.store import EXPIRY_SHARDS, expiry_shard, sweep_shard
from provisioning.domain.expiry import ExpiryState, ExpiryWindow

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded, errors = decode(str(TEMPLATE))
    assert not errors and loaded is not None
    return dict(loaded)


def parameters(template: dict[str, Any], **values: str) -> dict[str, str]:
    defaults = {n: str(s["Default"]) for n, s in template["Parameters"].items() if "Default" in s}
    return {**defaults, "AdminEmail": "admin@example.com", **values}


@pytest.mark.parametrize("days", ["8", "30", "365", "3650"])
def test_the_rules_refuse_short_lived_mode_with_more_than_seven_days(
    template: dict[str, Any], days: str
) -> None:
    values = parameters(
        template, CaUsageMode="SHORT_LIVED_CERTIFICATE", DeviceCertValidityDays=days
    )
    with pytest.raises(RuleFailed, match="DeviceCertValidityDays to 1-7"):
        check_rules(template["Rules"], values)


@pytest.mark.parametrize("days", ["1", "2", "3", "4", "5", "6", "7"])
def test_the_rules_accept_short_lived_mode_with_at_most_seven_days(
    template: dict[str, Any], days: str
) -> None:
    values = parameters(
        template, CaUsageMode="SHORT_LIVED_CERTIFICATE", DeviceCertValidityDays=days
    )
    check_rules(template["Rules"], values)


@pytest.mark.parametrize("days", ["1", "365", "3650"])
def test_general_purpose_mode_takes_any_validity(template: dict[str, Any], days: str) -> None:
    check_rules(template["Rules"], parameters(template, DeviceCertValidityDays=days))


def test_the_default_is_general_purpose_and_feeds_the_issuing_ca(template: dict[str, Any]) -> None:
    assert template["Parameters"]["CaUsageMode"]["Default"] == "GENERAL_PURPOSE"
    issuing = template["Resources"]["IssuingCertificateAuthority"]
    assert issuing["Properties"]["UsageMode"] == {"Ref": "CaUsageMode"}
    # Create-only: a new mode is a new CA, and the old one (with its fleet) must survive.
    assert issuing["DeletionPolicy"] == issuing["UpdateReplacePolicy"] == "Retain"
    # A short-lived CA must be the last of its hierarchy: the root, which signs the issuing
    # CA, is general purpose whatever the mode.
    root = template["Resources"]["CertificateAuthority"]
    assert root["Properties"]["UsageMode"] == "GENERAL_PURPOSE"
    assert root["DeletionPolicy"] == root["UpdateReplacePolicy"] == "Retain"


def test_a_rule_with_a_function_the_offline_deployer_does_not_know_is_an_error() -> None:
    rules = {"R": {"Assertions": [{"Assert": {"Fn::ValueOf": ["P", "VpcId"]}}]}}
    with pytest.raises(DeployError, match="not supported"):
        check_rules(rules, {"P": "x"})


def test_the_expiry_index_is_the_one_the_interface_fixes(template: dict[str, Any]) -> None:
    table = template["Resources"]["DevicesTable"]["Properties"]
    # Some definitions follow their index's condition (IndexUpgradeStep); these two do not.
    definitions = [d for d in table["AttributeDefinitions"] if "AttributeName" in d]
    types = {d["AttributeName"]: d["AttributeType"] for d in definitions}
    (index,) = [i for i in table["GlobalSecondaryIndexes"] if i.get("IndexName") == "ExpiryIndex"]
    keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
    assert keys == {"HASH": "expiry_shard", "RANGE": "not_after"}
    assert types["expiry_shard"] == types["not_after"] == "S"
    assert "thing_name" in index["Projection"]["NonKeyAttributes"]


def test_expiry_shards_spread_like_the_sweep_shards() -> None:
    dsns = [f"SN-{n}" for n in range(400)]
    shards = {expiry_shard(dsn) for dsn in dsns}
    assert shards == {f"exp#{n}" for n in range(EXPIRY_SHARDS)}
    # Same hash of the DSN as the sweep index, another prefix: one DSN, one shard number.
    assert all(expiry_shard(d)[4:] == sweep_shard(d)[4:] for d in dsns)


def test_the_watch_is_scheduled_from_its_parameter_and_reports_to_its_topic(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["ExpiryWatchFunction"]["Properties"]
    assert function["Handler"] == "provisioning.handlers.expiry.lambda_handler"
    assert function["Events"]["Scheduled"]["Properties"]["Schedule"] == {
        "Ref": "ExpiryWatchSchedule"
    }
    variables = function["Environment"]["Variables"]
    assert variables["EXPIRY_TOPIC_ARN"] == {"Ref": "ExpiryTopic"}
    assert variables["EXPIRY_WARNING_PERCENT"] == {"Ref": "ExpiryWarningPercent"}
    # GET /devices/{dsn} computes the state with the same window.
    provisioning = template["Resources"]["ProvisioningFunction"]["Properties"]
    assert provisioning["Environment"]["Variables"]["EXPIRY_WARNING_PERCENT"] == {
        "Ref": "ExpiryWarningPercent"
    }
    assert template["Outputs"]["ExpiryTopicArn"]["Value"] == {"Ref": "ExpiryTopic"}
    assert "ExpiryWatchFunctionLogGroup" in template["Resources"]


@pytest.mark.parametrize(
    ("days", "percent", "window"),
    [
        (365, 30, timedelta(days=109, hours=12)),
        (7, 30, timedelta(hours=50, minutes=24)),
        (1, 90, timedelta(hours=21, minutes=36)),
    ],
)
def test_the_window_is_a_share_of_the_validity(days: int, percent: int, window: timedelta) -> None:
    assert ExpiryWindow(days, percent).length == window


def test_states_at_the_edges_of_the_window() -> None:
    window = ExpiryWindow(7, 30)
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def state(after: timedelta) -> ExpiryState:
        moment = (now + after).isoformat().replace("+00:00", "Z")
        return window.state_of(moment, now)

    assert state(window.length + timedelta(seconds=1)) is ExpiryState.VALID
    assert state(window.length) is ExpiryState.EXPIRING
    assert state(timedelta(seconds=1)) is ExpiryState.EXPIRING
    assert state(timedelta(0)) is ExpiryState.EXPIRED
    assert state(-timedelta(days=3)) is ExpiryState.EXPIRED


def test_the_runbooks_backfill_gives_each_row_the_shard_the_store_gives_it() -> None:
    """docs/runbook.md's backfill computes the shard in shell; it must be the store's."""
    import re
    import subprocess
    import sys

    runbook = (TEMPLATE.parent / "docs" / "runbook.md").read_text(encoding="utf-8")
    (one_liner,) = [c for c in re.findall(r"python3 -c '([^']+)'", runbook) if "exp#" in c]
    for dsn in ("SN-0001", "a", "Z_9-x" * 20, "device-42"):
        shard = subprocess.run(  # noqa: S603 - our own runbook's one-liner
            [sys.executable, "-c", one_liner, dsn], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert shard == expiry_shard(dsn)


def test_runs_that_do_not_cover_the_window_raise_an_alarm_to_the_expiry_topic(
    template: dict[str, Any],
) -> None:
    alarms = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    (incomplete,) = [a for a in alarms.values() if a["MetricName"] == "ExpiryWatchIncomplete"]
    # The metric the handler emits (1 per incomplete run), in its namespace and dimension.
    assert (
        incomplete["Namespace"]
        == template["Globals"]["Function"]["Environment"]["Variables"][
            "POWERTOOLS_METRICS_NAMESPACE"
        ]
    )
    assert incomplete["Dimensions"] == [{"Name": "service", "Value": "iot-device-onboarding"}]
    assert incomplete["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert incomplete["Threshold"] == 1
    assert incomplete["AlarmActions"] == [{"Ref": "ExpiryTopic"}]
    # The Lambda-errors alarm no longer claims to cover runs that merely did not finish.
    failed = alarms["ExpiryWatchFailedAlarm"]
    assert failed["MetricName"] == "Errors"
    assert "could not finish" not in failed["AlarmDescription"]
    runbook = (TEMPLATE.parent / "docs" / "runbook.md").read_text(encoding="utf-8")
    assert "ExpiryWatchIncompleteAlarm" in runbook


@pytest.mark.parametrize("schedule", ["rate(12 hours)", "rate(1 day)"])
def test_the_rules_refuse_short_lived_mode_watched_less_than_every_six_hours(
    template: dict[str, Any], schedule: str
) -> None:
    values = parameters(
        template,
        CaUsageMode="SHORT_LIVED_CERTIFICATE",
        DeviceCertValidityDays="7",
        ExpiryWatchSchedule=schedule,
    )
    with pytest.raises(RuleFailed, match=r"at least every 6\s+hours"):
        check_rules(template["Rules"], values)


@pytest.mark.parametrize("schedule", ["rate(1 hour)", "rate(3 hours)", "rate(6 hours)"])
def test_the_rules_accept_short_lived_mode_watched_every_six_hours_or_more_often(
    template: dict[str, Any], schedule: str
) -> None:
    values = parameters(
        template,
        CaUsageMode="SHORT_LIVED_CERTIFICATE",
        DeviceCertValidityDays="7",
        ExpiryWatchSchedule=schedule,
    )
    check_rules(template["Rules"], values)


def test_every_allowed_schedule_is_either_accepted_or_refused_in_short_lived_mode(
    template: dict[str, Any],
) -> None:
    """A schedule added to AllowedValues must be classified by the rule, not slip through."""
    allowed = template["Parameters"]["ExpiryWatchSchedule"]["AllowedValues"]
    hours = {"rate(1 hour)": 1, "rate(3 hours)": 3, "rate(6 hours)": 6}
    hours |= {"rate(12 hours)": 12, "rate(1 day)": 24}
    assert set(allowed) == set(hours)
    for schedule in allowed:
        values = parameters(
            template, CaUsageMode="SHORT_LIVED_CERTIFICATE", ExpiryWatchSchedule=schedule
        )
        values["DeviceCertValidityDays"] = "7"
        if hours[schedule] <= 6:
            check_rules(template["Rules"], values)
        else:
            with pytest.raises(RuleFailed):
                check_rules(template["Rules"], values)


@pytest.mark.parametrize("schedule", ["rate(12 hours)", "rate(1 day)"])
def test_general_purpose_mode_takes_any_schedule(template: dict[str, Any], schedule: str) -> None:
    check_rules(template["Rules"], parameters(template, ExpiryWatchSchedule=schedule))
