"""The expiry watch and short-lived mode through the offline stack.

- `devstack expiry` runs the watch now (its own function and package, through the Lambda
  Invoke API, as `aws lambda invoke` does): a device whose certificate expires within the
  window is reported, asked to renew, and the summary reaches the ExpiryTopic's subscribers;
  GET /devices/{dsn} says EXPIRING.
- The offline stack refuses short-lived mode with certificates valid for more than 7 days, as
  CloudFormation's Rules do, before it creates anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from demo import http_json
from devstack import cli
from devstack.errors import DeployError
from devstack.stack import RunningStack, start_stack
from tests.support.offline import TEMPLATE, device_key, new_member, post_certificate, unique_dsn

pytestmark = pytest.mark.e2e


def subscribe_queue(stack: RunningStack) -> tuple[Any, str]:
    """An SQS queue subscribed to the ExpiryTopic: what an operator's subscription would get."""
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=f"expiry-{unique_dsn('Q').lower()}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    stack.client("sns").subscribe(
        TopicArn=stack.outputs["ExpiryTopicArn"], Protocol="sqs", Endpoint=arn
    )
    return sqs, url


def test_devstack_expiry_reports_an_expiring_device_and_asks_it_to_renew(
    offline_stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a provisioned device whose certificate (as its row records it) expires in an hour
    user = new_member(offline_stack)
    dsn = unique_dsn("EXP")
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "publicKey": device_key()[1]}, user.id_token
    )
    assert status == 200, answer
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    soon = soon.replace("+00:00", "Z")
    offline_stack.client("dynamodb").update_item(
        TableName=offline_stack.outputs["DevicesTableName"],
        Key={"dsn": {"S": dsn}},
        UpdateExpression="SET not_after = :soon",
        ExpressionAttributeValues={":soon": {"S": soon}},
    )
    sqs, queue = subscribe_queue(offline_stack)

    # WHEN the operator runs the watch now
    capsys.readouterr()
    assert cli.main(["expiry", "--state", str(offline_stack.state_path)]) == 0
    report = json.loads(capsys.readouterr().out)

    # THEN the device is reported and asked to renew, and the run finished
    assert report["expiring"] >= 1 and report["complete"] is True, report
    assert report["renewalsRequested"] == report["expiring"], report
    assert report["notified"] is True
    # ... the operators' subscription gets the one summary, naming the device
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    (envelope,) = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert envelope["Subject"].startswith("Device certificates: ")
    assert f"{soon}  {dsn}" in envelope["Message"]
    # ... and the owner sees the device as EXPIRING
    status, device = http_json("GET", f"{offline_stack.api_url}/devices/{dsn}", None, user.id_token)
    assert status == 200, device
    assert (device["expiry"], device["notAfter"]) == ("EXPIRING", soon)


def test_the_offline_stack_refuses_short_lived_mode_with_an_over_long_validity(
    tmp_path: Path,
) -> None:
    state = tmp_path / "stack.json"
    # WHEN the stack is started in short-lived mode with 30-day certificates
    with pytest.raises(DeployError, match="at most 7 days"):
        start_stack(
            template=TEMPLATE,
            parameters={
                "CaUsageMode": "SHORT_LIVED_CERTIFICATE",
                "DeviceCertValidityDays": "30",
            },
            state_path=state,
            lambda_log_dir=tmp_path / "logs",
            mqtt_port=None,
        )
    # THEN it does not start (no state file for the CLI to find)
    assert not state.exists()
