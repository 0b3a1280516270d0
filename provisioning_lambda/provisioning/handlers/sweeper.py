"""The sweeper's scheduled entry point: run one sweep within the function's time, publish
what it fixed. The work itself is in sweeper.py."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from provisioning.adapters.composition import get_services
from provisioning.domain.budget import Budget
from provisioning.lifecycle.sweep import sweep
from provisioning.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int | list[str]]:
    report = sweep(
        get_services(), Budget(context.get_remaining_time_in_millis), context.aws_request_id
    )
    # SweeperRecovered: intents resolved and certificates retired that requests left behind.
    # SweeperUnfinished: rows still carrying work after this run (alarm when it persists).
    metrics.add_metric(
        name="SweeperRecovered",
        unit=MetricUnit.Count,
        value=report.intents_resolved + report.certificates_retired,
    )
    metrics.add_metric(name="SweeperUnfinished", unit=MetricUnit.Count, value=report.unfinished)
    metrics.add_metric(
        name="SweeperLeasesReleased", unit=MetricUnit.Count, value=report.leases_released
    )
    # SweeperParked: rows given up on after repeated failures (alarm above zero; runbook).
    metrics.add_metric(name="SweeperParked", unit=MetricUnit.Count, value=report.parked_total)
    return {
        "devicesSeen": report.devices_seen,
        "intentsResolved": report.intents_resolved,
        "certificatesRetired": report.certificates_retired,
        "unfinished": report.unfinished,
        "skipped": report.skipped,
        "parked": report.parked,
        "parkedTotal": report.parked_total,
        "parkedDevices": list(report.parked_devices),
    }
