"""Check the machine and the AWS account before ``make deploy`` installs or creates anything.

    python -m tools.preflight [--region R] [--stack-name NAME] [--config-env ENV]
                              [--build-flags "--use-container"] [Key=Value ...]

What ``sam build`` and ``sam deploy`` need, in the order they need it, each problem one line
saying what to do (status 1 if any would stop the deploy):

0. The parameters, where CloudFormation's rules cannot compare them: the issuing CA ends before
   the root that signs it (``IssuingCaValidityYears`` < ``CaValidityYears``; Private CA refuses
   otherwise, half way through the deploy), and the two CAs have different common names.
1. Credentials: STS GetCallerIdentity answers (no credentials fails at once, without a call).
2. The build: a ``python3.X`` for the template's Lambda runtime that really runs, or Docker
   for ``sam build --use-container`` (``--build-flags``).
3. The region's services: ACM PCA, IoT Core, Cognito, API Gateway, DynamoDB and Lambda answer
   a read-only call there.
4. Lambda concurrency: what the template reserves with these parameters fits the account's
   unreserved concurrency, keeping the 100 Lambda requires.
5. API Gateway logging: with access logging on and ``CreateApiGatewayAccountRole=false``, the
   account's API Gateway settings name a CloudWatch Logs role.

Parameter values are the template's defaults, then the ``parameter_overrides`` of the samconfig
environment (``--config-env``), then the Key=Value items (as ``sam deploy`` gets them). Every
AWS call has short timeouts and one attempt: with no network or no credentials this ends in
seconds. It runs from the project's venv before the SAM CLI is installed (`make deploy`), so it
uses the venv's packages only: boto3, and the offline stack's template reader.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from tools import answers, params, template_facts
from tools.template_facts import Template

# Lambda refuses a reservation that leaves fewer unreserved executions than this.
LAMBDA_UNRESERVED_MINIMUM = 100
CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}
)
RUNS_TIMEOUT = 15.0  # seconds for `python3.X -c ...` or `docker info`
# service -> (name the operator knows, a read-only call that proves it answers)
SERVICES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "acm-pca": ("AWS Private CA", lambda c: c.list_certificate_authorities(MaxResults=1)),
    "iot": ("AWS IoT Core", lambda c: c.describe_endpoint(endpointType="iot:Data-ATS")),
    "cognito-idp": ("Amazon Cognito", lambda c: c.list_user_pools(MaxResults=1)),
    "apigateway": ("API Gateway", lambda c: c.get_account()),
    "dynamodb": ("DynamoDB", lambda c: c.list_tables(Limit=1)),
    "lambda": ("AWS Lambda", lambda c: c.get_account_settings()),
}
_REFUSED = {"InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "UnrecognizedClient"}
_REFUSED |= {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthFailure"}
_NETWORK = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


@dataclass(frozen=True)
class Problem:
    text: str  # one line: what is wrong and what to do
    blocking: bool = True

    def line(self) -> str:
        return f"preflight: {'' if self.blocking else 'note: '}{self.text}"


# ---------------------------------------------------------------- parameters


def _whole(value: str) -> bool:
    """A whole number as CloudFormation reads one (ASCII digits; anything else it refuses)."""
    return value.isascii() and value.isdigit()


def _name(value: str | None) -> str:
    """A name as certificate path building compares it: case and spaces folded (RFC 5280)."""
    return " ".join((value or "").split()).casefold()


def check_parameters(values: Mapping[str, str | None]) -> list[Problem]:
    """What the template's Rules cannot say (they compare no numbers): the issuing CA's
    certificate must end before the root's, and the two CAs need names of their own."""
    problems = []
    root, issuing = values.get("CaValidityYears"), values.get("IssuingCaValidityYears")
    if root and issuing and _whole(root) and _whole(issuing) and int(issuing) >= int(root):
        problems.append(
            Problem(
                f"IssuingCaValidityYears={issuing} does not end before the root CA "
                f"(CaValidityYears={root}), and Private CA signs nothing that outlives its "
                "signer: set IssuingCaValidityYears below CaValidityYears"
            )
        )
    if _name(values.get("IssuingCaCommonName")) == _name(values.get("CaCommonName")):
        problems.append(
            Problem(
                "IssuingCaCommonName and CaCommonName are the same: give the issuing CA a "
                "name of its own (a device tells the CAs on its path apart by name)"
            )
        )
    return problems


# ---------------------------------------------------------------- the machine


