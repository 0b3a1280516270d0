"""Custom resources: the real handler runs through the invoker with a Create event
(devstack.cloudformation.custom_resource)."""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.custom_resource import run_create
from devstack.cloudformation.resources.base import DeployState
from devstack.errors import DeployError


def _stringify(value: Any) -> Any:
    """CloudFormation hands custom resources every scalar property as a string."""
    if isinstance(value, dict):
        return {key: _stringify(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stringify(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def run_custom_resource(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    token = props.get("ServiceToken")
    function = next((f for f in state.functions.values() if f.arn == token), None)
    if function is None:
        raise DeployError(
            f"{logical_id}: ServiceToken {token!r} is not a Lambda function of this template"
        )
    if not state.run_custom_resources:
        state.skipped[logical_id] = "custom resources disabled (run_custom_resources=False)"
        state.say(f"  skip   {logical_id} ({kind}): custom resources disabled")
        return
    state.say(f"  invoke {logical_id} ({kind}) -> {function.handler}")
    result = run_create(
        function,
        logical_id=logical_id,
        resource_type=kind,
        properties=_stringify(props),
        stack_id=state.stack_id,
        invoker=state.invoker,
    )
    state.custom_data[logical_id] = result.data
    state.done(logical_id, kind, result.physical_id, **result.data)
