"""The iot-data publisher: JSON at QoS 1 to the endpoint boto3's configuration names, else to
the account's Data-ATS endpoint looked up once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from provisioning.adapters.iot_data import IotPublisher, configured_endpoint
from provisioning.domain.errors import DependencyFailed


@pytest.fixture
def aws(aws_env: None) -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session()


def published() -> list[tuple[str, bytes]]:
    return list(iotdata_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].published_payloads)


def test_publishes_json_to_the_accounts_data_ats_endpoint_looked_up_once(
    aws: boto3.session.Session,
) -> None:
    lookups: list[str] = []

    def endpoint() -> str:
        lookups.append("x")
        return "abc123-ats.iot.us-east-1.amazonaws.com"

    publisher = IotPublisher(aws, endpoint)
    publisher.publish("things/t_1/certificate/renew/accepted", {"certificateId": "c1"})
    publisher.publish("things/t_1/certificate/renew/rejected", {"code": "X", "msg": "m"})

    assert publisher.client().meta.endpoint_url == "https://abc123-ats.iot.us-east-1.amazonaws.com"
    assert len(lookups) == 1
    assert [(topic, json.loads(body)) for topic, body in published()] == [
        ("things/t_1/certificate/renew/accepted", {"certificateId": "c1"}),
        ("things/t_1/certificate/renew/rejected", {"code": "X", "msg": "m"}),
    ]


def no_lookup() -> str:
    raise AssertionError("no DescribeEndpoint when an endpoint is configured")


def test_a_configured_endpoint_wins_and_needs_no_lookup(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_IOT_DATA_PLANE", "http://127.0.0.1:1")
    session = boto3.session.Session()

    assert configured_endpoint(session) == "http://127.0.0.1:1"
    assert IotPublisher(session, no_lookup).client().meta.endpoint_url == "http://127.0.0.1:1"


def test_no_configuration_means_no_configured_endpoint(aws: boto3.session.Session) -> None:
    assert configured_endpoint(aws) is None


def test_a_failed_publish_is_a_dependency_failure_named_publish(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = IotPublisher(aws, lambda: "x-ats.iot.us-east-1.amazonaws.com")
    client = publisher.client()

    def broken(**_: object) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "InternalFailure"}}, "Publish")

    monkeypatch.setattr(client, "publish", broken)
    with pytest.raises(DependencyFailed) as caught:
        publisher.publish("things/t/x", {})
    assert caught.value.code == "PUBLISH_FAILED"
