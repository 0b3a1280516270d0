"""The device's own certificate renewal (example/onboarding_ble/renewal.py), against a fake
cloud that answers CSRs the way the renewal function does: timing, the credential swap that
never loses working credentials, and refusal of answers that fail the trust checks."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import credentials, renewal
from onboarding_ble.credentials import Answer, Credentials
from tests.support.device_answers import issue, make_ca

DSN = "SN-RENEW-0001"
THING = f"device_{DSN}"


class Died(BaseException):
    """The device process dying at this point (no `except Exception` clean-up runs)."""


class FakeCloud:
    """The broker plus the renewal function: answers each CSR on .../renew as configured."""

    def __init__(self, ca: tuple[Any, x509.Certificate]) -> None:
        self.ca = ca
        self.answer: str = "accept"  # accept | reject | silent | foreign | other-dsn
        self.refused: set[str] = set()  # certificate ids the broker refuses
        self.published: list[tuple[str, str, dict[str, Any]]] = []  # (cert id, topic, payload)
        self.connections: list[str] = []
        self.on_answer: Callable[[], None] | None = None

    def connect(self, creds: Credentials) -> FakeLink:
        if creds.certificate_id in self.refused:
            raise ConnectionRefusedError("certificate not ACTIVE")
        self.connections.append(creds.certificate_id)
        return FakeLink(self, creds)

    def issue_for(self, csr_pem: str, ca: Any, dsn: str = DSN) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid

        class _Key:  # issue() wants an object with public_key()
            def public_key(self) -> Any:
                return csr.public_key()

        cert = issue(ca, _Key(), days=30, dsn=dsn)
        return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeLink:
    def __init__(self, cloud: FakeCloud, creds: Credentials) -> None:
        self.cloud, self.creds = cloud, creds
        self.handlers: dict[str, Callable[[str, bytes], None]] = {}
        self.closed = False

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes], None]) -> None:
        self.handlers[topic_filter] = callback

    def deliver(self, topic: str, payload: dict[str, Any]) -> None:
        self.handlers[topic](topic, json.dumps(payload).encode())

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        assert not self.closed
        self.cloud.published.append((self.creds.certificate_id, topic, payload))
        topics = renewal.Topics(self.creds.thing_name)
        if topic != topics.renew:
            return
        cloud = self.cloud
        if cloud.on_answer is not None:
            cloud.on_answer()
        if cloud.answer == "silent":
            return
        if cloud.answer == "reject":
            self.deliver(topics.rejected, {"code": "CERTIFICATE_REVOKED", "msg": "no"})
            return
        if cloud.answer == "too-soon":
            rejection = {"code": "RENEWAL_TOO_SOON", "msg": "later", "retryAfterSeconds": 0.3}
            self.deliver(topics.rejected, rejection)
            return
        signer = make_ca("Foreign CA") if cloud.answer == "foreign" else cloud.ca
        dsn = "SN-SOMEONE-ELSE" if cloud.answer == "other-dsn" else DSN
        pem = cloud.issue_for(payload["csr"], signer, dsn)
        cert = x509.load_pem_x509_certificate(pem.encode())
        self.deliver(
            topics.accepted,
            {
                "certificatePem": pem,
                "certificateId": cert.fingerprint(hashes.SHA256()).hex(),
                "notAfter": cert.not_valid_after_utc.isoformat(),
            },
        )

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def ca() -> tuple[Any, x509.Certificate]:
    return make_ca()


@pytest.fixture
def provisioned(tmp_path: Path, ca: tuple[Any, x509.Certificate]) -> Credentials:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, days=30, dsn=DSN)
    answer = Answer(
        certificate=cert,
        private_key_pem=renewal.private_pem(key),
        thing_name=THING,
        certificate_id=cert.fingerprint(hashes.SHA256()).hex(),
        iot_endpoint="127.0.0.1:8883",
    )
    return credentials.store(tmp_path, answer)


def settings(ca: tuple[Any, x509.Certificate], **changes: Any) -> renewal.RenewalSettings:
    values: dict[str, Any] = {
        "dsn": DSN,
        "cas": (ca[1],),
        "iot_endpoint": "127.0.0.1:8883",
        "thing_prefix": "device",
        "answer_timeout": 0.5,
        "backoff_first": 0.05,
    }
    values.update(changes)
    return renewal.RenewalSettings(**values)


def connected(
    state: Path, ca: tuple[Any, x509.Certificate], cloud: FakeCloud, **changes: Any
) -> renewal.ConnectedDevice:
    candidates = renewal.load(state, [ca[1]], dsn=DSN, thing_prefix="device")
    return renewal.ConnectedDevice.boot(state, candidates, settings(ca, **changes), cloud.connect)


# --- timing ---------------------------------------------------------------------------------


def test_renewal_is_due_at_two_thirds_of_the_lifetime(ca: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, days=29, dsn=DSN)  # not_before is a day back: 30 days of life
    start = cert.not_valid_before_utc
    assert renewal.due_at(cert) == start + dt.timedelta(days=20)
    assert renewal.seconds_until_due(cert, start + dt.timedelta(days=19)) == 86400
    assert renewal.seconds_until_due(cert, start + dt.timedelta(days=25)) == 0
    # the demo's flag wins over the lifetime
    assert renewal.seconds_until_due(cert, start, renew_after=5) == 5


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = renewal.Backoff(first=30, cap=100)
    assert [backoff.next() for _ in range(4)] == [30, 60, 100, 100]
    backoff.reset()
    assert backoff.next() == 30


# --- a renewal -------------------------------------------------------------------------------


def test_a_renewal_swaps_to_the_new_certificate_and_confirms_it(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a connected device and a cloud that accepts its CSR
    cloud = FakeCloud(ca)
    device = connected(tmp_path, ca, cloud)
    old_key = provisioned.key_path.read_bytes()

    # WHEN it renews
    new = device.renew()

    # THEN it holds a new key and certificate in the same place, and no pending set
    assert new.certificate_id != provisioned.certificate_id
    assert provisioned.key_path.read_bytes() != old_key
    assert not (tmp_path / renewal.NEXT_DIR).exists()
    loaded = renewal.load(tmp_path, [ca[1]], dsn=DSN)
    assert [c.certificate_id for c in loaded] == [new.certificate_id]
    # ... it asked with its old certificate, then connected and confirmed with the new one
    topics = renewal.Topics(THING)
    assert (provisioned.certificate_id, topics.renew) == cloud.published[0][:2]
    assert cloud.published[-1] == (
        new.certificate_id,
        topics.confirm,
        {"certificateId": new.certificate_id},
    )
    assert cloud.connections == [provisioned.certificate_id, new.certificate_id]
    # ... and the CSR carried a P-256 key the device made (never the old one)
    csr = x509.load_pem_x509_csr(cloud.published[0][2]["csr"].encode())
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("reject", "CERTIFICATE_REVOKED"),
        ("silent", "TIMEOUT"),
        ("foreign", "UNTRUSTED"),
        ("other-dsn", "WRONG_DEVICE"),
    ],
)
def test_a_failed_renewal_keeps_the_working_credentials(
    tmp_path: Path, ca: Any, provisioned: Credentials, answer: str, reason: str
) -> None:
    # GIVEN a cloud that rejects, never answers, or sends a certificate the device must refuse
    cloud = FakeCloud(ca)
    cloud.answer = answer
    device = connected(tmp_path, ca, cloud)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    # WHEN the device renews, THEN the renewal fails with the reason
    with pytest.raises(renewal.RenewalFailed) as failed:
        device.renew()
    assert failed.value.reason == reason

    # AND its credentials on disk are exactly the old ones, and it is still connected with them
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not (tmp_path / renewal.NEXT_DIR).exists()
    assert device.creds.certificate_id == provisioned.certificate_id
    assert device.link is not None


def test_a_new_certificate_the_broker_refuses_falls_back_to_the_old_one(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    cloud = FakeCloud(ca)
    device = connected(tmp_path, ca, cloud)
    original = cloud.connect

    def refuse_new(creds: Credentials) -> FakeLink:
        if creds.certificate_id != provisioned.certificate_id:
            raise ConnectionRefusedError("not ACTIVE")
        return original(creds)

    device._connect = refuse_new
    with pytest.raises(renewal.RenewalFailed, match="CONNECT"):
        device.renew()
    assert device.creds.certificate_id == provisioned.certificate_id
    assert renewal.load(tmp_path, [ca[1]], dsn=DSN)[0].certificate_id == (
        provisioned.certificate_id
    )


def test_failed_renewals_are_retried_with_backoff_until_one_succeeds(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a cloud that rejects the first two requests
    cloud = FakeCloud(ca)
    cloud.answer = "reject"
    answers = iter(["reject", "reject", "accept"])

    def next_answer() -> None:
        cloud.answer = next(answers)

    cloud.on_answer = next_answer
    device = connected(tmp_path, ca, cloud, renew_after=0)

    # WHEN the device runs until one renewal completed
    done = device.run(threading.Event(), renewals=1)

    # THEN it asked three times and holds the renewed certificate
    assert done == 1
    requests = [p for p in cloud.published if p[1].endswith("/certificate/renew")]
    assert len(requests) == 3
    assert device.creds.certificate_id != provisioned.certificate_id


def test_a_renewal_refused_as_too_soon_is_retried_no_sooner_than_the_cloud_says(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a cloud that refuses the first request as too soon, retry in 0.3 s (backoff: 0.05)
    cloud = FakeCloud(ca)
    answers = iter(["too-soon", "accept"])
    asked: list[float] = []

    def next_answer() -> None:
        asked.append(time.monotonic())
        cloud.answer = next(answers)

    cloud.on_answer = next_answer
    device = connected(tmp_path, ca, cloud, renew_after=0)

    # WHEN the device runs until one renewal completed
    assert device.run(threading.Event(), renewals=1) == 1

    # THEN it asked again only once the cloud's delay had passed, and renewed then
    assert len(asked) == 2 and asked[1] - asked[0] >= 0.3
    assert device.creds.certificate_id != provisioned.certificate_id


def test_renew_due_from_the_cloud_starts_a_renewal_at_once(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    cloud = FakeCloud(ca)
    device = connected(tmp_path, ca, cloud)  # due in weeks
    assert isinstance(device.link, FakeLink)
    device.link.deliver(renewal.Topics(THING).due, {"notAfter": "x", "reason": "EXPIRING"})
    assert device.run(threading.Event(), renewals=1) == 1
    assert device.creds.certificate_id != provisioned.certificate_id


# --- dying half-way --------------------------------------------------------------------------


def test_a_device_killed_before_storing_the_answer_boots_with_the_old_credentials(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a device that dies after publishing its CSR, before the answer is stored
    cloud = FakeCloud(ca)

    def die() -> None:
        raise Died

    cloud.on_answer = die
    device = connected(tmp_path, ca, cloud)
    with pytest.raises(Died):
        device.renew()

    # WHEN it boots again, THEN it connects with its old, working credentials
    cloud.on_answer = None
    again = connected(tmp_path, ca, cloud)
    assert again.creds.certificate_id == provisioned.certificate_id
    # AND renews successfully
    assert again.renew().certificate_id != provisioned.certificate_id


@pytest.mark.parametrize("step", range(3))
def test_a_death_during_the_swap_leaves_a_working_set(
    tmp_path: Path, ca: Any, provisioned: Credentials, step: int, monkeypatch: Any
) -> None:
    # GIVEN a renewal whose new credentials are stored in next/, dying at write `step` of the
    # promotion over the old set (key, certificate, device.json; device.json unlinked first)
    cloud = FakeCloud(ca)
    device = connected(tmp_path, ca, cloud)
    writes = {"count": 0}
    real_write = credentials._write_private

    def dying_write(directory: Path, name: str, data: bytes) -> None:
        if directory == tmp_path:
            if writes["count"] == step:
                raise Died
            writes["count"] += 1
        real_write(directory, name, data)

    monkeypatch.setattr(credentials, "_write_private", dying_write)
    with pytest.raises(Died):
        device.renew()
    monkeypatch.setattr(credentials, "_write_private", real_write)
    new_id = cloud.published[-1][2]["certificateId"]

    # WHEN the device boots again
    loaded = renewal.load(tmp_path, [ca[1]], dsn=DSN, thing_prefix="device")
    # THEN the new set is found first (complete in next/), and booting finishes the swap
    assert loaded[0].certificate_id == new_id
    again = connected(tmp_path, ca, cloud)
    assert again.creds.certificate_id == new_id
    assert not (tmp_path / renewal.NEXT_DIR).exists()
    assert [c.certificate_id for c in renewal.load(tmp_path, [ca[1]], dsn=DSN)] == [new_id]
    assert cloud.published[-1][1] == renewal.Topics(THING).confirm
