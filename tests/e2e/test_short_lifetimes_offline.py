"""Renewal and expiry watched in minutes: the offline stack issuing short-lived device
certificates (`devstack up --cert-lifetime`, devstack.moto_bridges.lifetime), here switched on
for a moment on the session's stack.

- A device whose certificate lives two minutes is EXPIRING at once: `devstack expiry` reports
  it and the device, connected over MQTT, gets `renew/due` naming its notAfter, well before it.
- A device whose certificate has run out is counted expired by the watch, shown EXPIRED to its
  owner, and refused by the broker, as IoT Core refuses an expired certificate.
- A device onboarded through the app (example/device.py and example/provisioning_app.py on the
  virtual radio) whose certificate runs out while it is off comes back through the app: it
  advertises again, its owner onboards it again, and it connects as the same thing (a recovery).
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devstack import cli
from devstack.moto_bridges import lifetime
from devstack.stack import RunningStack, wait_for
from onboarding_ble import events, processes, renewal
from onboarding_ble.processes import Children
from tests.support.mqtt_devices import MqttDevice, Provisioned, http, provision
from tests.support.offline import new_member, unique_dsn

pytestmark = pytest.mark.e2e


@pytest.fixture
def connections() -> Iterator[list[MqttDevice]]:
    opened: list[MqttDevice] = []
    yield opened
    for connection in opened:
        connection.close()


def provision_short_lived(
    stack: RunningStack, directory: Path, life: timedelta
) -> tuple[Provisioned, datetime]:
    """A device provisioned (CSR mode, through the API) while the stack issues certificates of
    ``life``; its notAfter."""
    with lifetime.device_lifetime_of(life):
        device = provision(stack, directory)
    certificate = x509.load_pem_x509_certificate(device.cert_path.read_bytes())
    return device, certificate.not_valid_after_utc


def run_watch(stack: RunningStack, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`devstack expiry` as the operator runs it; its report."""
    capsys.readouterr()
    assert cli.main(["expiry", "--state", str(stack.state_path)]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def revoke(stack: RunningStack, device: Provisioned) -> None:
    """Leave the session's stack without a short-lived ACTIVE device for later tests."""
    url = f"{stack.api_url}/devices/{device.dsn}/certificate"
    assert http("DELETE", url, device.owner.id_token)[0] == 200


def test_a_short_lived_device_is_reported_and_told_to_renew(
    offline_stack: RunningStack,
    connections: list[MqttDevice],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a device provisioned while the stack issues two-minute certificates ...
    device, not_after = provision_short_lived(offline_stack, tmp_path, timedelta(minutes=2))
    left = not_after - datetime.now(UTC)
    assert timedelta(minutes=1) < left <= timedelta(minutes=2), not_after
    # ... connected to the broker and subscribed to its renew/due, as device.py --stay is
    connected = MqttDevice(offline_stack, device)
    connections.append(connected)
    nudges: queue.Queue[bytes] = queue.Queue()
    from awscrt import mqtt

    due = renewal.Topics(device.thing_name).due
    subscribed, _ = connected.connection.subscribe(
        due, mqtt.QoS.AT_LEAST_ONCE, lambda topic, payload, **_: nudges.put(payload)
    )
    subscribed.result(15)

    # WHEN the operator runs the expiry watch
    report = run_watch(offline_stack, capsys)

    # THEN the watch reports it as expiring and asked every expiring device to renew
    assert report["expiring"] >= 1 and report["complete"] is True, report
    assert report["renewalsRequested"] == report["expiring"], report
    # ... the device got renew/due naming its certificate's notAfter, before it expired
    nudge = json.loads(nudges.get(timeout=15))
    assert (nudge["notAfter"], nudge["reason"]) == (iso(not_after), "EXPIRING"), nudge
    assert datetime.now(UTC) < not_after
    # ... and its owner sees it EXPIRING, with that notAfter
    status, shown = http(
        "GET", f"{offline_stack.api_url}/devices/{device.dsn}", device.owner.id_token
    )
    assert status == 200, shown
    assert (shown["expiry"], shown["notAfter"]) == ("EXPIRING", iso(not_after))
    revoke(offline_stack, device)


def test_a_certificate_that_ran_out_is_reported_expired_and_refused(
    offline_stack: RunningStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the watch's count of expired devices, and a device whose certificate lives 3 s
    before = run_watch(offline_stack, capsys)["expired"]
    device, not_after = provision_short_lived(offline_stack, tmp_path, timedelta(seconds=3))

    # WHEN its certificate has run out and the operator runs the watch
    assert wait_for(lambda: datetime.now(UTC) > not_after + timedelta(seconds=1), 10)
    report = run_watch(offline_stack, capsys)

    # THEN the watch counts it among the expired, and its owner sees it EXPIRED
    assert report["expired"] >= before + 1, report
    status, shown = http(
        "GET", f"{offline_stack.api_url}/devices/{device.dsn}", device.owner.id_token
    )
    assert status == 200, shown
    assert shown["expiry"] == "EXPIRED", shown
    # ... and the broker refuses the expired certificate, as IoT Core does
    with pytest.raises(Exception):  # noqa: B017  (the SDK's connect failure)
        MqttDevice(offline_stack, device, timeout=10).close()
    revoke(offline_stack, device)


# Long enough for the app to hand the device its certificate over the radio and the device to
# connect with it; the test waits this out once.
RECOVERY_LIFETIME = timedelta(seconds=20)


def test_an_expired_device_recovers_through_the_app(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    owner = new_member(offline_stack)
    dsn = unique_dsn("RECOVER")
    state_dir = tmp_path / "device"
    pem = offline_stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=offline_stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    pinned = tmp_path / "device-ca.pem"
    pinned.write_text(pem.strip() + "\n", encoding="utf-8")
    state = str(offline_stack.state_path)
    device_argv = ["device.py", "--transport", "", "--dsn", dsn]
    device_argv += ["--state-dir", str(state_dir), "--ca", str(pinned), "--state", state]
    login = (owner.username, owner.password)

    with Children(tmp_path) as children:
        device_radio, app_radio = processes.start_radio(children)
        device_argv[2] = device_radio
        # GIVEN a device its owner onboarded through the app while certificates live 20 s,
        # which connected and said hello, then was switched off
        with lifetime.device_lifetime_of(RECOVERY_LIFETIME):
            first = children.start("device", device_argv)
            first.wait_for(events.Advertising, 60)
            app = processes.start_app(children, app_radio, offline_stack.state_path, dsn, login)
            assert app.wait(120) == 0, app.output()
        assert first.wait(60) == 0, first.output()
        onboarded = first.event(events.Provisioned)
        assert onboarded is not None and first.event(events.HelloPublished) is not None
        old_certificate = x509.load_pem_x509_certificate(
            (state_dir / "certificate.pem").read_bytes()
        )
        not_after = old_certificate.not_valid_after_utc

        # WHEN its certificate runs out while it is off, and it is switched on again
        assert wait_for(lambda: datetime.now(UTC) > not_after + timedelta(seconds=1), 60)
        again = children.start("device-again", device_argv)
        # THEN it says its certificate expired and advertises the onboarding service again
        expired = again.wait_for(events.CredentialsExpired, 60)
        assert (expired.thing, expired.cert) == (onboarded.thing, onboarded.cert)
        again.wait_for(events.Advertising, 60)

        # WHEN its owner onboards it again through the app
        app = processes.start_app(
            children, app_radio, offline_stack.state_path, dsn, login, name="app-again"
        )
        assert app.wait(120) == 0, app.output()

        # THEN it gets a new certificate for the same thing and connects with it
        assert again.wait(60) == 0, again.output()
        recovered = again.event(events.Provisioned)
        assert recovered is not None and recovered.thing == onboarded.thing
        assert recovered.cert != onboarded.cert
        assert again.event(events.HelloPublished) is not None, again.output()

    # ... its owner sees it VALID with the new certificate; the expired one is revoked in IoT
    status, shown = http("GET", f"{offline_stack.api_url}/devices/{dsn}", owner.id_token)
    assert status == 200, shown
    assert (shown["certificateId"], shown["expiry"]) == (recovered.cert, "VALID"), shown
    old = offline_stack.client("iot").describe_certificate(certificateId=onboarded.cert)
    assert old["certificateDescription"]["status"] == "REVOKED"
    # ... and the audit trail records a recovery of the expired certificate
    trail = offline_stack.client("dynamodb").query(
        TableName=offline_stack.outputs["AuditTableName"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"device#{dsn}"}},
    )["Items"]
    recoveries = [item for item in trail if item["event"]["S"] == "RECOVER"]
    assert [r["certificate_id"]["S"] for r in recoveries] == [recovered.cert], trail
    assert recoveries[0]["expired_certificate_id"]["S"] == onboarded.cert
