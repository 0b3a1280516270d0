"""CloudWatch Logs log groups, with their retention."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from devstack.cloudformation.resources.base import Creator, DeployState, generated_name


def create_log_group(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("logs")
    name = props.get("LogGroupName") or generated_name(state.stack_name, logical_id, 512)
    try:
        client.create_log_group(logGroupName=name)
        if "RetentionInDays" in props:
            client.put_retention_policy(
                logGroupName=name, retentionInDays=int(props["RetentionInDays"])
            )
    except ClientError as exc:  # a log group is not worth stopping the local stack for
        state.say(f"  note   {logical_id}: log group not created ({exc})")
    state.done(logical_id, kind, name, Arn=state.arn("logs", f"log-group:{name}:*"))


CREATORS: dict[str, Creator] = {
    "AWS::Logs::LogGroup": create_log_group,
}
