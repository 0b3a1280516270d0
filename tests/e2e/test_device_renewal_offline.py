"""A device renews its own certificate through the offline stack: example/device.py over MQTT,
the broker running the template's topic rules, the renewal function in its own worker, its
answer back through the iot-data endpoint. Also: a renewal refused for a revoked or a foreign
certificate, and a device killed half-way through a renewal."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from devstack.stack import RunningStack, wait_for
from onboarding_ble import credentials, events, renewal, trust
from onboarding_ble.credentials import Answer, Credentials
from onboarding_ble.processes import Child, Children, device_argv
from provisioning.usecases.renew import UNCONFIRMED_HOLD_SECONDS
from tests.support.offline import new_member, post_certificate, unique_dsn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# A stack and a worker of its own (tests/conftest.py): the killed renewal waits out the cloud's
# four-minute hold, and the other offline-stack modules run meanwhile.
OFFLINE_STACK_GROUP = "offline-stack-renewal"


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    with Children(tmp_path) as procs:
        yield procs


def pinned_ca(stack: RunningStack, directory: Path) -> Path:
    pem = stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "device-ca.pem"
    path.write_text(pem.strip() + "\n", encoding="utf-8")
    return path


def provision(stack: RunningStack, directory: Path) -> tuple[str, Credentials, Any]:
    """A device provisioned in CSR mode through the API, its credentials stored as device.py
    stores them. (DSN, credentials, the owner)."""
    owner = new_member(stack)
    dsn = unique_dsn("RENEW")
    key, csr = renewal.new_key_and_csr(dsn)
    status, answer = post_certificate(stack.api_url, {"DSN": dsn, "csr": csr}, owner.id_token)
    assert status == 200, answer
    cas = credentials.load_ca(pinned_ca(stack, directory).read_bytes())
    trusted = trust.verify_device_certificate(
        answer["certificatePem"],
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas),
        dsn,
        key,
        chain_pem=answer["certificateChainPem"],
    )
    state = directory / "state"
    creds = credentials.store(
        state,
        Answer(
            trusted.certificate,
            renewal.private_pem(key),
            trusted.thing_name,
            trusted.certificate_id,
            "",
            credentials.intermediates_of(trusted),
        ),
    )
    return dsn, creds, owner


def start_device(
    children: Children, stack: RunningStack, dsn: str, directory: Path, *extra: str
) -> Child:
    assert stack.mqtt is not None and stack.state_path is not None
    argv = device_argv(
        "none",
        dsn,
        directory / "state",
        directory / "device-ca.pem",
        (f"{stack.mqtt.host}:{stack.mqtt.port}", str(stack.mqtt.ca_file)),
    )
    return children.start("device", [*argv, *extra])


def status_of(stack: RunningStack, certificate_id: str) -> str:
    described = stack.client("iot").describe_certificate(certificateId=certificate_id)
    return str(described["certificateDescription"]["status"])


def published(stack: RunningStack, topic: str) -> list[dict[str, Any]]:
    assert stack.mqtt is not None
    path = stack.mqtt.messages_file
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(m["payload"]) for m in map(json.loads, lines) if m["topic"] == topic]


def test_a_device_renews_its_certificate_end_to_end(
    offline_stack: RunningStack, children: Children, tmp_path: Path
) -> None:
    # GIVEN a provisioned device with working credentials
    dsn, creds, _owner = provision(offline_stack, tmp_path)

    # WHEN it connects and its renewal falls due
    device = start_device(
        children, offline_stack, dsn, tmp_path, "--renewals", "1", "--renew-after", "0"
    )
    assert device.wait(90) == 0, device.output()

    # THEN it renewed: a new certificate, ACTIVE, stored in place of the old one
    renewed = device.event(events.Renewed)
    assert renewed is not None and renewed.old == creds.certificate_id, device.output()
    assert renewed.cert != creds.certificate_id
    assert status_of(offline_stack, renewed.cert) == "ACTIVE"
    stored = x509.load_pem_x509_certificate(creds.cert_path.read_bytes())
    assert stored.fingerprint(hashes.SHA256()).hex() == renewed.cert
    assert not (tmp_path / "state" / renewal.NEXT_DIR).exists()
    # ... the function answered through the broker, and the device confirmed the new one
    topics = renewal.Topics(creds.thing_name)
    assert published(offline_stack, topics.accepted)
    assert published(offline_stack, topics.confirm) == [{"certificateId": renewed.cert}]
    # ... after which the cloud retires the old certificate
    assert wait_for(lambda: status_of(offline_stack, creds.certificate_id) != "ACTIVE", 30)

    # AND the device connects with its new credentials
    again = start_device(children, offline_stack, dsn, tmp_path)
    assert again.wait(60) == 0, again.output()
    has = again.event(events.HasCredentials)
    assert has is not None and has.cert == renewed.cert


def test_a_renewal_for_a_revoked_certificate_is_refused(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    # GIVEN a device whose certificate its owner revoked (IoT Core may take minutes to
    # disconnect it, so its renewal request can still reach the rules engine)
    dsn, creds, owner = provision(offline_stack, tmp_path)
    from tests.e2e.test_device_lifecycle_http import http

    status, _ = http("DELETE", f"{offline_stack.api_url}/devices/{dsn}/certificate", owner.id_token)
    assert status == 200
    _key, csr = renewal.new_key_and_csr(dsn)
    topics = renewal.Topics(creds.thing_name)
    assert offline_stack.rules is not None

    # WHEN its renewal request reaches the topic rule
    queued = offline_stack.rules.on_publish(
        topics.renew,
        json.dumps({"csr": csr}).encode(),
        principal=creds.certificate_id,
        client_id=creds.thing_name,
    )

    # THEN the function refuses it on renew/rejected and issues nothing
    assert queued == 1
    assert wait_for(lambda: bool(published(offline_stack, topics.rejected)), 30)
    assert not published(offline_stack, topics.accepted)
    assert set(published(offline_stack, topics.rejected)[0]) >= {"code", "msg"}


def test_a_renewal_with_a_foreign_certificate_is_refused(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    # GIVEN two devices
    _dsn, victim, _ = provision(offline_stack, tmp_path / "victim")
    _dsn, mallory, _ = provision(offline_stack, tmp_path / "mallory")
    topics = renewal.Topics(victim.thing_name)
    from devstack.iot.broker import policy_allows

    # WHEN the second asks to renew the first's certificate: the device policy stops it at the
    # broker (its client id is its own thing) ...
    assert not policy_allows(mallory.thing_name, topics.renew)
    # ... and were it to reach the rule anyway (its certificate on the first's topic), the
    # renewal function refuses it, as the publishing certificate is not the thing's
    assert offline_stack.rules is not None
    _key, csr = renewal.new_key_and_csr(_dsn)
    offline_stack.rules.on_publish(
        topics.renew,
        json.dumps({"csr": csr}).encode(),
        principal=mallory.certificate_id,
        client_id=victim.thing_name,
    )
    assert wait_for(lambda: bool(published(offline_stack, topics.rejected)), 30)
    assert not published(offline_stack, topics.accepted)
    assert status_of(offline_stack, victim.certificate_id) == "ACTIVE"


def test_a_device_killed_half_way_through_a_renewal_restarts_and_renews(
    offline_stack: RunningStack,
    children: Children,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a device renewing, killed after it published its CSR and before the answer reached
    # it (the cloud's answer is held at the iot-data endpoint until the device is dead)
    dsn, creds, _owner = provision(offline_stack, tmp_path)
    topics = renewal.Topics(creds.thing_name)
    iot_data = offline_stack.iot_data
    assert iot_data is not None and iot_data.publish is not None
    publish, dead = iot_data.publish, threading.Event()

    def held(topic: str, payload: bytes, qos: int) -> None:
        if topic == topics.accepted:
            dead.wait(30)
        publish(topic, payload, qos)

    monkeypatch.setattr(iot_data, "publish", held)
    before = {p.name: p.read_bytes() for p in creds.directory.iterdir() if p.is_file()}
    device = start_device(
        children, offline_stack, dsn, tmp_path, "--renewals", "1", "--renew-after", "0"
    )
    device.wait_for(events.RenewalRequested, 60)
    os.killpg(device.pid, signal.SIGKILL)
    device.popen.wait(10)
    dead.set()
    monkeypatch.setattr(iot_data, "publish", publish)
    assert device.event(events.Renewed) is None

    # THEN its working credentials are untouched
    assert {p.name: p.read_bytes() for p in creds.directory.iterdir() if p.is_file()} == before

    # WHEN it restarts, THEN it connects with them and renews successfully: its new key is not
    # the one the answer it lost was for, so the cloud first has it wait until no request it
    # published before could still arrive (RENEWAL_UNCONFIRMED), then issues it a certificate
    again = start_device(
        children, offline_stack, dsn, tmp_path, "--renewals", "1", "--renew-after", "0"
    )
    assert again.wait(UNCONFIRMED_HOLD_SECONDS + 60) == 0, again.output()
    refused = again.event(events.RenewalFailed)
    assert refused is not None and refused.reason == "RENEWAL_UNCONFIRMED", again.output()
    assert refused.retry_in > 60  # as long as the cloud said, not the 30 s first backoff
    has = again.event(events.HasCredentials)
    assert has is not None and has.cert == creds.certificate_id
    renewed = again.event(events.Renewed)
    assert renewed is not None and renewed.old == creds.certificate_id
    assert status_of(offline_stack, renewed.cert) == "ACTIVE"


def test_a_payload_cannot_shadow_iot_values_nor_repeat_a_key_through_the_broker(
    offline_stack: RunningStack, tmp_path: Path
) -> None:
    from tests.e2e.test_topic_rules import Device

    # GIVEN two devices, A connected to the broker with its own certificate
    victim = Device(offline_stack, tmp_path / "victim")
    victim.close()
    device = Device(offline_stack, tmp_path / "device")
    issued_before = len(stack_certificates(offline_stack))
    try:
        topics = renewal.Topics(device.thing)
        device.subscribe(topics.rejected)
        _key, csr = renewal.new_key_and_csr(device.dsn)
        # WHEN A publishes on its own renew topic a CSR plus B's thing, certificate and client
        # id (were the payload's keys to win over IoT's, A would renew as B) ...
        forged = {
            "csr": csr,
            "thingName": victim.thing,
            "principal": victim.certificate_id,
            "clientId": victim.thing,
        }
        device.publish(topics.renew, json.dumps(forged).encode())
        # THEN the renewal function refuses it, on A's own rejected topic
        refused = json.loads(device.next_on(topics.rejected, timeout=60))
        assert refused["code"] == "MESSAGE_INVALID", refused
        # WHEN A publishes a renewal naming csr twice (a parser could read either)
        device.received.clear()
        twice = b'{"csr": %s, "csr": "x"}' % json.dumps(csr).encode()
        device.publish(topics.renew, twice)
        # THEN it is refused too, and says why
        refused = json.loads(device.next_on(topics.rejected, timeout=60))
        assert refused["code"] == "DUPLICATE_FIELD", refused
    finally:
        device.close()
    # AND nothing was issued or answered for either device, and B's certificate is as it was
    assert len(stack_certificates(offline_stack)) == issued_before
    assert not published(offline_stack, renewal.Topics(victim.thing).rejected)
    assert not published(offline_stack, renewal.Topics(victim.thing).accepted)
    assert not published(offline_stack, topics.accepted)
    assert status_of(offline_stack, victim.certificate_id) == "ACTIVE"


def stack_certificates(stack: RunningStack) -> list[str]:
    pages = stack.client("iot").get_paginator("list_certificates").paginate()
    return [c["certificateId"] for page in pages for c in page["certificates"]]
