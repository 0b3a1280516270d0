"""AWS IoT: the thing group and the shared device policy."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from devstack.cloudformation.resources.base import Creator, DeployState, generated_name


def create_thing_group(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    client = state.client("iot")
    name = props.get("ThingGroupName") or generated_name(state.stack_name, logical_id)
    params: dict[str, Any] = {"thingGroupName": name}
    group_props = props.get("ThingGroupProperties")
    if group_props:
        params["thingGroupProperties"] = {
            "thingGroupDescription": group_props.get("ThingGroupDescription", ""),
            "attributePayload": {
                "attributes": group_props.get("AttributePayload", {}).get("Attributes", {})
            },
        }
    if props.get("Tags"):
        params["tags"] = [{"Key": t["Key"], "Value": t["Value"]} for t in props["Tags"]]
    try:
        created = client.create_thing_group(**params)
        arn, group_id = created["thingGroupArn"], created["thingGroupId"]
    except ClientError as exc:
        # moto gap: a repeated CreateThingGroup raises where AWS succeeds for an identical
        # configuration (a redeploy onto the same server); use the existing group.
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
        described = client.describe_thing_group(thingGroupName=name)
        arn, group_id = described["thingGroupArn"], described["thingGroupId"]
    state.done(logical_id, kind, name, Arn=arn, Id=group_id)


def create_policy(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("iot")
    name = props.get("PolicyName") or generated_name(state.stack_name, logical_id)
    document = props["PolicyDocument"]
    if not isinstance(document, str):
        document = json.dumps(document)
    created = client.create_policy(policyName=name, policyDocument=document)
    state.done(logical_id, kind, name, Arn=created["policyArn"], Id=name)


CREATORS: dict[str, Creator] = {
    "AWS::IoT::ThingGroup": create_thing_group,
    "AWS::IoT::Policy": create_policy,
}
