"""The expiry watch's scheduled entry point: one run within the function's time, its figures
as metrics. The work itself is in expiry.py."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from .adapters.aws import make_client
from .adapters.sns import TopicNotifier
from .adapters.store import EXPIRY_SHARDS, DeviceStore
from .budget import Budget
from .config import ConfigError
from .dependencies import get_services
from .expiry import ExpiryWindow, WatchServices, watch
from .observability import logger, metrics, tracer

TOPIC_ARN = re.compile(r"arn:[\w-]+:sns:[\w-]+:\d{12}:[\w.-]{1,256}", re.ASCII)


@lru_cache(maxsize=1)
def get_watch_services() -> WatchServices:
    services = get_services()
    topic_arn = os.environ.get("EXPIRY_TOPIC_ARN", "").strip()
    if not TOPIC_ARN.fullmatch(topic_arn):
        raise ConfigError("EXPIRY_TOPIC_ARN is not an SNS topic ARN")
    if services.publisher is None:
        raise ConfigError("the expiry watch needs the iot-data publisher")
    if not isinstance(services.store, DeviceStore):
        raise ConfigError("the expiry watch reads the devices table's expiry index")
    settings = services.settings
    return WatchServices(
        store=services.store,
        publisher=services.publisher,
        notifier=TopicNotifier(
            make_client("sns", boto3.session.Session(), services.budgets.current), topic_arn
        ),
        window=ExpiryWindow(settings.cert_validity_days, settings.expiry_warning_percent),
        shards=EXPIRY_SHARDS,
        thing_name=settings.thing_name,
        executor=services.executor,
        budgets=services.budgets,
        clock=services.clock,
    )


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
    return {
        "checkedAt": report.checked_at,
        "windowEnds": report.window_ends,
        "expiring": report.expiring,
        "expired": report.expired,
        "renewalsRequested": report.renewals_requested,
        "renewalsFailed": report.renewals_failed,
        "complete": report.complete,
        "notified": report.notified,
    }
