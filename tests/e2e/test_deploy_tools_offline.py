"""The deploy's after-care against the offline stack: `make smoke`, `make ca-cert` and what
`make destroy` does once the stack is gone (the Private CA retired, the kept resources listed
with commands that really remove them).

`sam delete` itself needs CloudFormation, which the offline stack does not run: the teardown is
handed a stand-in for it. The shared stack's own CA and tables serve the other tests, so the
destructive steps run on copies made here in the same emulator.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography import x509

from devstack.stack import RunningStack
from tests.e2e.conftest import ROOT
from tools import ca_cert, deployed, destroy, smoke, template_facts
from tools.deployed import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(offline_stack: RunningStack) -> Stack:
    assert offline_stack.state_path is not None
    return deployed.from_state(offline_stack.state_path)


def assert_gone(stack: Stack, run: smoke.Smoke) -> None:
    """Nothing the smoke run made is left: user, thing, certificate, device row."""
    cognito, iot = stack.client("cognito-idp"), stack.client("iot")
    with pytest.raises(ClientError, match="UserNotFound"):
        cognito.admin_get_user(UserPoolId=stack.outputs["UserPoolId"], Username=run.username)
    assert run.thing_name
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_thing(thingName=run.thing_name)
    assert run.certificate_id
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_certificate(certificateId=run.certificate_id)
    row = stack.client("dynamodb").get_item(
        TableName=stack.outputs["DevicesTableName"], Key={"dsn": {"S": run.dsn}}
    )
    assert "Item" not in row


def test_make_smoke_provisions_and_revokes_a_device_then_removes_everything(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN the smoke test runs against the stack's state, as `make smoke STACK_ARGS=--state ...`
    run = smoke.Smoke(stack, say=print)
    run.run()
    left = run.clean_up()

    # THEN the device was provisioned, checked as a device checks it, and revoked
    out = capsys.readouterr().out
    assert f"device {run.dsn} provisioned" in out and "chains to the stack's CA" in out
    assert f"device {run.dsn} was ACTIVE, now REVOKED" in out
    # ... and nothing is left behind
    assert left == []
    assert_gone(stack, run)


def test_the_smoke_command_passes_on_the_offline_stack(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert smoke.main(["--state", str(offline_stack.state_path)]) == 0
    assert "smoke: passed" in capsys.readouterr().out


def test_a_failed_smoke_step_still_cleans_up(stack: Stack) -> None:
    # GIVEN a stack whose ThingPrefix output does not match what the API names things: the
    # device's check of the answer fails after the device was provisioned
    wrong = dataclasses.replace(stack, outputs={**stack.outputs, "ThingPrefix": "elsewhere"})
    run = smoke.Smoke(wrong, say=lambda _line: None)
    with pytest.raises(smoke.SmokeFailed, match="a device would refuse the answer"):
        run.run()
    # THEN the clean-up still removes the user, the thing, its certificate and the row
    assert run.clean_up() == []
    assert_gone(stack, run)


def test_ca_cert_writes_the_certificate_devices_pin(stack: Stack, tmp_path: Any) -> None:
    out = tmp_path / "device-ca.pem"
    assert ca_cert.main(["--state", "/nonexistent/stack.json", "--out", str(out)]) == 2
    assert not out.exists()

    assert ca_cert.main(["--out", str(out), "--state", str(_state(stack, tmp_path))]) == 0

    certificate = x509.load_pem_x509_certificate(out.read_bytes())
    expected = stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    assert out.read_text().strip() == expected.strip()
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    template = template_facts.load()
    assert (
        certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        == (template.defaults["CaCommonName"])
    )


def _state(stack: Stack, tmp_path: Any) -> Any:
    """A state file for ``stack`` (the fixture's own file also works; this keeps it explicit)."""
    import json

    path = tmp_path / "stack.json"
    path.write_text(
        json.dumps(
            {
                "outputs": stack.outputs,
                "endpoint_url": stack.endpoint_url,
                "region": stack.region,
                "stack_name": stack.name,
            }
        )
    )
    return path


# ---------------------------------------------------------------- destroy


def test_destroy_lists_every_resource_the_stack_keeps_with_its_physical_id(
    offline_stack: RunningStack, stack: Stack
) -> None:
    template = template_facts.load()
    full = dataclasses.replace(stack, physical_ids=offline_stack.deployment.physical_ids)
    kept = {item.logical_id: item for item in destroy.plan(full, template)}

    retained = {r.logical_id for r in template.retained()}
    created = retained & set(offline_stack.deployment.physical_ids)
    assert set(kept) == created
    assert kept["DevicesTable"].calls[0].command(stack.region) == (
        f"aws dynamodb delete-table --table-name {stack.outputs['DevicesTableName']} "
        f"--region {stack.region}"
    )
    assert kept["UserPool"].calls[0].params == {"UserPoolId": stack.outputs["UserPoolId"]}
    assert kept["CertificateAuthority"].physical_id == stack.outputs["CertificateAuthorityArn"]


def copies(stack: Stack) -> dict[str, str]:
    """Two CAs, a table, user pool, thing group and logging role like the stack's, made here."""
    suffix = secrets.token_hex(4)
    acmpca = stack.client("acm-pca")
    cas = []
    for kind in ("ROOT", "SUBORDINATE"):
        arn = acmpca.create_certificate_authority(
            CertificateAuthorityConfiguration={
                "KeyAlgorithm": "EC_prime256v1",
                "SigningAlgorithm": "SHA256WITHECDSA",
                "Subject": {"CommonName": f"teardown {kind} {suffix}"},
            },
            CertificateAuthorityType=kind,
        )["CertificateAuthorityArn"]
        acmpca.update_certificate_authority(CertificateAuthorityArn=arn, Status="ACTIVE")
        cas.append(arn)
    ca, issuing = cas
    table = f"teardown-{suffix}"
    stack.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "dsn", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "dsn", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    pool = stack.client("cognito-idp").create_user_pool(PoolName=f"teardown-{suffix}")
    group = f"teardown-{suffix}"
    stack.client("iot").create_thing_group(thingGroupName=group)
    iam = stack.client("iam")
    role = f"teardown-{suffix}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    document = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:*", '
    document += '"Resource": "*"}]}'
    policy = iam.create_policy(PolicyName=f"teardown-{suffix}", PolicyDocument=document)
    iam.attach_role_policy(RoleName=role, PolicyArn=policy["Policy"]["Arn"])
    iam.put_role_policy(RoleName=role, PolicyName="inline", PolicyDocument=document)
    return {
        "CertificateAuthority": ca,
        "CAActivation": ca,
        "IssuingCertificateAuthority": issuing,
        "IssuingCAActivation": issuing,
        "DevicesTable": table,
        "UserPool": pool["UserPool"]["Id"],
        "DeviceThingGroup": group,
        "ApiGatewayCloudWatchRole": role,
    }


def ca_status(stack: Stack, arn: str) -> str:
    return str(
        stack.client("acm-pca").describe_certificate_authority(CertificateAuthorityArn=arn)[
            "CertificateAuthority"
        ]["Status"]
    )


def with_copies(stack: Stack, physical: dict[str, str]) -> Stack:
    """The stack as its teardown sees it, its CAs the copies (never the shared stack's own)."""
    return dataclasses.replace(
        stack,
        physical_ids=physical,
        outputs={
            **stack.outputs,
            "CertificateAuthorityArn": physical["CertificateAuthority"],
            "IssuingCertificateAuthorityArn": physical["IssuingCertificateAuthority"],
        },
    )


def test_destroy_deletes_the_stack_then_retires_the_cas_and_prints_commands_that_work(
    stack: Stack,
) -> None:
    # GIVEN a stack whose kept resources are the copies made here
    physical = copies(stack)
    target = with_copies(stack, physical)
    deleted: list[str] = []
    lines: list[str] = []
    questions: list[str] = []

    # WHEN it is torn down and the operator answers yes
    status = destroy.teardown(
        target,
        template=template_facts.load(),
        delete=lambda s: deleted.append(s.name) or 0,
        ask=lambda q: questions.append(q) or "yes",
        say=lines.append,
    )

    # THEN the stack went first, then the CAs were disabled and scheduled for deletion, the
    # issuing CA before the root that signed it
    assert status == 0
    assert deleted == [stack.name]
    assert "Disable the Private CAs" in questions[0]
    root, issuing = physical["CertificateAuthority"], physical["IssuingCertificateAuthority"]
    assert ca_status(stack, root) == ca_status(stack, issuing) == "DELETED"
    retired = [line for line in lines if line.startswith("destroy: Private CA ")]
    assert [issuing in retired[0], root in retired[1]] == [True, True], lines
    # ... and every kept resource is listed with its commands, which really remove it
    text = "\n".join(lines)
    # (the shared stack's IoT CA registration is still there: listed, not run here)
    assert (
        f"aws iot delete-ca-certificate --certificate-id {stack.outputs['IotCaCertificateId']}"
        in text
    )
    for name in ("DevicesTable", "UserPool", "DeviceThingGroup", "ApiGatewayCloudWatchRole"):
        assert physical[name] in text
    kept = destroy.plan(target, template_facts.load())
    for item in kept:
        if item.type not in destroy.CA_TYPES:
            for call in item.calls:
                assert call.command(stack.region) in text
                call.run(target)
    with pytest.raises(ClientError):
        stack.client("dynamodb").describe_table(TableName=physical["DevicesTable"])
    with pytest.raises(ClientError):
        stack.client("cognito-idp").describe_user_pool(UserPoolId=physical["UserPool"])
    with pytest.raises(ClientError):
        stack.client("iot").describe_thing_group(thingGroupName=physical["DeviceThingGroup"])
    with pytest.raises(ClientError):
        stack.client("iam").get_role(RoleName=physical["ApiGatewayCloudWatchRole"])


def test_destroy_keeps_the_ca_when_not_confirmed_and_stops_if_sam_delete_fails(
    stack: Stack,
) -> None:
    physical = copies(stack)
    arn, issuing = physical["CertificateAuthority"], physical["IssuingCertificateAuthority"]
    target = with_copies(stack, physical)
    lines: list[str] = []

    declined = destroy.teardown(
        target,
        template=template_facts.load(),
        delete=lambda s: 0,
        ask=lambda q: "no",
        say=lines.append,
    )
    assert declined == 0
    assert ca_status(stack, arn) == ca_status(stack, issuing) == "ACTIVE"
    printed = "\n".join(lines)
    for ca in (arn, issuing):
        assert f"aws acm-pca delete-certificate-authority --certificate-authority-arn {ca}" in (
            printed
        )
    assert "--permanent-deletion-time-in-days 7" in printed

    failed = destroy.teardown(
        target, template=template_facts.load(), delete=lambda s: 1, ask=None, say=lines.append
    )
    assert failed == 1
    assert ca_status(stack, arn) == ca_status(stack, issuing) == "ACTIVE"


# ---------------------------------------------------------------- the README's deploy block


def readme_deploy_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```sh deploy\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [words for words in commands if words and words[0] == "make"]


def make(*words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - make from PATH, the README's own words
        ["make", "--no-print-directory", "-o", ".venv/bin/.installed", *words],  # noqa: S607
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_readme_deploy_block_goes_from_nothing_to_a_smoke_test_and_back() -> None:
    # GIVEN the README's deploy commands
    commands = readme_deploy_commands()
    targets = [words[1] for words in commands]
    assert targets == ["deploy", "smoke", "ca-cert", "destroy"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    # THEN each is a documented target, each variable it sets is one the Makefile reads, and
    # make accepts each line as written (a dry run: nothing is run)
    for words in commands:
        assert re.search(rf"^{re.escape(words[1])}:[^\n]*## ", makefile, flags=re.MULTILINE)
        for assignment in words[2:]:
            name = assignment.split("=", 1)[0]
            assert re.search(rf"^{name} \?=", makefile, flags=re.MULTILINE), name
        dry = make("-n", *words[1:])
        assert dry.returncode == 0, dry.stderr
    deploy_dry = make("-n", *commands[0][1:]).stdout
    assert deploy_dry.index("tools.preflight") < deploy_dry.index("sam build")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_smoke_and_make_ca_cert_run_on_the_offline_stack(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    state = f"--state {offline_stack.state_path}"
    smoked = make("smoke", f"STACK_ARGS={state}")
    assert smoked.returncode == 0, smoked.stdout + smoked.stderr
    assert "smoke: passed" in smoked.stdout

    out = tmp_path / "device-ca.pem"
    fetched = make("ca-cert", f"CA_CERT_OUT={out}", f"STACK_ARGS={state}")
    assert fetched.returncode == 0, fetched.stderr
    assert (
        x509.load_pem_x509_certificate(out.read_bytes())
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.ca
    )
