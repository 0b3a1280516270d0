"""Lambda functions: recorded, not created in moto.

Each becomes a ``FunctionSpec`` (handler, code directory, resolved environment, timeout,
memory, reserved concurrency) that an ``Invoker`` (devstack.awslambda.runtime) runs. An
``AWS::Lambda::EventInvokeConfig`` sets its function's maximum event age and retries, which
asynchronous invocations (devstack.iot.topic_rules) honour.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from devstack.awslambda.runtime import FunctionSpec
from devstack.cloudformation.intrinsics import NO_VALUE
from devstack.cloudformation.resources.base import Creator, DeployState, generated_name
from devstack.errors import DeployError


def _as_env(value: Any) -> str:
    if value is NO_VALUE:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def record_function(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    name = props.get("FunctionName") or generated_name(state.stack_name, logical_id, 64)
    arn = state.arn("lambda", f"function:{name}")
    code_uri = state.code_uris.get(logical_id)
    if code_uri is None:
        raise DeployError(f"{logical_id}: only AWS::Serverless::Function code runs offline")
    variables = (props.get("Environment") or {}).get("Variables") or {}
    state.functions[logical_id] = FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=arn,
        handler=props["Handler"],
        code_uri=code_uri,
        environment={key: _as_env(value) for key, value in variables.items()},
        timeout=int(props.get("Timeout", 3)),
        memory_size=int(props.get("MemorySize", 128)),
        reserved_concurrency=(
            int(props["ReservedConcurrentExecutions"])
            if props.get("ReservedConcurrentExecutions") is not None
            else None
        ),
    )
    state.physical_ids[logical_id] = name
    state.attributes[logical_id] = {"Arn": arn}
    state.say(f"  record {logical_id} (Lambda): {props['Handler']}")


def record_event_invoke_config(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    name = str(props["FunctionName"])
    found = [
        spec for spec in state.functions.values() if name in (spec.name, spec.arn, spec.logical_id)
    ]
    if not found:
        raise DeployError(f"{logical_id}: no function {name} in this stack")
    if props.get("Qualifier", "$LATEST") != "$LATEST":
        raise DeployError(f"{logical_id}: only the $LATEST qualifier runs offline")
    function = found[0]
    age = int(props.get("MaximumEventAgeInSeconds", function.maximum_event_age))
    retries = int(props.get("MaximumRetryAttempts", function.maximum_retry_attempts))
    if not 60 <= age <= 21600 or not 0 <= retries <= 2:
        raise DeployError(
            f"{logical_id}: MaximumEventAgeInSeconds must be 60-21600 and MaximumRetryAttempts 0-2"
        )
    state.functions[function.logical_id] = dataclasses.replace(
        function, maximum_event_age=age, maximum_retry_attempts=retries
    )
    state.physical_ids[logical_id] = f"{function.name}:$LATEST"
    state.say(f"  record {logical_id} (async: events {age} s, {retries} retries)")


CREATORS: dict[str, Creator] = {
    "AWS::Lambda::Function": record_function,
    "AWS::Lambda::EventInvokeConfig": record_event_invoke_config,
}