def runs(command: Sequence[str]) -> str | None:
    """The command's output if it ran and succeeded in time, else None."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - a fixed program, found on PATH
            list(command), capture_output=True, text=True, timeout=RUNS_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def check_build(
    runtimes: set[str], build_flags: Sequence[str], run: Callable[[Sequence[str]], str | None]
) -> list[Problem]:
    container = "--use-container" in build_flags or "-u" in build_flags

    def docker_up() -> bool:
        return run(["docker", "info", "--format", "{{.ServerVersion}}"]) is not None

    if container:
        if docker_up():
            return []
        return [
            Problem(
                "`sam build --use-container` needs Docker, and `docker info` fails: start Docker "
                "(or install the Lambda runtime's Python and drop SAM_BUILD_FLAGS)"
            )
        ]
    problems = []
    for runtime in sorted(runtimes):
        if not runtime.startswith("python"):
            continue
        version = runtime.removeprefix("python")
        answer = run([runtime, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        if answer == version:
            continue
        if docker_up():
            hint = "Docker runs: `make deploy SAM_BUILD_FLAGS=--use-container`"
        else:
            hint = "or start Docker and run `make deploy SAM_BUILD_FLAGS=--use-container`"
        problems.append(
            Problem(
                f"the Lambda runtime is {runtime} and no `{runtime}` runs here: install Python "
                f"{version} on PATH (pyenv, uv python install {version}, your OS packages), {hint}"
            )
        )
    return problems


# ---------------------------------------------------------------- the account


class Account:
    """The AWS calls the pre-flight makes, each bounded; tests hand in a fake."""

    def __init__(self, session: boto3.session.Session) -> None:
        self.session = session
        self.region = session.region_name or ""

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=self.region, config=CLIENT_CONFIG)

    def has_credentials(self) -> bool:
        return self.session.get_credentials() is not None

    def identity(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    def answers(self, service: str) -> Any:
        return SERVICES[service][1](self.client(service))

    def stack_reservations(self, stack_name: str) -> int:
        """Concurrency the stack's functions reserve today (0 when there is no stack yet)."""
        cfn = self.client("cloudformation")
        try:
            pages = cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name)
            names = [
                r["PhysicalResourceId"]
                for page in pages
                for r in page["StackResourceSummaries"]
                if r["ResourceType"] == "AWS::Lambda::Function" and r.get("PhysicalResourceId")
            ]
        except ClientError:  # no such stack: a first deploy
            return 0
        lam = self.client("lambda")
        total = 0
        for name in names:
            try:
                total += lam.get_function_concurrency(FunctionName=name).get(
                    "ReservedConcurrentExecutions", 0
                )
            except ClientError:
                continue
        return total


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def check_account(
    account: Account,
    template: Template,
    values: Mapping[str, str | None],
    stack_name: str,
) -> list[Problem]:
    try:
        found = account.has_credentials()
    except BotoCoreError as exc:  # an expired SSO session, a credential_process that failed
        return [
            Problem(
                f"the AWS credentials cannot be loaded ({type(exc).__name__}): run `aws sso "
                "login` (or `aws configure`), then `make deploy` again"
            )
        ]
    if not found:
        return [
            Problem(
                "no AWS credentials: run `aws configure` (keys) or `aws sso login --profile NAME` "
                "and export AWS_PROFILE=NAME, then `make deploy` again"
            )
        ]
    if not account.region:
        return [
            Problem(
                "no AWS region: export AWS_DEFAULT_REGION=REGION (or `aws configure set region "
                "REGION`) to the region to deploy to"
            )
        ]
    region = account.region
    try:
        account_id = account.identity()
    except ClientError as exc:
        code = _code(exc)
        if code in _REFUSED:
            what = "refresh them (`aws sso login`, or new keys in `aws configure`)"
            return [Problem(f"AWS refused the credentials ({code}): {what}")]
        return [Problem(f"STS GetCallerIdentity failed ({code}): check the credentials' account")]
    except (BotoCoreError, OSError) as exc:
        if isinstance(exc, BotoCoreError) and not isinstance(exc, _NETWORK):
            name = type(exc).__name__
            return [Problem(f"the AWS credentials do not work ({name}): run `aws sso login`")]
        return [
            Problem(
                f"AWS STS in {region} does not answer ({type(exc).__name__}): check the network "
                "(proxy, VPN) and the region name"
            )
        ]
    problems: list[Problem] = []
    answers: dict[str, Any] = {}
    for service, (name, _call) in SERVICES.items():
        try:
            answers[service] = account.answers(service)
        except ClientError as exc:
            code = _code(exc)
            if "AccessDenied" in code or code == "UnauthorizedOperation":
                problems.append(
                    Problem(
                        f"{name} in {region}: account {account_id}'s credentials are denied a "
                        f"read ({code}): deploy with a role allowed to manage {name}"
                    )
                )
            else:
                problems.append(
                    Problem(f"{name} in {region} refused a read ({code}): check the region")
                )
        except (EndpointConnectionError, BotoCoreError, OSError) as exc:
            problems.append(
                Problem(
                    f"{name} does not answer in {region} ({type(exc).__name__}): pick a region "
                    "that has AWS Private CA, IoT Core, Cognito, API Gateway, DynamoDB and Lambda"
                )
            )
    if "lambda" in answers:
        problems += check_concurrency(
            template.reserved_concurrency(values),
            int(answers["lambda"]["AccountLimit"]["UnreservedConcurrentExecutions"]),
            account.stack_reservations(stack_name),
        )
    if "apigateway" in answers:
        problems += check_logging_role(template, values, answers["apigateway"])
    return problems


