"""IAM roles: named and given an ARN, not created (IAM is not evaluated offline)."""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.resources.base import (
    Creator,
    DeployState,
    generated_name,
    random_suffix,
)


def record_role(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    name = props.get("RoleName") or generated_name(state.stack_name, logical_id, 64)
    state.record(
        logical_id,
        name,
        f"({kind}), IAM is not evaluated offline",
        Arn=state.arn("iam", f"role/{name}", region=False),
        RoleId="AROA" + random_suffix(17),
    )


CREATORS: dict[str, Creator] = {"AWS::IAM::Role": record_role}
