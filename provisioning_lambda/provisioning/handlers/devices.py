"""The fleet routes: list, transfer, claim, release. Parse, authorise, call, nothing else."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.metrics import MetricUnit

from provisioning.domain.fleet_models import parse_code_body, parse_list_query
from provisioning.handlers.context import route_context
from provisioning.observability import metrics, tracer
from provisioning.usecases.fleet import (
    cancel_transfer,
    claim_device,
    list_devices,
    release_device,
    start_transfer,
)

router = Router()  # type: ignore[no-untyped-call]


@router.get("/devices")
@tracer.capture_method(capture_response=False)
def get_devices() -> dict[str, Any]:
    ctx = route_context(router)
    query = parse_list_query(
        ctx.user,
        ctx.event.query_string_parameters,
        ctx.event.multi_value_query_string_parameters,
    )
    return list_devices(query, ctx.services)


@router.post("/devices/<dsn>/transfer")
@tracer.capture_method(capture_response=False)  # the answer carries the one-time code
def post_transfer(dsn: str) -> dict[str, str | int]:
    ctx = route_context(router, dsn)
    answer = start_transfer(ctx.dsn, ctx.user, ctx.services, ctx.request_id)
    metrics.add_metric(name="TransferStarted", unit=MetricUnit.Count, value=1)
    return answer


@router.delete("/devices/<dsn>/transfer")
@tracer.capture_method(capture_response=False)
def delete_transfer(dsn: str) -> dict[str, str | bool]:
    ctx = route_context(router, dsn)
    code = parse_code_body(ctx.body, base64_encoded=ctx.base64_encoded, required=False)
    return cancel_transfer(ctx.dsn, ctx.user, code, ctx.services, ctx.request_id)


@router.post("/devices/<dsn>/claim")
@tracer.capture_method(capture_response=False)
def post_claim(dsn: str) -> dict[str, str | bool]:
    ctx = route_context(router, dsn)
    code = parse_code_body(ctx.body, base64_encoded=ctx.base64_encoded, required=True)
    answer = claim_device(ctx.dsn, code, ctx.user, ctx.services, ctx.budget, ctx.request_id)
    metrics.add_metric(name="TransferClaimed", unit=MetricUnit.Count, value=1)
    return answer


@router.delete("/devices/<dsn>")
@tracer.capture_method(capture_response=False)
def delete_device(dsn: str) -> dict[str, str | bool]:
    ctx = route_context(router, dsn)
    answer = release_device(ctx.dsn, ctx.user, ctx.services, ctx.budget, ctx.request_id)
    metrics.add_metric(name="DeviceReleased", unit=MetricUnit.Count, value=1)
    return answer
