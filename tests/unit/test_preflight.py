"""`make deploy`'s pre-flight: what it reads from the template, and each check's verdict.

The template reader (tools.template_facts, standard library only) is checked against the
offline stack's own YAML reader and intrinsic resolver, so the two cannot drift.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.cloudformation.intrinsics import NO_VALUE, Resolver
from devstack.cloudformation.template import load_yaml
from tools import answers, preflight, template_facts

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def no_aws_env(tmp_path: Path) -> dict[str, str]:
    """A shell with no credentials anywhere boto3 looks."""
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_CONFIG_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="eu-west-1",
        PYTHONPATH="local",
    )
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    return env


def preflight_without_credentials(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed module, the test's values
        [sys.executable, "-m", "tools.preflight", *args],
        cwd=ROOT,
        env=no_aws_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- parameters


def test_the_defaults_and_the_first_deploy_answers_make_a_hierarchy_private_ca_accepts() -> None:
    template = template_facts.load(TEMPLATE)
    assert preflight.check_parameters(template.values()) == []
    assert preflight.check_parameters(template.values(answers.samconfig_overrides("first"))) == []


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"IssuingCaValidityYears": "10"}, "IssuingCaValidityYears=10"),  # as long as the root
        ({"CaValidityYears": "3", "IssuingCaValidityYears": "5"}, "CaValidityYears=3"),
        ({"IssuingCaCommonName": "IoT Device Onboarding Root CA"}, "IssuingCaCommonName"),
        ({"IssuingCaCommonName": "iot device  onboarding ROOT CA "}, "IssuingCaCommonName"),
    ],
)
def test_a_hierarchy_private_ca_would_refuse_half_way_is_one_problem_saying_what_to_do(
    overrides: dict[str, str], named: str
) -> None:
    (problem,) = preflight.check_parameters(template_facts.load(TEMPLATE).values(overrides))
    assert problem.blocking and named in problem.text
    assert "set " in problem.text or "give " in problem.text


def test_a_validity_cloudformation_would_refuse_as_a_number_is_left_to_it() -> None:
    # "²" is a digit to Python's str.isdigit, not a number to int() or CloudFormation
    values = template_facts.load(TEMPLATE).values({"CaValidityYears": "\u00b2"})
    assert preflight.check_parameters(values) == []


def test_make_deploys_pre_flight_stops_on_such_a_hierarchy_before_any_aws_call(
    tmp_path: Path,
) -> None:
    # WHEN the pre-flight runs with an issuing CA as long as the root (and no credentials)
    done = preflight_without_credentials(tmp_path, "IssuingCaValidityYears=10")
    # THEN it stops, and one line names the parameter and what to do
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "IssuingCaValidityYears" in line]
    assert len(lines) == 1 and lines[0].startswith("preflight: "), done.stderr


# ---------------------------------------------------------------- no credentials


def test_no_credentials_fails_at_once_with_one_line_saying_what_to_do(tmp_path: Path) -> None:
    done = preflight_without_credentials(tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert all(line.startswith("preflight: ") for line in lines), done.stderr
    credentials = [line for line in lines if "credentials" in line]
    assert len(credentials) == 1 and "aws configure" in credentials[0], done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_deploy_without_credentials_stops_before_installing_the_sam_cli(
    tmp_path: Path,
) -> None:
    # GIVEN the project's venv as it is (-o: not remade) and a SAM CLI venv that does not exist
    # (PYTHON=false: any attempt to create it fails instead of downloading 340 MB)
    sam_venv = tmp_path / "sam-cli"
    done = subprocess.run(  # noqa: S603 - make from PATH, fixed arguments
        ["make", "-o", ".venv/bin/.installed", "deploy", f"SAM_VENV={sam_venv}", "PYTHON=false"],  # noqa: S607
        cwd=ROOT,
        env=no_aws_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN it stops at the pre-flight, with the line saying what to do, and installed nothing
    assert done.returncode != 0
    assert "preflight: no AWS credentials: run `aws configure`" in done.stderr, done.stderr
    assert not sam_venv.exists()
    assert "requirements-sam.txt" not in done.stdout + done.stderr


# ---------------------------------------------------------------- the template reader


def _reference_reservations(values: dict[str, str]) -> dict[str, int]:
    """ReservedConcurrentExecutions per function, evaluated by the offline stack's resolver."""
    source = load_yaml(TEMPLATE)
    resolver = Resolver(
        ref=lambda name: NO_VALUE if name == "AWS::NoValue" else values[name],
        getatt=lambda logical_id, attribute: f"{logical_id}.{attribute}",
        conditions=source["Conditions"],
    )
    found = {}
    for name, resource in source["Resources"].items():
        if "ReservedConcurrentExecutions" not in resource.get("Properties", {}):
            continue
        value = resolver.resolve(resource["Properties"]["ReservedConcurrentExecutions"])
        if value is not NO_VALUE:
            found[name] = int(value)
    return found


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ProvisioningReservedConcurrency": "unreserved"},
        {"RenewalReservedConcurrency": "unreserved", "ProvisioningReservedConcurrency": "7"},
        answers.samconfig_overrides("first"),
    ],
)
def test_reserved_concurrency_is_read_as_the_template_means_it(overrides: dict[str, str]) -> None:
    template = template_facts.load(TEMPLATE)
    values = template.values({"AdminEmail": "a@example.com", **overrides})
    expected = _reference_reservations({k: str(v) for k, v in values.items()})
    assert template.reserved_concurrency(values) == expected


