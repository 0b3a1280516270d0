"""Access ends for good, offline, as an attacker would try it: a device connected with the
certificate it renewed from (inside the renewal's window, two ACTIVE certificates) is cut off
at once when its owner releases it or hands it over, and can connect with neither certificate
again. The functions end the session through IoT's DeleteConnection on the stack's iot-data
endpoint, before the API answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.stack import RunningStack, wait_for
from onboarding_ble import renewal
from tests.support.mqtt_devices import MqttDevice, Provisioned, http, provision
from tests.support.offline import new_member

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def status_of(stack: RunningStack, certificate_id: str) -> str:
    described = stack.client("iot").describe_certificate(certificateId=certificate_id)
    return str(described["certificateDescription"]["status"])


def renew_without_confirming(stack: RunningStack, device: Provisioned) -> str:
    """The device asks for a new certificate over MQTT (the topic rule runs the renewal
    function) and never confirms it: the id of the new certificate."""
    topics = renewal.Topics(device.thing_name)
    _key, csr = renewal.new_key_and_csr(device.dsn)
    assert stack.rules is not None and stack.mqtt is not None
    stack.rules.on_publish(
        topics.renew,
        json.dumps({"csr": csr}).encode(),
        principal=device.certificate_id,
        client_id=device.thing_name,
    )
    path = stack.mqtt.messages_file

    def accepted() -> list[str]:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [
            json.loads(m["payload"])["certificateId"]
            for m in map(json.loads, lines)
            if m["topic"] == topics.accepted
        ]

    assert wait_for(lambda: bool(accepted()), 60), "the renewal was not answered"
    return accepted()[-1]


def release(stack: RunningStack, device: Provisioned) -> None:
    status, body = http("DELETE", f"{stack.api_url}/devices/{device.dsn}", device.owner.id_token)
    assert status == 200 and body["finished"], body


def hand_over(stack: RunningStack, device: Provisioned) -> None:
    url = f"{stack.api_url}/devices/{device.dsn}"
    status, started = http("POST", f"{url}/transfer", device.owner.id_token)
    assert status == 200, started
    recipient = new_member(stack)
    status, claimed = _post(f"{url}/claim", recipient.id_token, {"code": started["transferCode"]})
    assert status == 200 and claimed["previousCertificateRevoked"], claimed


def _post(url: str, token: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def connections() -> Iterator[list[MqttDevice]]:
    opened: list[MqttDevice] = []
    yield opened
    for each in opened:
        each.close()


ENDINGS: dict[str, Callable[[RunningStack, Provisioned], None]] = {
    "release": release,
    "claim": hand_over,
}


@pytest.mark.parametrize("end", ENDINGS.values(), ids=ENDINGS.keys())
def test_a_device_in_a_renewal_window_is_cut_off_at_once_and_for_good(
    offline_stack: RunningStack,
    tmp_path: Path,
    connections: list[MqttDevice],
    end: Callable[[RunningStack, Provisioned], None],
) -> None:
    # GIVEN a connected device that renewed and never confirmed: two ACTIVE certificates, and
    # the device still connected with the one it renewed from
    device = provision(offline_stack, tmp_path)
    connected = MqttDevice(offline_stack, device)
    connections.append(connected)
    new = renew_without_confirming(offline_stack, device)
    assert {status_of(offline_stack, c) for c in (device.certificate_id, new)} == {"ACTIVE"}

    # WHEN its owner's access ends (released, or handed to another member)
    end(offline_stack, device)

    # THEN the session was ended by the time the API answered: through DeleteConnection, or by
    # the broker's own registry watch when it noticed the revoked certificates first (then
    # DeleteConnection finds no session, as IoT answers it) ...
    assert offline_stack.mqtt is not None
    log = offline_stack.mqtt.log_file.read_text(encoding="utf-8")
    assert f"DISCONNECT client={device.thing_name} " in log
    assert connected.interrupted.wait(5), "the device is still connected"
    # ... neither certificate is ACTIVE any more ...
    assert status_of(offline_stack, device.certificate_id) == "REVOKED"
    assert status_of(offline_stack, new) == "REVOKED"
    # ... and the device cannot come back with the certificate it holds
    with pytest.raises(Exception):  # noqa: B017  (the SDK's connect failure)
        connections.append(MqttDevice(offline_stack, device, timeout=10))
