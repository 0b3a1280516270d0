"""The API routes: parse, authorise, call the domain, map errors. Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from provisioning.adapters.composition import get_services
from provisioning.config import ConfigError, app_origin
from provisioning.domain.errors import ProvisioningError
from provisioning.domain.models import (
    User,
    parse_challenge_request,
    parse_provision_request,
)
from provisioning.handlers.context import route_context
from provisioning.handlers.devices import router as fleet_router
from provisioning.observability import logger, metrics, tracer
from provisioning.usecases.allowlist import block_entry, load_entries, read_entry
from provisioning.usecases.challenge import issue_challenge
from provisioning.usecases.provision import (
    describe_device,
    provision_device,
    require_member,
    revoke_device,
)


def cors() -> CORSConfig | None:
    """CORS headers on every answer for the phone app's origin (APP_ORIGIN, the template's
    AppOrigin) and for no other; none without one. API Gateway answers the preflight itself."""
    try:
        origin = app_origin()
    except ConfigError:
        logger.exception("APP_ORIGIN is not an origin: answers carry no CORS headers")
        return None
    if origin is None:
        return None
    return CORSConfig(
        allow_origin=origin,
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
        max_age=600,
    )


app = APIGatewayRestResolver(cors=cors())
app.include_router(fleet_router)  # GET /devices, transfer, claim, DELETE /devices/{dsn}


def members_only(
    resolver: APIGatewayRestResolver, next_middleware: NextMiddleware
) -> Response[Any]:
    """Before any route reads its input: a caller in neither group is refused NOT_A_MEMBER
    (403), whatever the route and whatever the request (the domain checks again)."""
    require_member(User.from_claims(resolver.current_event.request_context.authorizer.claims))
    return next_middleware(resolver)


app.use(middlewares=[members_only])

# The clients are made during INIT, with the environment's full CPU and before any request
# waits on them. Whatever fails here (a configuration error, a bad AWS_* setting) is only
# deferred: it fails again at the first request, which answers it as every request would.
with contextlib.suppress(Exception):
    get_services()


@app.post("/certificate")
@tracer.capture_method(capture_response=False)  # the response carries the encrypted key
def post_certificate() -> dict[str, str]:
    ctx = route_context(app)
    request = parse_provision_request(ctx.body, base64_encoded=ctx.base64_encoded)
    logger.append_keys(dsn=request.dsn)
    result = provision_device(request, ctx.user, ctx.services, ctx.budget, ctx.request_id)
    metrics.add_metric(name="DeviceProvisioned", unit=MetricUnit.Count, value=1)
    return result.to_response()


@app.post("/certificate/challenge")
@tracer.capture_method(capture_response=False)
def post_certificate_challenge() -> dict[str, str]:
    ctx = route_context(app)
    dsn = parse_challenge_request(ctx.body, base64_encoded=ctx.base64_encoded)
    logger.append_keys(dsn=dsn)
    return issue_challenge(dsn, ctx.user, ctx.services)


@app.get("/devices/<dsn>")
@tracer.capture_method(capture_response=False)
def get_device(dsn: str) -> dict[str, str | bool]:
    ctx = route_context(app, dsn)
    return describe_device(ctx.dsn, ctx.user, ctx.services)


@app.delete("/devices/<dsn>/certificate")
@tracer.capture_method(capture_response=False)
def delete_device_certificate(dsn: str) -> dict[str, str | bool]:
    ctx = route_context(app, dsn)
    result = revoke_device(ctx.dsn, ctx.user, ctx.services, ctx.budget, ctx.request_id)
    metrics.add_metric(name="DeviceRevoked", unit=MetricUnit.Count, value=1)
    return result


@app.post("/allowlist")
@tracer.capture_method(capture_response=False)
def post_allowlist() -> dict[str, object]:
    ctx = route_context(app)
    return load_entries(
        ctx.body, ctx.user, ctx.services, ctx.budget, base64_encoded=ctx.base64_encoded
    )


@app.get("/allowlist/<dsn>")
@tracer.capture_method(capture_response=False)
def get_allowlist_entry(dsn: str) -> dict[str, str]:
    ctx = route_context(app)  # read_entry checks the DSN after the caller's group
    return read_entry(dsn, ctx.user, ctx.services)


@app.post("/allowlist/<dsn>/block")
@tracer.capture_method(capture_response=False)
def post_allowlist_block(dsn: str) -> dict[str, str]:
    ctx = route_context(app)  # block_entry checks the DSN after the caller's group
    result = block_entry(dsn, ctx.user, ctx.services, ctx.budget, request_id=ctx.request_id)
    metrics.add_metric(name="DeviceBlocked", unit=MetricUnit.Count, value=1)
    return result


@app.not_found  # type: ignore[untyped-decorator]
def no_such_route(_: Exception) -> Response[str]:
    return _error(404, "There is no such resource.", "NOT_FOUND")


@app.exception_handler(ProvisioningError)  # type: ignore[untyped-decorator]
def domain_error(error: ProvisioningError) -> Response[str]:
    logger.warning("request refused", extra=error.log_fields())
    if error.status >= 500 or error.status == 429:
        metrics.add_metric(name="ProvisioningFailed", unit=MetricUnit.Count, value=1)
    headers = {"Retry-After": str(error.retry_after_seconds)} if error.retry_after_seconds else {}
    return _error(error.status, error.message, error.code, headers)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def unexpected_error(error: Exception) -> Response[str]:
    # The type only: an exception's text may quote request data.
    logger.error("unexpected error", extra={"error": type(error).__name__})
    metrics.add_metric(name="ProvisioningFailed", unit=MetricUnit.Count, value=1)
    return _error(500, "Something went wrong on our side; retry later.", "INTERNAL_ERROR")


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps({"msg": message, "code": code}),
        headers=headers or {},
    )


@logger.inject_lambda_context(
    clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False
)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
