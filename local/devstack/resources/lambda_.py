"""Lambda functions: recorded, not created in moto.

Each becomes a ``FunctionSpec`` (handler, code directory, resolved environment, timeout,
memory, reserved concurrency) that an ``Invoker`` (devstack.runtime) runs.
"""

from __future__ import annotations

from typing import Any

from devstack.errors import DeployError
from devstack.intrinsics import NO_VALUE
from devstack.resources.base import Creator, DeployState, generated_name
from devstack.runtime import FunctionSpec


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


CREATORS: dict[str, Creator] = {
    "AWS::Lambda::Function": record_function,
}
