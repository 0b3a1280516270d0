"""AWS IoT topic rules and the Lambda permissions that let IoT run their actions.

Neither is created in moto: the offline broker runs the rules (devstack.iot.topic_rules). A rule is
parsed here, so a rule the broker could not run as AWS IoT would (SQL outside the supported
subset, an action other than Lambda) fails the deployment with a message naming it.
"""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.resources.base import Creator, DeployState, random_suffix
from devstack.iot.topic_rules import Permission, parse_rule


def create_topic_rule(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    # CloudFormation's generated rule names keep to [A-Za-z0-9_], as IoT requires.
    name = props.get("RuleName") or f"{logical_id}_{random_suffix()}"[:128]
    arn = state.arn("iot", f"rule/{name}")
    state.topic_rules.append(parse_rule(name, arn, props.get("TopicRulePayload") or {}))
    state.record(logical_id, name, f"(topic rule {name}), run by the offline broker", Arn=arn)


def create_permission(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    permission = Permission(
        function=str(props["FunctionName"]),
        action=str(props["Action"]),
        principal=str(props["Principal"]),
        source_arn=str(props["SourceArn"]) if props.get("SourceArn") else None,
        source_account=str(props["SourceAccount"]) if props.get("SourceAccount") else None,
    )
    state.permissions.append(permission)
    state.record(
        logical_id,
        f"{logical_id}-{random_suffix()}",
        f"(Lambda permission for {permission.principal})",
    )


CREATORS: dict[str, Creator] = {
    "AWS::IoT::TopicRule": create_topic_rule,
    "AWS::Lambda::Permission": create_permission,
}
