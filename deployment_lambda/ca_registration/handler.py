"""Lambda entry point of Custom::IoTCaRegistration: parse, dispatch, always answer."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from ca_registration import service
from ca_registration.adapters import Adapters, get_adapters
from ca_registration.budget import Budget
from ca_registration.errors import CaRegistrationError
from ca_registration.models import (
    CaRegistrationProperties,
    CreateEvent,
    DeleteEvent,
    Outcome,
    UpdateEvent,
    parse_event,
    parse_properties,
)
from ca_registration.observability import logger, tracer
from ca_registration.responder import Envelope, Responder

TIMEOUT_MARGIN_S = 10.0  # answer FAILED this long before Lambda would kill the invocation


@logger.inject_lambda_context(log_event=False, clear_state=True)  # event has the ResponseURL
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    process(event, context, get_adapters(), TIMEOUT_MARGIN_S)


def process(event: dict[str, Any], context: Any, adapters: Adapters, margin_s: float) -> None:
    response_url = event.get("ResponseURL")
    if not isinstance(response_url, str) or not response_url:
        logger.error("event without ResponseURL: nothing to answer")
        return
    # The raw URL, not the parsed HttpUrl: re-encoding would break the pre-signed signature.
    responder = Responder(
        response_url,
        Envelope(
            str(event.get("StackId", "")),
            str(event.get("RequestId", "")),
            str(event.get("LogicalResourceId", "")),
        ),
    )
    progress = service.Progress()
    deadline = Budget(context, margin_s)

    def failed_id() -> str:
        # Update/Delete: a failure never changes the physical id. Create: the CA registered so
        # far, else a placeholder that Delete recognises as "nothing registered".
        existing = event.get("PhysicalResourceId")
        if isinstance(existing, str) and existing:
            return existing
        return progress.registered_id or f"failed-{event.get('RequestId', '')}"

    def on_timeout() -> None:
        responder.send(
            "FAILED",
            failed_id(),
            reason="timed out: the Lambda function was about to run out of time",
        )

    # Work stops at `margin_s` before the end (bounded waits fail with their own reason); the
    # watchdog is the backstop for a call that hangs, half the margin later.
    watchdog = threading.Timer(max(0.0, deadline.seconds_left() + margin_s / 2), on_timeout)
    watchdog.daemon = True
    watchdog.start()
    try:
        outcome = _dispatch(event, deadline, progress, adapters)
        responder.send("SUCCESS", outcome.physical_resource_id, outcome.data, outcome.reason)
    except (CaRegistrationError, ValidationError) as error:
        logger.warning("custom resource failed", extra={"error": _short(error)})
        responder.send("FAILED", failed_id(), reason=_short(error))
    except Exception as error:  # every other failure must still answer
        logger.exception("custom resource failed unexpectedly")
        responder.send(
            "FAILED",
            failed_id(),
            reason=f"internal error ({type(error).__name__}); see the function's logs",
        )
    finally:
        watchdog.cancel()


def _dispatch(
    raw: dict[str, Any], deadline: Budget, progress: service.Progress, adapters: Adapters
) -> Outcome:
    event = parse_event(raw)
    logger.append_keys(
        request_type=event.request_type,
        logical_resource_id=event.logical_resource_id,
        cfn_request_id=event.request_id,
    )
    request = service.Request(event.request_id, event.stack_id, deadline, progress)
    if isinstance(event, CreateEvent):
        return service.on_create(parse_properties(event.resource_properties), request, adapters)
    if isinstance(event, UpdateEvent):
        old = _lenient_properties(event.old_resource_properties)
        return service.on_update(
            parse_properties(event.resource_properties),
            old,
            event.physical_resource_id,
            request,
            adapters,
        )
    assert isinstance(event, DeleteEvent)
    # Delete must succeed even for a resource whose Create failed on bad properties.
    return service.on_delete(
        _lenient_properties(event.resource_properties),
        event.physical_resource_id,
        request,
        adapters,
    )


def _lenient_properties(raw: Any) -> CaRegistrationProperties | None:
    try:
        return parse_properties(raw)
    except ValidationError:
        return None


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        fields = ", ".join(
            ".".join(str(part) for part in detail["loc"]) for detail in error.errors()
        )
        return f"invalid event or properties: {fields}"
    return str(error)
