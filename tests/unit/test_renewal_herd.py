"""Renewal without a herd: the rules the device, the expiry watch and the template share.

The device renews at a random moment of RENEWAL_WINDOW and follows a nudge's spread
(tests/unit/test_device_renewal.py); the watch spreads its nudges
(tests/integration/test_expiry_watch.py). These tests hold the template's sizing of the renewal
function to the arithmetic in docs/architecture.md ("Renewal without a herd"), and the two homes
of each shared rule to each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from onboarding_ble import renewal, rules
from provisioning.domain import expiry

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
FLEET, DAY = 100_000, 86_400  # a fleet onboarded in one day
RENEWAL_SECONDS = 1.5  # a request (1 s) and its confirm (0.5 s), as the docs assume
REGISTER_CERTIFICATE_QUOTA = 10  # per second, account-wide, shared with provisioning


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, _ = decode(str(TEMPLATE))
    assert decoded is not None
    return decoded


def test_the_nudge_names_its_spread_as_the_device_reads_it() -> None:
    assert expiry.RENEW_WITHIN == rules.RENEW_WITHIN
    message = expiry.NUDGE_SPREAD.message("2030-01-01T00:00:00Z")
    assert message[rules.RENEW_WITHIN] == expiry.NUDGE_SPREAD.seconds
    assert expiry.NUDGE_SPREAD.seconds <= renewal.MAX_NUDGE_SPREAD


def test_a_runs_nudges_are_spent_before_the_next_run(template: dict[str, Any]) -> None:
    schedules = template["Parameters"]["ExpiryWatchSchedule"]["AllowedValues"]
    seconds = {"rate(1 hour)": 3600, "rate(3 hours)": 10800, "rate(6 hours)": 21600}
    seconds |= {"rate(12 hours)": 43200, "rate(1 day)": 86400}
    assert expiry.NUDGE_SPREAD.seconds <= min(seconds[s] for s in schedules)


def test_devices_renew_on_their_own_before_the_default_warning_window(
    template: dict[str, Any],
) -> None:
    warning = int(template["Parameters"]["ExpiryWarningPercent"]["Default"])
    window = renewal.RENEWAL_WINDOW
    assert 0.5 <= window.start < window.end <= 1 - warning / 100


def test_the_device_waits_for_an_answer_as_long_as_the_function_may_still_give_one(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["RenewalFunction"]["Properties"]
    timeout = function.get("Timeout", template["Globals"]["Function"]["Timeout"])
    age = function["EventInvokeConfig"]["MaximumEventAgeInSeconds"]
    assert age + timeout <= renewal.ANSWER_TIMEOUT


def test_the_renewal_function_serves_twice_the_busiest_minute_and_half_the_quota_at_most(
    template: dict[str, Any],
) -> None:
    concurrency = int(template["Parameters"]["RenewalReservedConcurrency"]["Default"])
    # The busiest minute: the fleet's own renewals (at most its onboarding rate, spread by the
    # window) plus the watch's nudges, with room for chance (docs/architecture.md).
    own = FLEET / DAY
    busiest = own + expiry.NUDGE_SPREAD.per_second
    assert concurrency / RENEWAL_SECONDS >= 2 * busiest
    # Each request holds an execution for at least a second: RegisterCertificate stays at or
    # under half the account's quota, whatever devices do.
    assert concurrency / 1.0 <= REGISTER_CERTIFICATE_QUOTA / 2