def test_runtime_retained_resources_and_access_logging_match_the_template() -> None:
    source = load_yaml(TEMPLATE)
    template = template_facts.load(TEMPLATE)
    assert template.runtimes() == {source["Globals"]["Function"]["Runtime"]}
    assert {r.logical_id for r in template.retained()} == {
        name for name, r in source["Resources"].items() if r.get("DeletionPolicy") == "Retain"
    }
    assert template.access_logging(template.values())
    assert not template.access_logging(template.values({"ApiAccessLogging": "Disabled"}))


def test_the_first_deploy_answers_are_template_parameters_its_rules_accept() -> None:
    template = template_facts.load(TEMPLATE)
    first = answers.samconfig_overrides("first")
    assert set(first) <= set(template.defaults), "a misspelt parameter in samconfig's [first]"
    values = template.values(first)
    # The template's Rules for a short-lived CA: 1-7 days, watched at least every 6 hours.
    if values["CaUsageMode"] == "SHORT_LIVED_CERTIFICATE":
        assert 1 <= int(values["DeviceCertValidityDays"] or 0) <= 7
        assert values["ExpiryWatchSchedule"] in ("rate(1 hour)", "rate(3 hours)", "rate(6 hours)")
    # ... and it fits an account whose Lambda concurrency quota is still 10
    assert preflight.check_concurrency(template.reserved_concurrency(values), 10, 0) == []


def test_answers_merge_config_json_the_environment_and_the_command_line() -> None:
    merged = answers.resolve("first", ["AdminEmail=ops@example.com", "LogRetentionDays=30"])
    assert merged["AdminEmail"] == "ops@example.com"
    assert merged["LogRetentionDays"] == "30"  # the command line wins over the answers file
    assert merged["DeviceCertValidityDays"] == "7"  # the answers file wins over config.json
    assert merged["CaCommonName"]  # config.json still applies


# ---------------------------------------------------------------- the build


def fake_runner(working: set[str]) -> Any:
    def run(command: Sequence[str]) -> str | None:
        if command[0] == "docker":
            return "27.0" if "docker" in working else None
        return "3.13" if command[0] in working else None

    return run


def test_the_build_needs_the_runtimes_python_or_docker() -> None:
    runtimes = {"python3.13"}
    assert preflight.check_build(runtimes, [], fake_runner({"python3.13"})) == []
    (missing,) = preflight.check_build(runtimes, [], fake_runner(set()))
    assert "no `python3.13` runs here" in missing.text
    assert "start Docker" in missing.text
    (docker_hint,) = preflight.check_build(runtimes, [], fake_runner({"docker"}))
    assert "make deploy SAM_BUILD_FLAGS=--use-container" in docker_hint.text
    assert preflight.check_build(runtimes, ["--use-container"], fake_runner({"docker"})) == []
    (no_docker,) = preflight.check_build(runtimes, ["--use-container"], fake_runner({"python3.13"}))
    assert "Docker" in no_docker.text and no_docker.blocking


# ---------------------------------------------------------------- the account