def check_concurrency(
    reserved: Mapping[str, int], unreserved: int, already_reserved: int
) -> list[Problem]:
    """Lambda keeps LAMBDA_UNRESERVED_MINIMUM unreserved; the stack's own reservations of a
    previous deploy come back to the pool when the update replaces them."""
    needed = sum(reserved.values())
    available = unreserved + already_reserved - LAMBDA_UNRESERVED_MINIMUM
    if needed == 0 or needed <= available:
        return []
    detail = ", ".join(f"{name} {count}" for name, count in reserved.items())
    return [
        Problem(
            f"Lambda: the stack reserves {needed} concurrent executions ({detail}) but the account "
            f"has {unreserved} unreserved and Lambda keeps {LAMBDA_UNRESERVED_MINIMUM}: request a "
            "higher 'Concurrent executions' quota (Service Quotas), or deploy with "
            "ProvisioningReservedConcurrency=unreserved RenewalReservedConcurrency=unreserved"
        )
    ]


def check_logging_role(
    template: Template, values: Mapping[str, str | None], account: Mapping[str, Any]
) -> list[Problem]:
    if not template.access_logging(values):
        return []
    role = account.get("cloudwatchRoleArn")
    creates = values.get("CreateApiGatewayAccountRole") == "true"
    if creates and role:
        return [
            Problem(
                f"API Gateway already logs with {role}; CreateApiGatewayAccountRole=true replaces "
                "that account setting: deploy with CreateApiGatewayAccountRole=false to keep it",
                blocking=False,
            )
        ]
    if not creates and not role:
        return [
            Problem(
                "access logging is on but the account has no API Gateway CloudWatch Logs role "
                "and CreateApiGatewayAccountRole=false: deploy with "
                "CreateApiGatewayAccountRole=true, or ApiAccessLogging=Disabled"
            )
        ]
    return []


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.preflight",
        description=(
            "Check credentials, the build's Python or Docker, the region's services, Lambda "
            "concurrency and API Gateway's logging role before `sam build` and `sam deploy`."
        ),
    )
    parser.add_argument("overrides", nargs="*", metavar="Key=Value", help="parameter overrides")
    parser.add_argument(
        "--region", help="default: the AWS configuration's (AWS_DEFAULT_REGION, ~/.aws/config)"
    )
    parser.add_argument("--profile", help="default: the AWS configuration's (AWS_PROFILE)")
    parser.add_argument("--stack-name", help="default: samconfig.toml's stack_name")
    parser.add_argument(
        "--config-env", default="default", help="samconfig.toml environment (default: default)"
    )
    parser.add_argument(
        "--build-flags", default="", help='the flags `sam build` gets, e.g. "--use-container"'
    )
    parser.add_argument("--template", type=Path, default=template_facts.TEMPLATE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    template = template_facts.load(args.template)
    try:
        given = answers.samconfig_overrides(args.config_env)
        given.update(params.parse_overrides(args.overrides))
    except params.ConfigError as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 2
    values = template.values(given)
    stack_name = (
        args.stack_name or answers.samconfig_stack_name(args.config_env) or "iot-device-onboarding"
    )
    problems = check_parameters(values)
    problems += check_build(template.runtimes(), shlex.split(args.build_flags), runs)
    region = args.region
    try:
        session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
        region = session.region_name
        problems += check_account(Account(session), template, values, stack_name)
    except NoRegionError:
        problems.append(Problem("no AWS region: export AWS_DEFAULT_REGION=REGION"))
    except NoCredentialsError:
        problems.append(Problem("no AWS credentials: run `aws configure` or `aws sso login`"))
    except BotoCoreError as exc:  # an unknown profile, a broken config file
        problems.append(
            Problem(f"the AWS configuration is unusable ({exc}): fix it, or unset AWS_PROFILE")
        )
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    if any(problem.blocking for problem in problems):
        return 1
    print(f"preflight: ready to deploy {stack_name} to {region}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
