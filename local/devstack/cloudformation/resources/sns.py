"""Amazon SNS topics, created in moto as CloudFormation creates them (Ref is the topic ARN)."""

from __future__ import annotations

from typing import Any

from devstack.cloudformation.resources.base import Creator, DeployState, generated_name


def create_topic(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("sns")
    name = props.get("TopicName") or generated_name(state.stack_name, logical_id, 256)
    attributes = {
        key: str(props[key]) for key in ("DisplayName", "KmsMasterKeyId") if props.get(key)
    }
    params: dict[str, Any] = {"Name": name, "Attributes": attributes}
    if props.get("Tags"):
        params["Tags"] = [{"Key": t["Key"], "Value": t["Value"]} for t in props["Tags"]]
    arn = client.create_topic(**params)["TopicArn"]
    for subscription in props.get("Subscription") or []:
        client.subscribe(
            TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"]
        )
    state.done(logical_id, kind, arn, TopicArn=arn, TopicName=name)


CREATORS: dict[str, Creator] = {
    "AWS::SNS::Topic": create_topic,
}
