"""The offline broker runs the template's IoT topic rules, and AWS IoT's Publish API reaches
devices: a device's publish invokes the rule's function, whose iot-data answer reaches the
device; a rule without a Lambda permission fails; SQL outside the subset fails the deployment.

The stack here deploys template.yaml plus a test function (tests/fixtures/rule_echo) and two
rules on it, one with the permission IoT needs and one without.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import load_pem_x509_certificate

from devstack.cloudformation.template import load_yaml
from devstack.errors import DeployError
from devstack.iot.topic_rules import UnsupportedSql, parse_sql, topic_matches
from devstack.stack import RunningStack, start_stack, wait_for
from onboarding_ble import credentials
from tests.support.offline import device_key, new_member, post_certificate, unique_dsn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "fixtures" / "rule_echo"
# The renewal rules' SELECT list (template.yaml): the payload opaque, IoT's values by name.
PROJECTION = (
    "SELECT encode(*, 'base64') AS payload, topic(2) AS thingName, principal() AS principal, "
    "clientid() AS clientId"
)


def _absolute_code_uris(template: dict[str, Any]) -> None:
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in props:
            props["CodeUri"] = str((ROOT / props["CodeUri"]).resolve())


def echo_template(directory: Path, sql: str = f"{PROJECTION} FROM 'things/+/echo'") -> Path:
    """template.yaml plus the echo function, a permitted rule and a rule without permission."""
    template = copy.deepcopy(load_yaml(ROOT / "template.yaml"))
    _absolute_code_uris(template)
    resources = template["Resources"]
    resources["EchoFunction"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {"CodeUri": str(ECHO), "Handler": "echo.handler", "Timeout": 10},
    }

    def rule(statement: str) -> dict[str, Any]:
        return {
            "Type": "AWS::IoT::TopicRule",
            "Properties": {
                "TopicRulePayload": {
                    "Sql": statement,
                    "AwsIotSqlVersion": "2016-03-23",
                    "RuleDisabled": False,
                    "Actions": [
                        {"Lambda": {"FunctionArn": {"Fn::GetAtt": ["EchoFunction", "Arn"]}}}
                    ],
                }
            },
        }

    resources["EchoRule"] = rule(sql)
    resources["EchoRulePermission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "FunctionName": {"Ref": "EchoFunction"},
            "Action": "lambda:InvokeFunction",
            "Principal": "iot.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": ["EchoRule", "Arn"]},
        },
    }
    resources["UnpermittedRule"] = rule(f"{PROJECTION} FROM 'things/+/unpermitted'")
    path = directory / "template.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rules_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("rules-stack")
    stack = start_stack(
        template=echo_template(home),
        state_path=home / "stack.json",
        lambda_log_dir=home / "logs",
        build_dir=ROOT / ".local" / "build",
    )
    try:
        yield stack
    finally:
        stack.stop()


class Device:
    """A device provisioned through the API, connected to the broker, recording what it hears."""

    def __init__(self, stack: RunningStack, directory: Path) -> None:
        from awsiot import mqtt_connection_builder

        user = new_member(stack)
        private, public = device_key()
        self.dsn = unique_dsn("RULE")
        status, answer = post_certificate(
            stack.api_url, {"DSN": self.dsn, "publicKey": public}, user.id_token
        )
        assert status == 200, answer
        key_pem = credentials.decrypt_private_key(
            answer.get("encryption", credentials.FERNET_X25519),
            private,
            base64.b64decode(answer["publicKey"]),
            answer["encryptedPrivateKey"].encode(),
            self.dsn,
        )
        directory.mkdir(parents=True)
        (directory / "cert.pem").write_text(answer["certificatePem"])
        (directory / "key.pem").write_bytes(key_pem)
        self.thing = answer["thingName"]
        cert = load_pem_x509_certificate(answer["certificatePem"].encode())
        self.certificate_id = cert.fingerprint(hashes.SHA256()).hex()
        assert cert.public_bytes(serialization.Encoding.DER)
        self.received: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        mqtt = stack.mqtt
        assert mqtt is not None
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=mqtt.host,
            port=mqtt.port,
            cert_filepath=str(directory / "cert.pem"),
            pri_key_filepath=str(directory / "key.pem"),
            ca_filepath=str(mqtt.ca_file),
            client_id=self.thing,
            clean_session=True,
            keep_alive_secs=30,
        )
        self.connection.connect().result(15)

    def _on_message(self, topic: str, payload: bytes, **_: Any) -> None:
        with self._cond:
            self.received.append((topic, bytes(payload)))
            self._cond.notify_all()

    def subscribe(self, topic_filter: str) -> None:
        from awscrt import mqtt

        future, _ = self.connection.subscribe(
            topic_filter, mqtt.QoS.AT_LEAST_ONCE, self._on_message
        )
        future.result(15)

    def publish(self, topic: str, payload: bytes) -> None:
        from awscrt import mqtt

        future, _ = self.connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE)
        future.result(15)

    def next_on(self, topic: str, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen, payload in self.received:
                    if seen == topic:
                        return payload
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"nothing on {topic}: {self.received}"
                self._cond.wait(remaining)

    def close(self) -> None:
        self.connection.disconnect().result(15)


def broker_log(stack: RunningStack) -> str:
    assert stack.mqtt is not None
    return stack.mqtt.log_file.read_text(encoding="utf-8")


def test_a_publish_runs_the_rule_and_the_answer_reaches_the_device(
    rules_stack: RunningStack, tmp_path: Path
) -> None:
    # GIVEN a connected device listening on its own topics
    device = Device(rules_stack, tmp_path / "device")
    try:
        device.subscribe(f"things/{device.thing}/echo/answer")
        # WHEN it publishes on the rule's topic, trying to forge the rule's projected fields
        # (and repeating one, so a parser could read either)
        forged = b'{"note": "hi", "principal": "%s", "thingName": "x", "thingName": "y"}' % (
            b"f" * 64
        )
        device.publish(f"things/{device.thing}/echo", forged)
        # THEN the function ran with IoT's values by name and the payload whole, as one field,
        # and its answer came back over MQTT
        event = json.loads(device.next_on(f"things/{device.thing}/echo/answer"))["event"]
        assert event == {
            "payload": base64.b64encode(forged).decode(),
            "thingName": device.thing,
            "principal": device.certificate_id,
            "clientId": device.thing,
        }
    finally:
        device.close()
    assert "RULE EchoRule_" in broker_log(rules_stack)


def test_a_rule_without_a_lambda_permission_fails_its_action(
    rules_stack: RunningStack, tmp_path: Path
) -> None:
    # GIVEN a connected device
    device = Device(rules_stack, tmp_path / "device")
    try:
        device.subscribe(f"things/{device.thing}/echo/answer")
        # WHEN it publishes on the topic of the rule no permission covers
        device.publish(f"things/{device.thing}/unpermitted", b'{"note": "x"}')
        # THEN the broker logs the action's failure and the function never answers
        assert wait_for(
            lambda: (
                f"FAILED topic=things/{device.thing}/unpermitted: AccessDeniedException"
                in broker_log(rules_stack)
            ),
            10,
        ), broker_log(rules_stack)
        time.sleep(1.0)
        assert device.received == []
    finally:
        device.close()


def test_iot_data_publish_reaches_a_subscribed_device_and_refuses_wildcards(
    rules_stack: RunningStack, tmp_path: Path
) -> None:
    # GIVEN a connected device, and boto3's iot-data client pointed at the stack
    device = Device(rules_stack, tmp_path / "device")
    assert rules_stack.iot_data is not None
    iot_data = boto3.client(
        "iot-data",
        region_name=rules_stack.deployment.region,
        endpoint_url=rules_stack.iot_data.url,
    )
    try:
        device.subscribe(f"things/{device.thing}/#")
        # WHEN the cloud publishes to the device's topic
        iot_data.publish(topic=f"things/{device.thing}/notice", qos=1, payload=b'{"n": 1}')
        # THEN the device receives it (no device policy applies to AWS IoT itself)
        assert device.next_on(f"things/{device.thing}/notice") == b'{"n": 1}'
        # AND topics AWS refuses are refused with its error shape
        for topic in (f"things/{device.thing}/+", "things/#"):
            with pytest.raises(ClientError) as refused:
                iot_data.publish(topic=topic, qos=1, payload=b"{}")
            assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
        with pytest.raises(ClientError) as refused:
            iot_data.publish(topic=f"things/{device.thing}/notice", qos=2, payload=b"{}")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    finally:
        device.close()


def test_empty_topic_is_refused_like_aws(rules_stack: RunningStack) -> None:
    assert rules_stack.iot_data is not None
    request = urllib.request.Request(  # noqa: S310 - the stack's own endpoint
        f"{rules_stack.iot_data.url}/topics/?qos=1", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code == 400
    assert refused.value.headers["x-amzn-ErrorType"] == "InvalidRequestException"
    assert json.loads(refused.value.read())["message"]


def test_lambda_workers_are_pointed_at_the_iot_data_endpoint(rules_stack: RunningStack) -> None:
    assert rules_stack.iot_data is not None
    state = json.loads(Path(rules_stack.state_path or "").read_text(encoding="utf-8"))
    assert state["iot_data_url"] == rules_stack.iot_data.url
    function = rules_stack.deployment.functions["EchoFunction"]
    package = rules_stack.invoker.packages["EchoFunction"]
    env = rules_stack.invoker.environment(function, package)
    assert env["AWS_ENDPOINT_URL_IOT_DATA_PLANE"] == rules_stack.iot_data.url
    assert env["AWS_ENDPOINT_URL"] == rules_stack.endpoint_url


@pytest.mark.parametrize(
    ("sql", "topic", "payload", "expected"),
    [
        (
            f"{PROJECTION} FROM 'things/+/echo'",
            "things/dev_1/echo",
            b'{"principal": "forged"}',
            {
                "payload": "eyJwcmluY2lwYWwiOiAiZm9yZ2VkIn0=",
                "thingName": "dev_1",
                "principal": "P",
                "clientId": "C",
            },
        ),
        (  # encode(*) takes any bytes, JSON or not
            "SELECT encode( * , 'base64' ) as raw FROM 'a'",
            "a",
            b"\x00\xff",
            {"raw": "AP8="},
        ),
        (
            "SELECT *, topic(2) AS thingName FROM 'things/+/echo'",
            "things/dev_1/echo",
            b'{"a": 1}',
            {"a": 1, "thingName": "dev_1"},
        ),
        (
            "SELECT topic() AS t, topic(9) AS missing FROM 'things/#'",
            "things/x/y",
            b"not json",
            {"t": "things/x/y"},
        ),
        ("select * from 'a/+'", "a/b", b'{"principal": "kept"}', {"principal": "kept"}),
    ],
)
def test_sql_projection(sql: str, topic: str, payload: bytes, expected: dict[str, Any]) -> None:
    query = parse_sql(sql)
    assert topic_matches(query.source, topic)
    assert query.project(topic, payload, principal="P", client_id="C") == expected


@pytest.mark.parametrize(
    ("sql", "payload", "why"),
    [
        # AWS does not document which wins: the offline broker does not guess
        ("SELECT *, principal() AS principal FROM 'a'", b'{"principal": "x"}', "alias"),
        ("SELECT * FROM 'a'", b'{"csr": 1, "csr": 2}', "repeats a key"),
        ("SELECT * FROM 'a'", b"[1]", "not a JSON object"),
    ],
)
def test_a_message_iot_would_read_in_an_undocumented_way_does_not_fire_the_rule(
    sql: str, payload: bytes, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        parse_sql(sql).project("a", payload, principal="P", client_id="C")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("things/+/echo", "things/a/echo", True),
        ("things/+/echo", "things/a/echo/answer", False),
        ("things/+/echo", "things/a/b/echo", False),
        ("things/#", "things/a/b", True),
        ("things/a", "things/a", True),
        ("things/a", "things/b", False),
    ],
)
def test_topic_filter_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM 'things/+/renew' WHERE qos = 1",
        "SELECT timestamp() AS t FROM 'things/+/renew'",
        "SELECT state.reported AS r FROM 'things/+/renew'",
        "SELECT topic(2) FROM 'things/+/renew'",
        "SELECT * FROM 'things/#/renew'",
        "SELECT *, * FROM 'a'",
        "SELECT encode(*, 'hex') AS p FROM 'a'",
        "SELECT encode(csr, 'base64') AS p FROM 'a'",
        "SELECT encode(*, 'base64') FROM 'a'",
        "SELECT topic(2) AS a, clientid() AS a FROM 'a'",
        "SELECT encode(*, 'base64' AS p FROM 'a'",
        "DELETE FROM 'a'",
    ],
)
def test_sql_outside_the_subset_is_refused(sql: str) -> None:
    with pytest.raises(UnsupportedSql):
        parse_sql(sql)


def test_up_fails_clearly_on_unsupported_sql(tmp_path: Path) -> None:
    # GIVEN the template with a rule whose SQL the offline broker cannot run
    template = echo_template(tmp_path, sql="SELECT * FROM 'things/+/echo' WHERE a > 1")
    # WHEN the stack is started on it, THEN it fails naming the rule and the docs
    with pytest.raises(DeployError, match=r"topic rule EchoRule_\w+: .*docs/offline-stack.md"):
        start_stack(
            template=template,
            mqtt_port=None,
            lambda_log_dir=tmp_path / "logs",
            build_dir=ROOT / ".local" / "build",
        )
