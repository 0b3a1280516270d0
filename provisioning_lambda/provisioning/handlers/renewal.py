"""The renewal function's entry point: what an IoT topic rule delivers from a device's
``certificate/renew`` or ``certificate/renew/confirm`` topic, answered on ``renew/accepted`` or
``renew/rejected``. The work itself is in renewal.py."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from provisioning.adapters.composition import get_services
from provisioning.domain.budget import Budget
from provisioning.domain.errors import ProvisioningError
from provisioning.observability import logger, metrics, tracer
from provisioning.ports import Services
from provisioning.usecases.renew import (
    answer_topic,
    confirm_renewal,
    invocation_id,
    is_confirm_event,
    parse_renewal_event,
    rejection,
    renew_certificate,
    thing_of,
)


@logger.inject_lambda_context(clear_state=True, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)  # the answer carries a certificate
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    """Never raises: an asynchronous invocation that failed would be retried by Lambda, while
    the device retries on its own once it reads the rejection (or hears nothing)."""
    services = get_services()
    settings = services.settings
    thing = thing_of(event, settings.thing_prefix)
    logger.append_keys(thing_name=thing or None)
    try:
        message = parse_renewal_event(event, settings.thing_prefix)
        logger.append_keys(dsn=message.dsn, confirm=message.is_confirm)
        budget = Budget(context.get_remaining_time_in_millis)
        request_id = invocation_id(context.aws_request_id)
        if message.is_confirm:
            retired = confirm_renewal(message, services, budget, request_id)
            metrics.add_metric(name="RenewalConfirmed", unit=MetricUnit.Count, value=int(retired))
            return {"result": "CONFIRMED"}
        result = renew_certificate(message, services, budget, request_id)
    except ProvisioningError as error:
        logger.warning("renewal refused", extra=error.log_fields())
        return _refuse(
            services,
            thing,
            event,
            error.code,
            error.message,
            error.status,
            error.retry_after_seconds,
        )
    except Exception as error:
        logger.error("unexpected error", extra={"error": type(error).__name__})
        logger.warning("renewal refused", extra={"code": "INTERNAL_ERROR", "status": 500})
        return _refuse(
            services, thing, event, "INTERNAL_ERROR", "Something went wrong; retry later.", 500
        )
    metrics.add_metric(name="DeviceRenewed", unit=MetricUnit.Count, value=1)
    _publish(services, answer_topic(message.thing_name, True), result.to_message())
    return {"result": "ACCEPTED", "certificateId": result.certificate_id}


def _refuse(
    services: Services,
    thing: str,
    event: object,
    code: str,
    message: str,
    status: int,
    retry_after: int = 0,
) -> dict[str, str]:
    if status >= 500 or status == 429:
        metrics.add_metric(name="RenewalFailed", unit=MetricUnit.Count, value=1)
    # A confirm has no answer topic; a message for no device of the fleet has no one to answer.
    if thing and not is_confirm_event(event):
        _publish(services, answer_topic(thing, False), rejection(code, message, retry_after))
    return {"result": "REJECTED", "code": code}


def _publish(services: Services, topic: str, payload: dict[str, Any]) -> None:
    """A lost answer is not fatal: the device asks again (from the certificate it has)."""
    if services.publisher is None:
        logger.error("no publisher configured")
        return
    try:
        services.publisher.publish(topic, payload)
    except ProvisioningError as error:
        logger.warning("answer not published", extra={"code": error.code})
