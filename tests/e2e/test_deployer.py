"""The local deployer on its own: intrinsics, custom resource answers, parameter errors.

Each test deploys a small SAM template (written here) onto the session's moto server; the
custom resource handlers live in a temporary code directory, as a CodeUri would.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path

import pytest

from devstack.cloudformation.deployer import deploy
from devstack.errors import DeployError
from devstack.stack import RunningStack

pytestmark = pytest.mark.e2e

HANDLER = """
import json, os, urllib.request

def lambda_handler(event, context):
    mode = event["ResourceProperties"]["Mode"]
    if mode == "silent":
        return
    body = {
        "Status": "FAILED" if mode == "fail" else "SUCCESS",
        "Reason": "the widget is broken",
        "PhysicalResourceId": "widget-1",
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": {
            "Greeting": os.environ["GREETING"],
            "RemainingMs": str(context.get_remaining_time_in_millis()),
            "Event": json.dumps({k: v for k, v in event.items() if k != "ResponseURL"}),
            "ResponseHost": event["ResponseURL"].split("/")[2].split(":")[0],
        },
    }
    request = urllib.request.Request(
        event["ResponseURL"], data=json.dumps(body).encode(), method="PUT"
    )
    urllib.request.urlopen(request).read()
"""

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Mode:
    Type: String
    AllowedValues: [ok, fail, silent]
  Flavour:
    Type: String
    Default: plain
Conditions:
  IsFancy: !Equals [!Ref Flavour, fancy]
  NotFancy: !Not [!Condition IsFancy]
Resources:
  WidgetFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: {package}.handler.lambda_handler
      Runtime: python3.13
      Timeout: 7
      Environment:
        Variables:
          GREETING: !Sub "hello from ${{AWS::StackName}} in ${{AWS::Region}}"
  Widget:
    Type: Custom::Widget
    Properties:
      ServiceToken: !GetAtt WidgetFunction.Arn
      Mode: !Ref Mode
      Size: 3
  FancyPolicy:
    Type: AWS::IoT::Policy
    Condition: IsFancy
    Properties:
      PolicyDocument: {{}}
Outputs:
  Greeting:
    Value: !GetAtt Widget.Greeting
  Remaining:
    Value: !GetAtt Widget.RemainingMs
  Event:
    Value: !GetAtt Widget.Event
  ResponseHost:
    Value: !GetAtt Widget.ResponseHost
  Physical:
    Value: !Ref Widget
  Literal:
    Value: !Sub "${{!iot:ClientId}}/${{AWS::AccountId}}/${{AWS::Partition}}.${{AWS::URLSuffix}}"
  Picked:
    Value: !Join ["-", [!Select [1, [a, b, c]], !If [NotFancy, plain, fancy]]]
"""


@pytest.fixture
def template(tmp_path: Path) -> Path:
    package = f"widget_{secrets.token_hex(4)}"
    code = tmp_path / "code" / package
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "handler.py").write_text(textwrap.dedent(HANDLER))
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE.format(package=package))
    return path


def test_custom_resource_gets_a_cloudformation_event_and_feeds_getatt(
    offline_stack: RunningStack, template: Path
) -> None:
    deployment = deploy(template, {"Mode": "ok"}, endpoint_url=offline_stack.endpoint_url)

    outputs = deployment.outputs
    assert outputs["Greeting"] == "hello from devstack in us-east-1"
    assert 0 < int(outputs["Remaining"]) <= 7000  # counts down from the function's Timeout
    assert outputs["ResponseHost"] == "127.0.0.1"
    assert outputs["Physical"] == "widget-1"
    event = json.loads(outputs["Event"])
    assert event["RequestType"] == "Create"
    assert event["ResourceType"] == "Custom::Widget"
    assert event["LogicalResourceId"] == "Widget"
    assert event["StackId"].startswith("arn:aws:cloudformation:us-east-1:")
    assert event["ServiceToken"] == deployment.functions["WidgetFunction"].arn
    # CloudFormation hands every scalar property over as a string
    assert event["ResourceProperties"] == {
        "ServiceToken": event["ServiceToken"],
        "Mode": "ok",
        "Size": "3",
    }
    assert outputs["Literal"] == "${iot:ClientId}/123456789012/aws.amazonaws.com"
    assert outputs["Picked"] == "b-plain"
    assert "FancyPolicy" in deployment.skipped  # its condition is false


def test_a_failed_custom_resource_stops_the_deployment_with_its_reason(
    offline_stack: RunningStack, template: Path
) -> None:
    with pytest.raises(DeployError, match="Widget: custom resource FAILED: the widget is broken"):
        deploy(template, {"Mode": "fail"}, endpoint_url=offline_stack.endpoint_url)


def test_a_custom_resource_that_never_answers_stops_the_deployment(
    offline_stack: RunningStack, template: Path
) -> None:
    with pytest.raises(DeployError, match="without sending a response"):
        deploy(template, {"Mode": "silent"}, endpoint_url=offline_stack.endpoint_url)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({}, "parameter Mode has no default"),
        ({"Mode": "maybe"}, "is not one of"),
        ({"Mode": "ok", "Colour": "red"}, "not in the template: Colour"),
    ],
)
def test_bad_parameters_are_refused(
    offline_stack: RunningStack, template: Path, parameters: dict[str, str], message: str
) -> None:
    with pytest.raises(DeployError, match=message):
        deploy(template, parameters, endpoint_url=offline_stack.endpoint_url)


def test_the_device_policy_keeps_its_policy_variables(offline_stack: RunningStack) -> None:
    # ${!iot:Connection.Thing.ThingName} in the template is the literal policy variable in IoT
    name = offline_stack.outputs["DevicePolicyName"]
    assert name.startswith("devstack-DevicePolicy-")
    document = offline_stack.client("iot").get_policy(policyName=name)["policyDocument"]
    assert "client/${iot:Connection.Thing.ThingName}" in document
    assert ":iot:us-east-1:123456789012:" in document


def test_the_renewal_function_s_event_invoke_config_reaches_the_runtime(
    offline_stack: RunningStack,
) -> None:
    # SAM turns EventInvokeConfig into AWS::Lambda::EventInvokeConfig; the topic rules' async
    # invocations read it from the function: renewal events kept 180 s and never retried
    functions = offline_stack.deployment.functions
    renewal = functions["RenewalFunction"]
    assert (renewal.maximum_event_age, renewal.maximum_retry_attempts) == (180, 0)
    provisioning = functions["ProvisioningFunction"]  # none configured: Lambda's defaults
    assert (provisioning.maximum_event_age, provisioning.maximum_retry_attempts) == (21600, 2)
