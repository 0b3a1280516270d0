"""The device's own certificate renewal (example/onboarding_ble/renewal.py), against a fake
cloud that answers CSRs the way the renewal function does: timing, the credential swap that
never loses working credentials, and refusal of answers that fail the trust checks."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import credentials, events, renewal, rules
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
        self.answer: str = "accept"  # accept | reject | silent | foreign | other-dsn | non-ascii
        # the CA that signs, when not the pinned one: an issuing CA under it, whose chain the
        # answer carries as the renewal function's does
        self.issuing: tuple[Any, x509.Certificate] | None = None
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
        if cloud.answer == "throttled":  # the function's AWS calls throttled past retries
            self.deliver(topics.rejected, {"code": "THROTTLED", "msg": "busy"})
            return
        if cloud.answer == "too-soon":
            rejection = {"code": "RENEWAL_TOO_SOON", "msg": "later", "retryAfterSeconds": 0.3}
            self.deliver(topics.rejected, rejection)
            return
        signer = make_ca("Foreign CA") if cloud.answer == "foreign" else cloud.ca
        chain: dict[str, str] = {}
        if cloud.issuing is not None and cloud.answer != "foreign":
            signer = cloud.issuing
            chain["certificateChainPem"] = "".join(
                c.public_bytes(serialization.Encoding.PEM).decode()
                for c in (cloud.issuing[1], cloud.ca[1])
            )
        dsn = "SN-SOMEONE-ELSE" if cloud.answer == "other-dsn" else DSN
        pem = cloud.issue_for(payload["csr"], signer, dsn)
        cert = x509.load_pem_x509_certificate(pem.encode())
        if cloud.answer == "non-ascii":  # no PEM has such a character
            pem = "\u00e9" + pem
        self.deliver(
            topics.accepted,
            {
                "certificatePem": pem,
                "certificateId": cert.fingerprint(hashes.SHA256()).hex(),
                "notAfter": cert.not_valid_after_utc.isoformat(),
                **chain,
            },
        )

    def close(self) -> None:
        self.closed = True


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
    state: Path,
    ca: tuple[Any, x509.Certificate],
    cloud: FakeCloud,
    rng: random.Random | None = None,
    **changes: Any,
) -> renewal.ConnectedDevice:
    candidates = renewal.load(state, [ca[1]], dsn=DSN, thing_prefix="device")
    return renewal.ConnectedDevice.boot(
        state, candidates, settings(ca, **changes), cloud.connect, rng=rng
    )


# --- timing ---------------------------------------------------------------------------------


LIFE = dt.timedelta(days=7)
BORN = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_renewal_moments_cover_the_window_and_nothing_outside_it() -> None:
    # GIVEN 10,000 devices with 7-day certificates issued at the same second
    rng = random.Random(7)
    window = renewal.RENEWAL_WINDOW
    # WHEN each draws its moment
    fractions = [
        renewal.renewal_delay(BORN, BORN + LIFE, BORN, rng) / LIFE.total_seconds()
        for _ in range(10_000)
    ]
    # THEN every moment is inside the window, and they spread over all of it (no lock-step)
    assert window.start <= min(fractions) and max(fractions) <= window.end
    assert min(fractions) < window.start + 0.002 and max(fractions) > window.end - 0.002
    tenths = [0] * 10
    for fraction in fractions:
        tenths[min(9, int((fraction - window.start) / (window.end - window.start) * 10))] += 1
    assert all(800 < count < 1200 for count in tenths), tenths  # uniform: 1,000 each
    # ... and the window ends before the default expiry warning (the last 30 %) begins
    assert window.end <= 0.70


def test_a_device_keeps_its_moment_across_reboots(ca: Any) -> None:
    cert = issue(ca, ec.generate_private_key(ec.SECP256R1()), days=29, dsn=DSN)
    start = cert.not_valid_before_utc
    first = renewal.seconds_until_due(cert, start)
    assert renewal.seconds_until_due(cert, start + dt.timedelta(hours=1)) == first - 3600
    # the demo's flag wins over the lifetime
    assert renewal.seconds_until_due(cert, start, renew_after=5) == 5


def test_a_device_past_its_moment_renews_within_as_long_as_it_was_late() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        seed = rng.random()
        moment = renewal.RENEWAL_WINDOW.moment(BORN, BORN + LIFE, random.Random(seed))
        # GIVEN a device back two hours after its moment
        now = moment + dt.timedelta(hours=2)
        delay = renewal.renewal_delay(BORN, BORN + LIFE, now, random.Random(seed))
        # THEN it renews within the next two hours, not at once for all such devices
        assert 0 <= delay <= 7200
    # ... and one back shortly before expiry renews within half of what is left
    now = BORN + LIFE - dt.timedelta(hours=1)
    assert all(
        renewal.renewal_delay(BORN, BORN + LIFE, now, random.Random(n)) <= 1800 for n in range(200)
    )


def test_a_nudge_is_followed_at_a_random_moment_of_its_spread() -> None:
    rng = random.Random(11)
    delays = [renewal.nudged_delay(3600, rng) for _ in range(5000)]
    assert 0 <= min(delays) < 60 and 3540 < max(delays) <= 3600
    assert 1600 < sum(delays) / len(delays) < 2000  # uniform: 1,800 on average
    # none (an older watch), a negative or an absurd spread: at once, or at most a day
    assert renewal.nudged_delay(0, rng) == 0
    assert renewal.nudged_delay(-5, rng) == 0
    assert renewal.nudged_delay(1e12, rng) <= renewal.MAX_NUDGE_SPREAD


def test_backoff_is_jittered_within_its_bounds_and_resets() -> None:
    # GIVEN 2,000 devices refused at once, each backing off on its own
    first_retries, sequences = [], []
    for n in range(2000):
        backoff = renewal.Backoff(first=30, cap=600, rng=random.Random(n))
        sequence = [backoff.next() for _ in range(8)]
        sequences.append(sequence)
        first_retries.append(sequence[0])
    # THEN every delay is within [first, cap]; the first in [first, 3 x first]
    assert all(30 <= d <= 600 for seq in sequences for d in seq)
    assert all(30 <= d <= 90 for d in first_retries)
    # ... they come back spread out, not together (no 1 s bucket holds more than 5 %)
    buckets: dict[int, int] = {}
    for delay in first_retries:
        buckets[int(delay)] = buckets.get(int(delay), 0) + 1
    assert max(buckets.values()) < 100
    # ... and the delays grow: later retries wait longer on average
    means = [sum(seq[i] for seq in sequences) / len(sequences) for i in range(8)]
    assert means[0] < means[2] < means[5]
    backoff = renewal.Backoff(first=30, cap=600, rng=random.Random(1))
    for _ in range(6):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 90


def test_a_retry_after_is_a_floor_of_the_backoff_within_its_cap() -> None:
    backoff = renewal.Backoff(first=1, cap=100, rng=random.Random(5))
    assert backoff.next(floor=50) >= 50
    assert backoff.next(floor=1e9) == 100
    assert backoff.next(floor=0) <= 100


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


def test_a_renewal_from_an_issuing_ca_under_the_pinned_root_keeps_its_chain(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a device that pins the root, and a cloud whose issuing CA (under that root) signs
    cloud = FakeCloud(ca)
    cloud.issuing = make_ca("Fleet Issuing CA 2", issuer=ca, path_length=0)
    device = connected(tmp_path, ca, cloud)

    # WHEN it renews
    new = device.renew()

    # THEN the new certificate is accepted on the path through the answer's issuing CA, and
    # that CA is kept beside it: the promoted set passes the boot check with the root alone
    assert cloud.connections == [provisioned.certificate_id, new.certificate_id]
    stored = x509.load_pem_x509_certificates((tmp_path / credentials.CHAIN_FILE).read_bytes())
    assert stored == [cloud.issuing[1]]
    loaded = renewal.load(tmp_path, [ca[1]], dsn=DSN)
    assert [c.certificate_id for c in loaded] == [new.certificate_id]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("reject", "CERTIFICATE_REVOKED"),
        ("silent", "TIMEOUT"),
        ("foreign", "UNTRUSTED"),
        ("other-dsn", "WRONG_DEVICE"),
        ("non-ascii", "MALFORMED"),
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


def test_refused_renewals_are_retried_after_the_devices_own_jittered_delays(
    tmp_path: Path, ca: Any, provisioned: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a cloud that is throttled, then does not answer, then refuses, then accepts
    cloud = FakeCloud(ca)
    answers = iter(["throttled", "silent", "reject", "accept"])
    asked: list[float] = []

    def next_answer() -> None:
        asked.append(time.monotonic())
        cloud.answer = next(answers)

    cloud.on_answer = next_answer
    device = connected(tmp_path, ca, cloud, random.Random(42), renew_after=0, answer_timeout=0.2)

    # WHEN the device runs until one renewal completed
    capsys.readouterr()
    assert device.run(threading.Event(), renewals=1) == 1

    # THEN each refusal was followed by a delay the device drew (decorrelated jitter from its
    # own random source, within [first, cap]), and it asked again only after that delay
    failed = [e for e in map(events.parse, capsys.readouterr().out.splitlines()) if e]
    failed = [e for e in failed if isinstance(e, events.RenewalFailed)]
    assert [e.reason for e in failed] == ["THROTTLED", "TIMEOUT", "CERTIFICATE_REVOKED"]
    expected = renewal.Backoff(first=0.05, cap=3600, rng=random.Random(42))
    delays = [expected.next() for _ in failed]
    assert [e.retry_in for e in failed] == pytest.approx(delays, rel=1e-3)
    assert all(0.05 <= d <= 0.05 * 3**3 for d in delays)
    assert len(asked) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True))


def test_a_nudge_with_a_spread_renews_at_a_random_moment_of_it_not_at_once(
    tmp_path: Path, ca: Any, provisioned: Credentials, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a device due in weeks, whose draw for a 2 s spread is 0.6 s (30 %)
    class Draw(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a + 0.3 * (b - a)

    cloud = FakeCloud(ca)
    asked: list[float] = []
    cloud.on_answer = lambda: asked.append(time.monotonic())
    device = connected(tmp_path, ca, cloud, Draw())
    assert isinstance(device.link, FakeLink)

    # WHEN the expiry watch asks it to renew within 2 s
    nudged = time.monotonic()
    due = {"notAfter": "x", "reason": "EXPIRING", rules.RENEW_WITHIN: 2}
    device.link.deliver(renewal.Topics(THING).due, due)
    capsys.readouterr()
    assert device.run(threading.Event(), renewals=1) == 1

    # THEN it renewed once, at its drawn moment of the spread, for the nudge's reason
    assert len(asked) == 1 and asked[0] - nudged >= 0.6
    requested = [e for e in map(events.parse, capsys.readouterr().out.splitlines()) if e]
    assert [e.reason for e in requested if isinstance(e, events.RenewalRequested)] == ["DUE"]


def test_a_nudge_does_not_cut_short_the_wait_a_refusal_asked_for(
    tmp_path: Path, ca: Any, provisioned: Credentials
) -> None:
    # GIVEN a cloud that refuses the first request as too soon (retry in 0.3 s) and, at the
    # same time, the expiry watch asking the device to renew at once
    cloud = FakeCloud(ca)
    answers = iter(["too-soon", "accept"])
    asked: list[float] = []

    def next_answer() -> None:
        asked.append(time.monotonic())
        cloud.answer = next(answers)
        link = device.link
        assert isinstance(link, FakeLink)
        link.deliver(renewal.Topics(THING).due, {"notAfter": "x", "reason": "EXPIRING"})

    cloud.on_answer = next_answer
    device = connected(tmp_path, ca, cloud, renew_after=0)

    # WHEN the device runs until one renewal completed
    assert device.run(threading.Event(), renewals=1) == 1

    # THEN the nudge did not make it ask before the cloud's delay had passed
    assert len(asked) == 2 and asked[1] - asked[0] >= 0.3


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
