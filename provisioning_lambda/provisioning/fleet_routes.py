"""The fleet routes: list, transfer, claim, release. Parse, authorise, call, nothing else."""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from .budget import Budget
from .dependencies import get_services
from .fleet import cancel_transfer, claim_device, list_devices, release_device, start_transfer
from .fleet_models import parse_code_body, parse_list_query
from .models import Caller, parse_dsn
from .observability import logger, metrics, tracer

router = Router()  # type: ignore[no-untyped-call]


def _event() -> APIGatewayProxyEvent:
    """The REST proxy event (the router is included in an APIGatewayRestResolver)."""
    return cast(APIGatewayProxyEvent, router.current_event)


def _caller() -> Caller:
    return Caller.from_claims(_event().request_context.authorizer.claims)


def _request_id() -> str:
    return _event().request_context.request_id or router.lambda_context.aws_request_id


def _budget() -> Budget:
    return Budget(router.lambda_context.get_remaining_time_in_millis)


@router.get("/devices")
@tracer.capture_method(capture_response=False)
def get_devices() -> dict[str, Any]:
    event = _event()
    caller = _caller()
    logger.append_keys(caller=caller.sub)
    query = parse_list_query(
        caller, event.query_string_parameters, event.multi_value_query_string_parameters
    )
    return list_devices(query, get_services())


@router.post("/devices/<dsn>/transfer")
@tracer.capture_method(capture_response=False)  # the answer carries the one-time code
def post_transfer(dsn: str) -> dict[str, str | int]:
    caller, dsn = _caller(), parse_dsn(dsn)
    logger.append_keys(dsn=dsn, caller=caller.sub)
    answer = start_transfer(dsn, caller, get_services(), _request_id())
    metrics.add_metric(name="TransferStarted", unit=MetricUnit.Count, value=1)
    return answer


@router.delete("/devices/<dsn>/transfer")
@tracer.capture_method(capture_response=False)
def delete_transfer(dsn: str) -> dict[str, str | bool]:
    event = _event()
    caller, dsn = _caller(), parse_dsn(dsn)
    logger.append_keys(dsn=dsn, caller=caller.sub)
    code = parse_code_body(event.body, base64_encoded=bool(event.is_base64_encoded), required=False)
    return cancel_transfer(dsn, caller, code, get_services(), _request_id())


@router.post("/devices/<dsn>/claim")
@tracer.capture_method(capture_response=False)
def post_claim(dsn: str) -> dict[str, str | bool]:
    event = _event()
    caller, dsn = _caller(), parse_dsn(dsn)
    logger.append_keys(dsn=dsn, caller=caller.sub)
    code = parse_code_body(event.body, base64_encoded=bool(event.is_base64_encoded), required=True)
    answer = claim_device(dsn, code, caller, get_services(), _budget(), _request_id())
    metrics.add_metric(name="TransferClaimed", unit=MetricUnit.Count, value=1)
    return answer


@router.delete("/devices/<dsn>")
@tracer.capture_method(capture_response=False)
def delete_device(dsn: str) -> dict[str, str | bool]:
    caller, dsn = _caller(), parse_dsn(dsn)
    logger.append_keys(dsn=dsn, caller=caller.sub)
    answer = release_device(dsn, caller, get_services(), _budget(), _request_id())
    metrics.add_metric(name="DeviceReleased", unit=MetricUnit.Count, value=1)
    return answer
