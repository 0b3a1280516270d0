"""What every API route starts from: the caller, the services, the time left and the request id,
built in one place (and the log keys that go with them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from provisioning.adapters.composition import get_services
from provisioning.domain.budget import Budget
from provisioning.domain.models import User, parse_dsn
from provisioning.observability import logger
from provisioning.ports import Services


@dataclass(frozen=True)
class RouteContext:
    event: APIGatewayProxyEvent
    user: User
    services: Services
    budget: Budget
    request_id: str  # API Gateway's (the logs' correlation id); Lambda's if there is none
    dsn: str = ""  # the path's DSN, checked, when the route has one

    @property
    def body(self) -> str | None:
        return self.event.body

    @property
    def base64_encoded(self) -> bool:
        return bool(self.event.is_base64_encoded)


def route_context(router: BaseRouter, dsn: str | None = None) -> RouteContext:
    """The route's context; ``dsn``: the path's DSN, held to the body's rule (DSN_INVALID...)."""
    event = cast(APIGatewayProxyEvent, router.current_event)
    user = User.from_claims(event.request_context.authorizer.claims)
    checked = parse_dsn(dsn) if dsn is not None else ""
    logger.append_keys(caller=user.sub, **({"dsn": checked} if checked else {}))
    context = router.lambda_context
    return RouteContext(
        event=event,
        user=user,
        services=get_services(),
        budget=Budget(context.get_remaining_time_in_millis),
        request_id=event.request_context.request_id or context.aws_request_id,
        dsn=checked,
    )
