"""Revocation takes effect at once, offline: IoT's DeleteConnection on the stack's iot-data
endpoint disconnects a client from the broker, and the broker's revocation watch keeps
disconnecting revoked clients whatever happened before (a refused reconnect, a check that fails
or hangs, a half-open session)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import devstack.iot.broker
from devstack.stack import RunningStack
from tests.support.mqtt_devices import MqttDevice, Provisioned, http, provision

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def iot_data(stack: RunningStack) -> Any:
    """A boto3 iot-data client as a Lambda function gets it, pointed at the offline endpoint."""
    assert stack.iot_data is not None
    return boto3.client(
        "iot-data",
        region_name=stack.deployment.region,
        endpoint_url=stack.iot_data.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def broker_log(stack: RunningStack) -> str:
    assert stack.mqtt is not None
    return stack.mqtt.log_file.read_text(encoding="utf-8")


def revoke(stack: RunningStack, device: Provisioned) -> None:
    url = f"{stack.api_url}/devices/{device.dsn}/certificate"
    status, body = http("DELETE", url, device.owner.id_token)
    assert status == 200, body


@pytest.fixture
def devices() -> Iterator[list[MqttDevice]]:
    """Connections of one test, all closed at its end."""
    opened: list[MqttDevice] = []
    yield opened
    for device in opened:
        device.close()


def test_delete_connection_disconnects_a_connected_client_at_once(
    offline_stack: RunningStack, tmp_path: Path, devices: list[MqttDevice]
) -> None:
    # GIVEN two connected devices
    gone, kept = provision(offline_stack, tmp_path / "a"), provision(offline_stack, tmp_path / "b")
    devices += [MqttDevice(offline_stack, gone), MqttDevice(offline_stack, kept)]

    # WHEN the cloud deletes the first one's connection, as the Lambda functions do
    answer = iot_data(offline_stack).delete_connection(clientId=gone.thing_name, cleanSession=True)

    # THEN it answers 200 with no body, and the device's connection is already closed
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert devices[0].interrupted.wait(5)
    assert (
        f"DISCONNECT client={gone.thing_name} DeleteConnection cleanSession=true "
        "preventWillMessage=false" in broker_log(offline_stack)
    )
    # ... the other device is untouched
    assert not devices[1].interrupted.is_set()
    # ... and DeleteConnection revokes nothing: the device's certificate still connects
    assert devices[0].resumed.wait(30)


@pytest.mark.parametrize(("clean", "present"), [(True, False), (False, True)])
def test_clean_session_drops_a_persistent_session(
    offline_stack: RunningStack,
    tmp_path: Path,
    devices: list[MqttDevice],
    clean: bool,
    present: bool,
) -> None:
    # GIVEN a device with a persistent session and a subscription
    device = provision(offline_stack, tmp_path)
    devices.append(MqttDevice(offline_stack, device, clean_session=False))
    devices[0].subscribe(f"things/{device.thing_name}/commands")

    # WHEN its connection is deleted with or without cleanSession
    iot_data(offline_stack).delete_connection(clientId=device.thing_name, cleanSession=clean)

    # THEN the device reconnects (its certificate is still ACTIVE) and the broker kept its
    # session only without cleanSession
    assert devices[0].interrupted.wait(5)
    assert devices[0].resumed.wait(30)
    assert devices[0].session_present is present


def test_delete_connection_answers_errors_as_aws_does(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    client = iot_data(offline_stack)
    device = provision(offline_stack, tmp_path)

    # a client that is not connected (never was): ResourceNotFoundException, 404
    with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:
        client.delete_connection(clientId=device.thing_name, cleanSession=True)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # a client id AWS refuses: InvalidRequestException, 400
    for bad in ("$aws-broker", "x" * 129):
        with pytest.raises(client.exceptions.InvalidRequestException) as refused:
            client.delete_connection(clientId=bad, cleanSession=True)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # a flag that is not a boolean (boto3 never sends one): 400
    assert offline_stack.iot_data is not None
    url = f"{offline_stack.iot_data.url}/connections/{device.thing_name}?cleanSession=yes"
    request = urllib.request.Request(url, method="DELETE")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert raw.value.code == 400
    assert raw.value.headers["x-amzn-ErrorType"] == "InvalidRequestException"


def test_the_watch_still_disconnects_after_a_refused_reconnect(
    offline_stack: RunningStack, tmp_path: Path, devices: list[MqttDevice]
) -> None:
    # GIVEN two connected devices; the first is revoked and dropped by the watch
    first, second = (
        provision(offline_stack, tmp_path / "a"),
        provision(offline_stack, tmp_path / "b"),
    )
    devices += [MqttDevice(offline_stack, first), MqttDevice(offline_stack, second)]
    revoke(offline_stack, first)
    assert devices[0].interrupted.wait(30), broker_log(offline_stack)
    devices[0].close()  # no automatic reconnects from here: the next one is explicit

    # WHEN the revoked device reconnects with its stored credentials, and is refused
    with pytest.raises(Exception):  # noqa: B017 - awscrt raises its own error types
        MqttDevice(offline_stack, first)
    assert f"REFUSE client={first.thing_name}" in broker_log(offline_stack)

    # THEN revoking the second device still disconnects it
    revoke(offline_stack, second)
    assert devices[1].interrupted.wait(30), broker_log(offline_stack)
    # ... and the refused session left behind is not "disconnected" again and again
    time.sleep(2 * devstack.iot.broker.WATCH_INTERVAL)
    drops = f"DISCONNECT client={first.thing_name} "
    assert broker_log(offline_stack).count(drops) == 1, broker_log(offline_stack)


class HalfOpenClient:
    """A client that connects, subscribes to its own topic, then reads nothing more and never
    closes: a device whose network went away without a word."""

    def __init__(self, stack: RunningStack, device: Provisioned) -> None:
        assert stack.mqtt is not None
        context = ssl.create_default_context(cafile=str(stack.mqtt.ca_file))
        context.load_cert_chain(str(device.cert_path), str(device.key_path))
        raw = socket.create_connection((stack.mqtt.host, stack.mqtt.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.socket = context.wrap_socket(raw, server_hostname=stack.mqtt.host)
        client_id = device.thing_name.encode()
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id
        self.socket.sendall(bytes([0x10, len(connect)]) + connect)
        assert self.socket.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        topic = f"things/{device.thing_name}/flood".encode()
        subscribe = b"\x00\x01" + struct.pack("!H", len(topic)) + topic + b"\x00"
        self.socket.sendall(bytes([0x82, len(subscribe)]) + subscribe)
        assert self.socket.recv(5)[:1] == b"\x90"  # SUBACK
        self.topic = topic.decode()

    def close(self) -> None:
        self.socket.close()


def test_a_failing_or_hanging_check_and_a_half_open_session_do_not_stop_the_watch(
    offline_stack: RunningStack,
    tmp_path: Path,
    devices: list[MqttDevice],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a half-open client with messages piling up for it, revoked ...
    stuck = provision(offline_stack, tmp_path / "stuck")
    half_open = HalfOpenClient(offline_stack, stuck)
    assert offline_stack.iot_data is not None and offline_stack.iot_data.publish is not None
    for _ in range(20):
        offline_stack.iot_data.publish(half_open.topic, b"x" * 100_000, 0)
    # ... a device whose registry check fails, another whose check hangs ...
    failing, hanging, victim = (provision(offline_stack, tmp_path / n) for n in "fhv")
    devices += [MqttDevice(offline_stack, d) for d in (failing, hanging, victim)]
    release = threading.Event()
    admit = devstack.iot.broker.admit

    def flaky_admit(iot: Any, client_id: str, der: bytes) -> tuple[bool, str]:
        if client_id == failing.thing_name:
            raise RuntimeError("registry check failed")
        if client_id == hanging.thing_name:
            release.wait(60)
        return admit(iot, client_id, der)

    monkeypatch.setattr(devstack.iot.broker, "admit", flaky_admit)
    monkeypatch.setattr(devstack.iot.broker, "CHECK_TIMEOUT", 2.0)
    try:
        revoke(offline_stack, stuck)

        # WHEN another device is revoked
        revoke(offline_stack, victim)

        # THEN the watch still disconnects it, and the half-open client is dropped too
        assert devices[2].interrupted.wait(30), broker_log(offline_stack)
        assert f"DISCONNECT client={stuck.thing_name} " in broker_log(offline_stack)
        # ... while the devices whose check failed or hung stay connected, as IoT would keep
        # a client it cannot check
        assert not devices[0].interrupted.is_set() and not devices[1].interrupted.is_set()
    finally:
        release.set()
        half_open.close()
