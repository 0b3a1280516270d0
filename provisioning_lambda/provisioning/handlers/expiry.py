"""The expiry watch's scheduled entry point: one run within the function's time, its figures
as metrics. The work itself is in usecases/expiry.py."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from provisioning.adapters.composition import get_watch_services
from provisioning.domain.budget import Budget
from provisioning.observability import logger, metrics, tracer
from provisioning.usecases.expiry import watch


@logger.inject_lambda_context(clear_state=True, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = watch(get_watch_services(), Budget(context.get_remaining_time_in_millis))
    # DevicesExpiringSoon: ACTIVE certificates whose notAfter is within the warning window.
    # DevicesExpired: ACTIVE certificates already past notAfter (alarm: DevicesExpiredAlarm).
    # ExpiryWatchIncomplete: 1 when the run did not cover the whole window (alarm:
    # ExpiryWatchIncompleteAlarm, when every run of a day is).
    metrics.add_metric(name="DevicesExpiringSoon", unit=MetricUnit.Count, value=report.expiring)
    metrics.add_metric(name="DevicesExpired", unit=MetricUnit.Count, value=report.expired)
    metrics.add_metric(
        name="RenewalsRequested", unit=MetricUnit.Count, value=report.renewals_requested
    )
    metrics.add_metric(
        name="RenewalRequestsFailed", unit=MetricUnit.Count, value=report.renewals_failed
    )
    metrics.add_metric(
        name="ExpiryWatchIncomplete", unit=MetricUnit.Count, value=int(not report.complete)
    )
    # IssuingCaDaysLeft: days until the issuing CA can no longer fit a full-length certificate
    # (negative: past); the summary warns from 90 days before.
    if report.issuer_days_left is not None:
        metrics.add_metric(
            name="IssuingCaDaysLeft", unit=MetricUnit.Count, value=report.issuer_days_left
        )
    # RootCaDaysLeft: days until the root CA ends (negative: past); the summary warns from 365
    # days before.
    if report.root_days_left is not None:
        metrics.add_metric(
            name="RootCaDaysLeft", unit=MetricUnit.Count, value=report.root_days_left
        )
    return {
        "checkedAt": report.checked_at,
        "windowEnds": report.window_ends,
        "expiring": report.expiring,
        "expired": report.expired,
        "renewalsRequested": report.renewals_requested,
        "renewalsFailed": report.renewals_failed,
        "complete": report.complete,
        "issuerLastIssue": report.issuer_last_issue,
        "issuerDue": report.issuer_due,
        "rootValidUntil": report.root_valid_until,
        "rootDue": report.root_due,
        "notified": report.notified,
    }
