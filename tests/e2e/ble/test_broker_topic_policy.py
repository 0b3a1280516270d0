"""A legitimate device cannot use another thing's topics through the broker (the IoT policy)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from onboarding_ble import credentials, events
from onboarding_ble.credentials import Credentials

from .procs import Children, messages, run_app, start_device, start_radio

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def provision(
    procs: Children,
    device_radio: str,
    app_radio: str,
    stack: dict[str, Any],
    pinned_ca: Path,
    state_dir: Path,
) -> Credentials:
    """Onboard a fresh device over BLE (no MQTT) and return the credentials it stored."""
    dsn = f"ble-{uuid.uuid4().hex[:10]}"
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, None)
    device.wait_for(events.Advertising)
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)
    assert code == 0, output
    assert device.wait(60) == 0, device.output()
    creds = credentials.load_valid(state_dir, credentials.load_ca(pinned_ca.read_bytes()))
    assert creds is not None
    return creds


class Client:
    """An MQTT client with a device's certificate, collecting what it receives."""

    def __init__(self, creds: Credentials, broker: dict[str, Any]) -> None:
        from awsiot import mqtt_connection_builder

        self.received: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=broker["host"],
            port=broker["port"],
            cert_filepath=str(creds.cert_path),
            pri_key_filepath=str(creds.key_path),
            ca_filepath=broker["ca"],
            client_id=creds.thing_name,
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

    def wait_for(self, topic: str, payload: bytes, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (topic, payload) not in self.received:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{topic} {payload!r} never arrived: {self.received}"
                self._cond.wait(remaining)

    def close(self) -> None:
        self.connection.disconnect().result(15)


def test_device_cannot_publish_or_subscribe_to_another_things_topics(
    stack, broker, pinned_ca, procs, tmp_path
):
    from awscrt.mqtt import SubscribeError

    # GIVEN two provisioned devices, each connected with its own certificate and thing name
    device_a, device_b, app_radio = start_radio(procs, 3)
    mine = provision(procs, device_a, app_radio, stack, pinned_ca, tmp_path / "a")
    other = provision(procs, device_b, app_radio, stack, pinned_ca, tmp_path / "b")
    mallory, victim = Client(mine, broker), Client(other, broker)
    try:
        # ... and the other thing listening on its own topics
        victim.subscribe(f"things/{other.thing_name}/#")
        mallory.subscribe(f"things/{mine.thing_name}/#")

        # WHEN the first device subscribes to the other thing's topics
        # THEN the broker refuses the subscription (SUBACK failure)
        with pytest.raises(SubscribeError):
            mallory.subscribe(f"things/{other.thing_name}/#")

        # WHEN it publishes to the other thing's topic, then to its own
        forged = f"forged-{uuid.uuid4().hex}".encode()
        own = f"own-{uuid.uuid4().hex}".encode()
        mallory.publish(f"things/{other.thing_name}/hello", forged)
        mallory.publish(f"things/{mine.thing_name}/hello", own)
        # ... and the other thing publishes on its own topic
        genuine = f"genuine-{uuid.uuid4().hex}".encode()
        victim.publish(f"things/{other.thing_name}/status", genuine)

        # THEN its own message arrives, and so does the other thing's ...
        mallory.wait_for(f"things/{mine.thing_name}/hello", own)
        victim.wait_for(f"things/{other.thing_name}/status", genuine)
        time.sleep(0.5)  # grace for anything still in flight
        # ... but the forged message never reaches the other thing's subscriber,
        assert all(payload != forged for _, payload in victim.received), victim.received
        # the first device receives nothing of the other thing's traffic,
        assert all(topic.startswith(f"things/{mine.thing_name}/") for topic, _ in mallory.received)
        # and the broker records only what it let through.
        recorded = [(m["client_id"], m["topic"], m["payload"]) for m in messages(broker)]
        assert (mine.thing_name, f"things/{mine.thing_name}/hello", own.decode()) in recorded
        assert not [r for r in recorded if r[2] == forged.decode()], recorded
    finally:
        mallory.close()
        victim.close()
    assert f"DENY publish client={mine.thing_name} topic=things/{other.thing_name}/hello" in (
        broker["log"].output
    )


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("things/device_A/hello", True),
        ("things/device_A/#", True),
        ("$aws/things/device_A/shadow/update", True),
        ("$aws/things/device_A/jobs/notify", True),
        ("things/device_B/hello", False),
        ("things/device_A", False),
        ("things/device_AB/hello", False),
        ("things/+/hello", False),
        ("things/#", False),
        ("#", False),
        ("$aws/things/device_A/tunnels/notify", False),
        ("$aws/things/device_B/shadow/update", False),
    ],
)
def test_topic_policy_is_the_device_policy_of_the_template(topic, allowed):
    from devstack.iot.broker import policy_allows

    assert policy_allows("device_A", topic) is allowed
