"""A deployed stack as the smoke test, the CA fetch and the teardown see it.

In AWS: the CloudFormation stack's Outputs and resources (``--stack-name``, the region of the
AWS configuration or ``--region``). Offline: the state file ``devstack up`` writes
(``--state``), whose ``endpoint_url`` points every client at the emulator. The same code runs
on both; only where the clients connect differs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from tools import answers

# Every call: short timeouts, a few attempts.
CLIENT_CONFIG = Config(
    connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
)
DEFAULT_STACK = "iot-device-onboarding"


class StackError(RuntimeError):
    """No such stack, no credentials, or a state file that is not one: one line to show."""


@dataclass(frozen=True)
class Stack:
    name: str
    region: str
    outputs: dict[str, str]
    endpoint_url: str | None = None  # the offline emulator; None in AWS
    physical_ids: dict[str, str] = field(default_factory=dict)  # logical ID -> physical ID

    def client(self, service: str) -> Any:
        # The emulator takes any credentials, and a machine with no AWS account has none: give
        # it moto's dummy ones. In AWS, boto3's own chain finds the caller's.
        offline = (
            {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            if self.endpoint_url
            else {}
        )
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=CLIENT_CONFIG,
            **offline,
        )

    def output(self, key: str) -> str:
        if key not in self.outputs:
            raise StackError(f"stack {self.name} has no output {key}; is it this project's stack?")
        return self.outputs[key]

    @property
    def api_url(self) -> str:
        return self.output("ApiUrl").rstrip("/")


def from_cloudformation(name: str, region: str | None = None) -> Stack:
    """The stack's Outputs and its resources' physical IDs."""
    try:
        cfn = boto3.client("cloudformation", region_name=region, config=CLIENT_CONFIG)
        described = cfn.describe_stacks(StackName=name)["Stacks"][0]
        physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for page in cfn.get_paginator("list_stack_resources").paginate(StackName=name)
            for r in page["StackResourceSummaries"]
            if r.get("PhysicalResourceId")
        }
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise StackError(f"stack {name}: {error.get('Code')}: {error.get('Message')}") from exc
    except NoRegionError as exc:
        raise StackError(
            f"cannot read stack {name}: no AWS Region; set AWS_REGION (or AWS_DEFAULT_REGION) "
            'or pass STACK_ARGS="--region REGION"'
        ) from exc
    except NoCredentialsError as exc:
        raise StackError(
            f"cannot read stack {name}: no AWS credentials; run `aws configure` (or "
            "`aws sso login`), or set AWS_PROFILE"
        ) from exc
    except BotoCoreError as exc:
        raise StackError(f"cannot read stack {name}: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    return Stack(name, cfn.meta.region_name, outputs, None, physical)


def from_state(path: Path) -> Stack:
    """The offline stack of ``devstack up`` (its state file)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return Stack(
            name=str(state.get("stack_name", "devstack")),
            region=str(state["region"]),
            outputs={
                **state["outputs"],
                "ApiUrl": state.get("api_url") or state["outputs"]["ApiUrl"],
            },
            endpoint_url=state["endpoint_url"],
        )
    except FileNotFoundError:
        raise StackError(f"{path}: no such file; is `make up` running?") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{path}: not an offline stack state file ({exc!r})") from exc


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack-name",
        help=f"the deployed stack (default: samconfig.toml's stack_name, {DEFAULT_STACK})",
    )
    parser.add_argument("--region", help="default: the AWS configuration's")
    parser.add_argument(
        "--state", type=Path, help="the offline stack's state file instead (.local/stack.json)"
    )


def from_args(args: argparse.Namespace) -> Stack:
    if args.state is not None:
        return from_state(args.state)
    name = args.stack_name or answers.samconfig_stack_name("default") or DEFAULT_STACK
    return from_cloudformation(name, args.region)
