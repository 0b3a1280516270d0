"""DynamoDB tables, created as CloudFormation creates them (streams, PITR, TTL, SSE)."""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.resources.base import (
    Creator,
    DeployState,
    flag,
    generated_name,
    numbers,
)


def create_table(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("dynamodb")
    name = props.get("TableName") or generated_name(state.stack_name, logical_id, 255)
    params: dict[str, Any] = {
        key: props[key]
        for key in (
            "AttributeDefinitions",
            "KeySchema",
            "BillingMode",
            "ProvisionedThroughput",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "TableClass",
            "DeletionProtectionEnabled",
            "Tags",
        )
        if key in props
    }
    numbers(params.get("ProvisionedThroughput"))
    for index in params.get("GlobalSecondaryIndexes", []):
        numbers(index.get("ProvisionedThroughput"))
    sse = props.get("SSESpecification")
    if sse:
        params["SSESpecification"] = {
            "Enabled": flag(sse.get("SSEEnabled", False)),
            **{k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse},
        }
    stream = props.get("StreamSpecification")
    if stream:
        params["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    client.create_table(TableName=name, **params)
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        client.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": flag(pitr.get("PointInTimeRecoveryEnabled", False))
            },
        )
    ttl = props.get("TimeToLiveSpecification")
    if ttl and flag(ttl.get("Enabled", False)):
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    table = client.describe_table(TableName=name)["Table"]
    state.done(
        logical_id,
        kind,
        name,
        Arn=table["TableArn"],
        StreamArn=table.get("LatestStreamArn", ""),
    )


CREATORS: dict[str, Creator] = {
    "AWS::DynamoDB::Table": create_table,
}