class MotoAccount(preflight.Account):
    """moto answers every call but Lambda's GetAccountSettings: that one is given."""

    def __init__(self, session: boto3.session.Session, unreserved: int) -> None:
        super().__init__(session)
        self.unreserved = unreserved

    def answers(self, service: str) -> Any:
        if service == "lambda":
            return {"AccountLimit": {"UnreservedConcurrentExecutions": self.unreserved}}
        return super().answers(service)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def test_a_ready_account_passes_and_a_small_concurrency_quota_is_one_line(aws: Any) -> None:
    template = template_facts.load(TEMPLATE)
    values = template.values({"AdminEmail": "a@example.com"})
    assert preflight.check_account(MotoAccount(aws, 1000), template, values, "stack") == []

    (problem,) = preflight.check_account(MotoAccount(aws, 10), template, values, "stack")
    assert problem.blocking
    assert "reserves 56 concurrent executions" in problem.text
    assert "ProvisioningReservedConcurrency=unreserved" in problem.text


def test_a_redeploy_counts_the_stacks_own_reservations_as_free() -> None:
    reserved = {"ProvisioningFunction": 50, "SweeperFunction": 1, "RenewalFunction": 5}
    assert preflight.check_concurrency(reserved, 100, 56) == []
    assert preflight.check_concurrency(reserved, 100, 0) != []


@pytest.mark.parametrize(
    ("overrides", "role", "expected"),
    [
        ({"CreateApiGatewayAccountRole": "false"}, None, "blocking"),
        ({"CreateApiGatewayAccountRole": "false"}, "arn:aws:iam::1:role/logs", None),
        ({"CreateApiGatewayAccountRole": "true"}, None, None),
        ({"CreateApiGatewayAccountRole": "true"}, "arn:aws:iam::1:role/logs", "note"),
        ({"CreateApiGatewayAccountRole": "false", "ApiAccessLogging": "Disabled"}, None, None),
    ],
)
def test_the_api_gateway_logging_role(
    overrides: dict[str, str], role: str | None, expected: str | None
) -> None:
    template = template_facts.load(TEMPLATE)
    account = {"cloudwatchRoleArn": role} if role else {}
    problems = preflight.check_logging_role(template, template.values(overrides), account)
    if expected is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.blocking == (expected == "blocking")
        assert re.search(r"CreateApiGatewayAccountRole=(true|false)", problem.text)


def test_services_that_do_not_answer_are_named_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN credentials, but every AWS endpoint a closed port
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    template = template_facts.load(TEMPLATE)
    account = preflight.Account(boto3.session.Session(region_name="eu-south-2"))
    account.identity = lambda: "123456789012"  # type: ignore[method-assign]
    # WHEN the services are checked
    problems = preflight.check_account(account, template, template.values(), "stack")
    # THEN each service is one line naming it and the region
    assert len(problems) == len(preflight.SERVICES)
    assert all("eu-south-2" in p.text and p.blocking for p in problems)
    assert any(p.text.startswith("AWS Private CA does not answer") for p in problems)


class RefusedAccount(preflight.Account):
    """Credentials that AWS refuses (expired keys)."""

    def has_credentials(self) -> bool:
        return True

    def identity(self) -> str:
        from botocore.exceptions import ClientError

        error = {"Error": {"Code": "ExpiredToken", "Message": "The security token expired"}}
        raise ClientError(error, "GetCallerIdentity")  # type: ignore[arg-type]


def test_refused_credentials_are_one_line_and_nothing_else_is_asked() -> None:
    template = template_facts.load(TEMPLATE)
    account = RefusedAccount(boto3.session.Session(region_name="us-east-1"))
    (problem,) = preflight.check_account(account, template, template.values(), "stack")
    assert problem.blocking
    assert problem.text.startswith("AWS refused the credentials (ExpiredToken): refresh them")


def test_execution_logging_also_needs_the_logging_role(tmp_path: Path) -> None:
    # GIVEN a template whose API logs executions, with no access log setting
    template_path = tmp_path / "template.yaml"
    template_path.write_text(
        "Resources:\n"
        "  Api:\n"
        "    Type: AWS::Serverless::Api\n"
        "    Properties:\n"
        "      MethodSettings:\n"
        "        - ResourcePath: /*\n"
        "          HttpMethod: '*'\n"
        "          LoggingLevel: ERROR\n"
    )
    template = template_facts.load(template_path)
    values = {"CreateApiGatewayAccountRole": "false"}
    (problem,) = preflight.check_logging_role(template, values, {})
    assert "no API Gateway CloudWatch Logs role" in problem.text
