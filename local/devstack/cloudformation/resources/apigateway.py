"""API Gateway: the REST API and its stage are recorded, not created; ``apis`` turns what was
recorded into the API model the local gateway serves (devstack.apigateway.api_model)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from devstack.apigateway.api_model import ApiSpec, api_spec
from devstack.cloudformation.resources.base import Creator, DeployState, random_suffix
from devstack.errors import DeployError


def record_rest_api(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    api_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
    state.record(
        logical_id,
        api_id,
        f"({kind}), served by the local gateway",
        RootResourceId=random_suffix(10).lower(),
        _Body=props,
    )


def record_stage(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    stage = props["StageName"]
    state.record(logical_id, stage, f"(stage {stage})", _RestApiId=props["RestApiId"])


def apis(state: DeployState) -> dict[str, ApiSpec]:
    """Every recorded REST API, with its stage, routes, authorizers and models."""
    found: dict[str, ApiSpec] = {}
    stages = {
        attrs["_RestApiId"]: state.physical_ids[logical_id]
        for logical_id, attrs in state.attributes.items()
        if "_RestApiId" in attrs
    }
    function_by_arn = {spec.arn: logical_id for logical_id, spec in state.functions.items()}
    for logical_id, attrs in state.attributes.items():
        if "_Body" not in attrs:
            continue
        body = attrs["_Body"].get("Body")
        if not isinstance(body, dict):
            raise DeployError(f"{logical_id}: only inline API definitions (Body) run offline")
        api_id = state.physical_ids[logical_id]
        found[logical_id] = api_spec(
            logical_id,
            api_id,
            stages.get(api_id, "Prod"),
            body,
            function_by_arn,
            _clients_by_pool(state),
        )
    return found


def _clients_by_pool(state: DeployState) -> dict[str, list[str]]:
    """User pool ID -> IDs of its app clients created by the template."""
    by_pool: dict[str, list[str]] = {}
    for attrs in state.attributes.values():
        if "_UserPoolId" in attrs:
            by_pool.setdefault(attrs["_UserPoolId"], []).append(attrs["ClientId"])
    return by_pool


CREATORS: dict[str, Creator] = {
    "AWS::ApiGateway::RestApi": record_rest_api,
    "AWS::ApiGateway::Stage": record_stage,
}
