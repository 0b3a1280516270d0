"""What every resource module shares: the deployment's state and CloudFormation's habits.

``DeployState`` is the small state a deployment passes to each resource's creator: where to
create (clients), what exists so far (physical IDs and attributes, by logical ID), and what
the offline stack keeps for later (functions, users, custom resource data).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from devstack.awslambda.runtime import FunctionSpec, Invoker
from devstack.iot.topic_rules import Permission, TopicRule

Progress = Callable[[str], None]

URL_SUFFIX = "amazonaws.com"
_ALNUM = string.ascii_uppercase + string.digits


@dataclass
class DeployState:
    stack_name: str
    stack_id: str
    region: str
    account_id: str
    endpoint_url: str | None
    code_uris: dict[str, Path]  # logical ID -> CodeUri of each AWS::Serverless::Function
    invoker: Invoker
    run_custom_resources: bool = True
    progress: Progress | None = None
    physical_ids: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # logical ID -> why not created
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    user_passwords: dict[str, str] = field(default_factory=dict)
    group_members: list[tuple[str, str]] = field(default_factory=list)  # (group, username)
    custom_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    topic_rules: list[TopicRule] = field(default_factory=list)  # run by the offline broker
    permissions: list[Permission] = field(default_factory=list)  # AWS::Lambda::Permission
    _clients: dict[str, Any] = field(default_factory=dict)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url
            )
        return self._clients[service]

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account_id}:{resource}"

    def done(self, logical_id: str, kind: str, physical_id: str, **attributes: Any) -> None:
        """A resource created: its physical ID and the attributes Fn::GetAtt can read."""
        self.physical_ids[logical_id] = physical_id
        self.attributes[logical_id] = attributes
        self.say(f"  create {logical_id} ({kind}): {physical_id}")

    def record(self, logical_id: str, physical_id: str, message: str, **attributes: Any) -> None:
        """A resource with no offline counterpart: named, given attributes, not created."""
        self.physical_ids[logical_id] = physical_id
        self.attributes[logical_id] = attributes
        self.say(f"  record {logical_id} {message}")

    def placeholder(self, logical_id: str, kind: str) -> None:
        """A resource type no module creates: it gets a name and an ARN, nothing else."""
        service = kind.split("::")[1].lower() if kind.count("::") >= 2 else "unknown"
        name = generated_name(self.stack_name, logical_id, 64)
        self.record(logical_id, name, f"({kind}), not created offline", Arn=self.arn(service, name))

    def logical_id_of(self, physical_id: str) -> str | None:
        return next((k for k, v in self.physical_ids.items() if v == physical_id), None)


Creator = Callable[[DeployState, str, str, dict[str, Any]], None]


def random_suffix(length: int = 13) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def generated_name(stack: str, logical_id: str, limit: int = 128) -> str:
    """A physical name the way CloudFormation makes one: <stack>-<LogicalId>-<RANDOM>."""
    suffix = random_suffix()
    room = limit - len(suffix) - 2
    prefix = f"{stack}-{logical_id}"[:room]
    return f"{prefix}-{suffix}"


def filter_params(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the API operation accepts (CloudFormation has a few extra knobs)."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    return {key: value for key, value in params.items() if key in shape.members}


def flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def numbers(throughput: dict[str, Any] | None) -> None:
    if throughput:
        for key, value in throughput.items():
            throughput[key] = int(value)


def numbers_deep(value: Any) -> None:
    """CloudFormation passes numbers as strings; boto3 wants ints and bools."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and item.isascii() and item.isdigit():
                value[key] = int(item)
            elif isinstance(item, str) and item.lower() in ("true", "false"):
                value[key] = item.lower() == "true"
            else:
                numbers_deep(item)
