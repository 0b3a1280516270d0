"""Tear a deployed stack down: the stack, then the Private CA, then what the stack keeps.

    python -m tools.destroy [--stack-name NAME] [--region R] [--yes] [--sam PATH]   # make destroy

1. Before anything is deleted, read the stack's Outputs and resources: the CA's ARN and the
   physical IDs of the resources template.yaml keeps (``DeletionPolicy: Retain``).
2. ``sam delete`` the stack (its functions, API, log groups, policy... go).
3. After a confirmation (or ``--yes``): the Private CAs, the issuing CA then the root, each
   disabled (UpdateCertificateAuthority DISABLED) and scheduled for deletion in 7 days
   (DeleteCertificateAuthority; it can be restored until then with ``aws acm-pca
   restore-certificate-authority``). Every device certificate they issued stops being trusted.
   Declined: the commands are printed.
4. The kept resources (tables, user pool, thing group, logging role...), each with the exact
   commands that remove it. They are listed, not deleted: device ownership and the audit
   trail live there, and the logging role may serve the account's other APIs.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tools import deployed, template_facts

CA_TYPES = {"AWS::ACMPCA::CertificateAuthority", "AWS::ACMPCA::CertificateAuthorityActivation"}
DELETION_DAYS = 7  # the shortest wait AWS Private CA allows


@dataclass(frozen=True)
class Call:
    """One AWS API call: run with boto3, or printed as the AWS CLI command that makes it."""

    service: str
    operation: str  # boto3's method name
    params: dict[str, Any]

    def run(self, stack: deployed.Stack) -> Any:
        return getattr(stack.client(self.service), self.operation)(**self.params)

    def command(self, region: str) -> str:
        words = ["aws", self.service, self.operation.replace("_", "-")]
        for key, value in self.params.items():
            words.append("--" + re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower())
            words.append(str(value))
        words += ["--region", region]
        return " ".join(shlex.quote(word) for word in words)


@dataclass(frozen=True)
class Kept:
    """A resource the stack leaves behind, and how to remove it."""

    logical_id: str
    type: str
    physical_id: str
    calls: tuple[Call, ...]
    note: str = ""


def ca_calls(arn: str) -> tuple[Call, Call]:
    return (
        Call(
            "acm-pca",
            "update_certificate_authority",
            {"CertificateAuthorityArn": arn, "Status": "DISABLED"},
        ),
        Call(
            "acm-pca",
            "delete_certificate_authority",
            {"CertificateAuthorityArn": arn, "PermanentDeletionTimeInDays": DELETION_DAYS},
        ),
    )


def _role_calls(stack: deployed.Stack, role: str) -> tuple[tuple[Call, ...], str]:
    iam = stack.client("iam")
    try:
        attached = iam.list_attached_role_policies(RoleName=role).get("AttachedPolicies", [])
        inline = iam.list_role_policies(RoleName=role).get("PolicyNames", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return (), "already removed"
        raise
    calls = [
        Call("iam", "detach_role_policy", {"RoleName": role, "PolicyArn": p["PolicyArn"]})
        for p in attached
    ]
    calls += [
        Call("iam", "delete_role_policy", {"RoleName": role, "PolicyName": name}) for name in inline
    ]
    calls.append(Call("iam", "delete_role", {"RoleName": role}))
    note = "API Gateway's account setting names it: other APIs of the account stop logging"
    return tuple(calls), note


def plan(stack: deployed.Stack, template: template_facts.Template) -> list[Kept]:
    """The retained resources the stack has, with their removal calls (read-only)."""
    kept = []
    for resource in template.retained():
        physical = stack.physical_ids.get(resource.logical_id)
        if not physical:
            continue  # not created (its condition was false)
        calls: tuple[Call, ...] = ()
        note = ""
        if resource.type == "AWS::DynamoDB::Table":
            calls = (Call("dynamodb", "delete_table", {"TableName": physical}),)
            note = "holds data: back it up first if you may need it"
        elif resource.type == "AWS::Cognito::UserPool":
            calls = (Call("cognito-idp", "delete_user_pool", {"UserPoolId": physical}),)
            note = "every user goes with it"
        elif resource.type == "AWS::Cognito::UserPoolUser":
            note = "removed with the user pool"
        elif resource.type == "AWS::IoT::ThingGroup":
            calls = (Call("iot", "delete_thing_group", {"thingGroupName": physical}),)
            note = "the devices' things stay (aws iot list-things-in-thing-group first)"
        elif resource.type == "AWS::IAM::Role":
            calls, note = _role_calls(stack, physical)
        elif resource.type in CA_TYPES:
            note = "the Private CA: disabled and scheduled for deletion above"
            if resource.type == "AWS::ACMPCA::CertificateAuthority":
                calls = ca_calls(physical)
        else:
            note = "no removal command known: remove it in the console"
        kept.append(Kept(resource.logical_id, resource.type, physical, calls, note))
    return kept


def retire_ca(stack: deployed.Stack, arn: str) -> str:
    """Disable the CA (if active) and schedule its deletion; the status it ends in."""
    acmpca = stack.client("acm-pca")
    status = str(
        acmpca.describe_certificate_authority(CertificateAuthorityArn=arn)["CertificateAuthority"][
            "Status"
        ]
    )
    if status == "DELETED":
        return status
    disable, delete = ca_calls(arn)
    if status == "ACTIVE":
        disable.run(stack)
    delete.run(stack)
    return str(
        acmpca.describe_certificate_authority(CertificateAuthorityArn=arn)["CertificateAuthority"][
            "Status"
        ]
    )


def iot_ca_left(stack: deployed.Stack, certificate_id: str | None) -> list[Kept]:
    """The CA's IoT registration, if the stack's delete left it (device certificates from
    the CA were still registered): deleting it needs those certificates gone first."""
    if not certificate_id:
        return []
    try:
        stack.client("iot").describe_ca_certificate(certificateId=certificate_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return []
        raise
    calls = (
        Call(
            "iot",
            "update_ca_certificate",
            {"certificateId": certificate_id, "newStatus": "INACTIVE"},
        ),
        Call("iot", "delete_ca_certificate", {"certificateId": certificate_id}),
    )
    note = "left because device certificates from the CA are registered: delete those first"
    return [Kept("IoT CA registration", "AWS::IoT::CACertificate", certificate_id, calls, note)]


def render(kept: Sequence[Kept], region: str) -> list[str]:
    lines = ["Kept by the stack (DeletionPolicy: Retain); to remove them:"]
    for item in kept:
        lines.append(f"- {item.logical_id} ({item.type}) {item.physical_id}: {item.note}")
        lines += [f"    {call.command(region)}" for call in item.calls]
    return lines


def delete_stack(sam: str, stack: deployed.Stack) -> int:
    command = [sam, "delete", "--stack-name", stack.name, "--region", stack.region, "--no-prompts"]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(command, env=env, check=False).returncode  # noqa: S603


def stack_cas(stack: deployed.Stack) -> list[str]:
    """The stack's Private CAs, the issuing CA first (it goes before the root that signed it);
    a stack deployed before the issuing CA existed has the root alone."""
    issuing = stack.outputs.get("IssuingCertificateAuthorityArn")
    return [*([issuing] if issuing else []), stack.output("CertificateAuthorityArn")]


def _commands(arns: Sequence[str], region: str) -> str:
    return "\n".join(f"    {call.command(region)}" for arn in arns for call in ca_calls(arn))


def confirm(arns: Sequence[str], ask: Callable[[str], str]) -> bool:
    question = (
        f"Disable the Private CA{'s' if len(arns) > 1 else ''} {' and '.join(arns)} and delete "
        f"{'them' if len(arns) > 1 else 'it'} in {DELETION_DAYS} days? Devices holding their "
        "certificates can no longer connect. Type 'yes' to go on: "
    )
    try:
        return ask(question).strip().lower() == "yes"
    except EOFError:
        return False


def teardown(
    stack: deployed.Stack,
    *,
    template: template_facts.Template,
    delete: Callable[[deployed.Stack], int],
    ask: Callable[[str], str] | None,
    say: Callable[[str], None] = print,
) -> int:
    """The whole teardown; ``ask`` None means confirmed (``--yes``)."""
    kept = plan(stack, template)  # read everything first: the stack is about to go
    arns = stack_cas(stack)
    iot_ca = stack.outputs.get("IotCaCertificateId")
    if (status := delete(stack)) != 0:
        say(f"destroy: `sam delete` failed (status {status}); nothing else was changed")
        return 1
    say(f"destroy: stack {stack.name} deleted")
    if ask is None or confirm(arns, ask):
        for index, arn in enumerate(arns):
            try:
                say(f"destroy: Private CA {arn} is {retire_ca(stack, arn)} (deleted in 7 days)")
            except (ClientError, BotoCoreError) as exc:
                say(f"destroy: the Private CA could not be retired ({type(exc).__name__}): run")
                say(_commands(arns[index:], stack.region))
                return 1
    else:
        say("destroy: the Private CAs are kept (and billed); to retire them later:")
        say(_commands(arns, stack.region))
    kept = [k for k in kept if k.type not in CA_TYPES] + iot_ca_left(stack, iot_ca)
    for line in render(kept, stack.region):
        say(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.destroy",
        description=(
            "sam delete the stack, then (confirmed) disable the Private CA and schedule its "
            "deletion, then list the resources the stack keeps with the commands that remove them."
        ),
    )
    parser.add_argument("--yes", action="store_true", help="retire the Private CA without asking")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only read the stack (Region, credentials, Outputs) and say what would go",
    )
    parser.add_argument("--sam", default="sam", help="the SAM CLI (default: sam on PATH)")
    parser.add_argument("--template", type=Path, default=template_facts.TEMPLATE)
    deployed.add_options(parser)
    args = parser.parse_args(argv)
    if args.state is not None:
        print("destroy: the offline stack goes with `make down`", file=sys.stderr)
        return 2
    try:
        stack = deployed.from_args(args)
        if args.check:
            print(f"destroy: stack {stack.name} found in {stack.region}")
            return 0
        return teardown(
            stack,
            template=template_facts.load(args.template),
            delete=lambda target: delete_stack(args.sam, target),
            ask=None if args.yes else input,
        )
    except deployed.StackError as exc:
        print(f"destroy: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        print(f"destroy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
