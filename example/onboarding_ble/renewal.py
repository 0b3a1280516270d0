"""Certificate renewal by the device itself, over MQTT, authenticated by its current certificate.

1. When it is due (``renewal_delay``: a random moment of ``RENEWAL_WINDOW``, 60-70 % of the
   certificate's lifetime; or ``renew_after`` seconds after connecting; or at a random moment
   of the ``renewWithinSeconds`` the cloud gives on ``.../certificate/renew/due``) the device
   makes a fresh EC P-256 key and a CSR; the key stays in memory.
2. It publishes ``{"csr"}`` on ``things/<thing>/certificate/renew`` and waits (bounded) for
   ``.../renew/accepted`` (``{"certificatePem", "certificateId", "notAfter"}``) or
   ``.../renew/rejected`` (``{"code", "msg"}``). An accepted certificate is checked by
   ``trust`` exactly as at provisioning (client-auth path to the pinned CA, this DSN, the new
   key, the same thing); an answer for another key (a stale one) is ignored.
3. The new key and certificate are stored complete in ``<state>/next/`` (``device.json`` last);
   the working credentials in ``<state>/`` are untouched.
4. The device reconnects with the new certificate and publishes ``.../renew/confirm``
   (``{"certificateId"}``); the cloud then retires the old one.
5. Then ``next/`` is promoted over the old credentials (key, certificate, ``device.json`` last)
   and removed.

At every moment one complete, valid set of credentials is on disk: ``load`` prefers ``next/``
(newer) and falls back to the old set, so a device that dies at any step boots with working
credentials. A rejected, unanswered or untrusted renewal keeps the old credentials and is
retried after a jittered backoff (``Backoff``), and no sooner than a rejection's
``retryAfterSeconds`` (``RENEWAL_TOO_SOON``, ``RENEWAL_UNCONFIRMED``: "retry later"); a new
certificate the broker refuses is dropped and the device goes back to the old one.

No herd: a fleet onboarded together must not renew together (the renewal function runs a few
at once; docs/architecture.md, "Renewal without a herd"). So the moment in the window is
random (drawn from the certificate's fingerprint, so a reboot keeps it), a device that comes
back after its moment spreads its late renewal over about as long as it was late, the
cloud's nudges name a spread rather than "now", and every retry waits a random time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from onboarding_ble import credentials, events, rules, trust
from onboarding_ble.credentials import Answer, Credentials
from onboarding_ble.trust import TrustError

logger = logging.getLogger("device.renewal")

NEXT_DIR = "next"  # the new credentials, complete, until promoted
# Seconds to wait for accepted/rejected: as long as the renewal function may still answer (its
# MaximumEventAgeInSeconds, 180, plus its Timeout, 25), so a device never gives up on a request
# that is only queued and sends a second one (tests/unit/test_renewal_herd.py checks it).
ANSWER_TIMEOUT = 210.0
# The longest spread of a nudge (renew/due's renewWithinSeconds) the device honours.
MAX_NUDGE_SPREAD = 86400.0
MAX_PAYLOAD = 64 * 1024  # an answer bigger than this is not a certificate


@dataclass(frozen=True)
class Topics:
    """The renewal topics of one thing (inside the device policy's things/<thing>/*)."""

    thing: str

    @property
    def renew(self) -> str:
        return rules.renew_topic(self.thing)

    @property
    def accepted(self) -> str:
        return rules.renew_topic(self.thing, rules.RENEW_ACCEPTED)

    @property
    def rejected(self) -> str:
        return rules.renew_topic(self.thing, rules.RENEW_REJECTED)

    @property
    def confirm(self) -> str:
        return rules.renew_topic(self.thing, rules.RENEW_CONFIRM)

    @property
    def due(self) -> str:
        return rules.renew_topic(self.thing, rules.RENEW_DUE)


@dataclass(frozen=True)
class RenewalWindow:
    """The share of a certificate's lifetime within which a device renews on its own."""

    start: float
    end: float

    def moment(
        self, not_before: dt.datetime, not_after: dt.datetime, rng: random.Random
    ) -> dt.datetime:
        """A random moment of the window, uniform over it."""
        return not_before + (not_after - not_before) * rng.uniform(self.start, self.end)


# Renew at a random moment between 60 % and 70 % of the lifetime: never in lock-step with the
# devices onboarded alongside, and done (retries included) before the expiry watch's default
# warning window (ExpiryWarningPercent 30: the last 30 %) would nudge the device.
RENEWAL_WINDOW = RenewalWindow(0.60, 0.70)


def schedule_rng(certificate: x509.Certificate) -> random.Random:
    """The device's draw for one certificate: seeded by its fingerprint, so a device that
    reboots keeps its moment (a fresh draw at each boot would pull renewals earlier)."""
    return random.Random(certificate.fingerprint(hashes.SHA256()))  # noqa: S311 - timing


def renewal_delay(
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    rng: random.Random,
    window: RenewalWindow = RENEWAL_WINDOW,
) -> float:
    """Seconds from ``now`` until the device renews on its own: at its moment of ``window``.

    A device already past its moment (offline through it, or booted after it) renews at a
    random moment of the next ``min(lateness, time left / 2)``: a fleet that comes back from
    an outage spreads its late renewals over about as long as it was away, instead of renewing
    all at once, and still renews well before the certificate expires.
    """
    moment = window.moment(not_before, not_after, rng)
    if moment > now:
        return (moment - now).total_seconds()
    lateness = (now - moment).total_seconds()
    left = max(0.0, (not_after - now).total_seconds())
    return rng.uniform(0.0, min(lateness, left / 2))


def seconds_until_due(
    certificate: x509.Certificate, now: dt.datetime, renew_after: float | None = None
) -> float:
    """Seconds from ``now`` until the renewal; ``renew_after`` (the demo's flag) overrides."""
    if renew_after is not None:
        return max(0.0, renew_after)
    return renewal_delay(
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
        now,
        schedule_rng(certificate),
    )


def nudged_delay(renew_within: float, rng: random.Random) -> float:
    """Seconds until a renewal the cloud asked for (renew/due): a random moment of the
    ``renewWithinSeconds`` it gave (the expiry watch's spread; 0 or none: at once), at most
    ``MAX_NUDGE_SPREAD``."""
    return rng.uniform(0.0, min(max(renew_within, 0.0), MAX_NUDGE_SPREAD))


@dataclass
class Backoff:
    """Decorrelated jitter between failed renewals: each delay is random in [first, 3 x the
    last one], never above ``cap``; a refusal's ``retryAfterSeconds`` is a floor. Devices
    refused together (throttled, or unanswered because the function was busy) so come back
    spread out instead of together."""

    first: float = 30.0
    cap: float = 3600.0
    rng: random.Random = field(default_factory=random.Random)
    _last: float = 0.0

    def next(self, floor: float = 0.0) -> float:
        low = min(self.first, self.cap)
        high = min(self.cap, 3 * (self._last or self.first))
        self._last = self.rng.uniform(low, max(low, high))
        return max(self._last, min(floor, self.cap))

    def reset(self) -> None:
        self._last = 0.0


class RenewalFailed(Exception):
    """A renewal that did not complete; ``reason`` is a rejected code, TIMEOUT, a trust
    refusal or CONNECT. The old credentials stay."""

    def __init__(self, reason: str, message: str = "", retry_after: float = 0.0) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.retry_after = retry_after  # the cloud's "not before" for the next attempt


def new_key_and_csr(dsn: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh EC P-256 key and a CSR for it (the service sets the subject; this one is a hint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dsn)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- storage -------------------------------------------------------------------------------


def load(
    state_dir: Path,
    cas: list[x509.Certificate],
    *,
    dsn: str,
    thing_prefix: str | None = None,
    now: dt.datetime | None = None,
) -> list[Credentials]:
    """The valid credential sets on disk, newest first: ``next/`` (a renewal not yet promoted),
    then the working set. Empty when there are none (the device must be provisioned)."""
    found = []
    for directory in (state_dir / NEXT_DIR, state_dir):
        creds = credentials.load_valid(directory, cas, now, dsn=dsn, thing_prefix=thing_prefix)
        if creds is not None:
            found.append(creds)
    return found


def store_next(state_dir: Path, answer: Answer) -> Credentials:
    """Store the new credentials complete in ``next/``, beside the working ones."""
    return credentials.store(state_dir / NEXT_DIR, answer)


def promote(state_dir: Path) -> None:
    """Make ``next/`` the working credentials, then remove it. A death anywhere here leaves
    ``next/`` complete (the old set is overwritten in store order: device.json removed first,
    written last), so ``load`` still finds a valid set."""
    source = state_dir / NEXT_DIR
    meta = (source / credentials.META_FILE).read_bytes()
    key = (source / credentials.KEY_FILE).read_bytes()
    cert = (source / credentials.CERT_FILE).read_bytes()
    chain = credentials.stored_chain(source)
    (state_dir / credentials.META_FILE).unlink(missing_ok=True)
    credentials._write_private(state_dir, credentials.KEY_FILE, key)
    credentials._write_private(state_dir, credentials.CERT_FILE, cert)
    credentials._write_private(state_dir, credentials.CHAIN_FILE, chain)
    credentials._write_private(state_dir, credentials.META_FILE, meta)
    discard_next(state_dir)


def discard_next(state_dir: Path) -> None:
    shutil.rmtree(state_dir / NEXT_DIR, ignore_errors=True)


def check_answer(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    dsn: str,
    thing_name: str,
    cas: list[x509.Certificate],
    thing_prefix: str | None,
    iot_endpoint: str,
    now: dt.datetime | None = None,
) -> Answer:
    """An accepted answer checked as a provisioning answer is (``trust``); TrustError if not."""
    try:
        body = json.loads(payload)
        cert_pem = body["certificatePem"]
        if not isinstance(cert_pem, str):
            raise TypeError("certificatePem")
        chain_pem = credentials.chain_of(body)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise TrustError(trust.Refusal.MALFORMED, "not a renewal answer") from exc
    anchors = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas)
    trusted = trust.verify_device_certificate(
        cert_pem, anchors, dsn, key, chain_pem=chain_pem, thing_prefix=thing_prefix, now=now
    )
    if trusted.thing_name != thing_name:
        raise TrustError(trust.Refusal.WRONG_DEVICE, "the new certificate names another thing")
    return Answer(
        certificate=trusted.certificate,
        private_key_pem=private_pem(key),
        thing_name=trusted.thing_name,
        certificate_id=trusted.certificate_id,
        iot_endpoint=iot_endpoint,
        intermediates=credentials.intermediates_of(trusted),
    )


# --- the connected device --------------------------------------------------------------------


class Link(Protocol):
    """One MQTT connection (the device's: awscrt; tests': a fake)."""

    def subscribe(self, topic_filter: str, callback: Callable[[str, bytes], None]) -> None: ...

    def publish(self, topic: str, payload: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


Connector = Callable[[Credentials], Link]


@dataclass(frozen=True)
class RenewalSettings:
    """What the device knows about renewing (firmware and the command line)."""

    dsn: str
    cas: tuple[x509.Certificate, ...]
    iot_endpoint: str
    thing_prefix: str | None = None
    renew_after: float | None = None  # seconds after connecting; None: RENEWAL_WINDOW
    answer_timeout: float = ANSWER_TIMEOUT
    backoff_first: float = 30.0
    backoff_cap: float = 3600.0


class ConnectedDevice:
    """The device once connected: renews when due or asked, keeps one working credential set.

    ``connect`` opens a link with given credentials; ``run`` returns after ``renewals``
    completed renewals (None: until ``stop`` is set).
    """

    def __init__(
        self,
        state_dir: Path,
        creds: Credentials,
        settings: RenewalSettings,
        connect: Connector,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.creds = creds
        self.settings = settings
        self._connect = connect
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._answers: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._lock = threading.Lock()
        self._nudged_at: float | None = None  # when the cloud's renew/due asks to renew (clock)
        self.backoff = Backoff(settings.backoff_first, settings.backoff_cap, self._rng)
        self.link: Link | None = None

    # -- the link --

    def _on_message(self, topic: str, payload: bytes) -> None:
        topics = Topics(self.creds.thing_name)
        if topic == topics.due and len(payload) <= MAX_PAYLOAD:
            at = self._clock() + nudged_delay(_renew_within(payload), self._rng)
            with self._lock:  # the sooner of two nudges
                self._nudged_at = at if self._nudged_at is None else min(self._nudged_at, at)
        elif topic in (topics.accepted, topics.rejected) and len(payload) <= MAX_PAYLOAD:
            self._answers.put((topic, payload))

    def open(self, creds: Credentials) -> Link:
        link = self._connect(creds)
        topics = Topics(creds.thing_name)
        for topic_filter in (topics.accepted, topics.rejected, topics.due):
            link.subscribe(topic_filter, self._on_message)
        return link

    def connect(self) -> None:
        self.link = self.open(self.creds)

    @classmethod
    def boot(
        cls,
        state_dir: Path,
        candidates: list[Credentials],
        settings: RenewalSettings,
        connect: Connector,
        **options: Any,
    ) -> ConnectedDevice:
        """Connect with the newest credentials ``load`` found. A renewal that died after
        storing ``next/`` is finished (confirm, promote); if the broker refuses the new
        certificate, ``next/`` is dropped and the old set used."""
        newest = candidates[0]
        device = cls(state_dir, newest, settings, connect, **options)
        if newest.directory != state_dir:
            try:
                device.connect()
            except Exception as exc:
                logger.warning("the stored new certificate was refused: %s", type(exc).__name__)
                discard_next(state_dir)
                if len(candidates) < 2:
                    raise
                device.creds = candidates[1]
            else:
                device._finish(candidates[1] if len(candidates) > 1 else newest)
                return device
        device.connect()
        return device

    def _finish(self, old: Credentials) -> None:
        """Connected with ``next/``: confirm it, then promote it over the old set."""
        assert self.link is not None
        new = self.creds
        self.link.publish(Topics(new.thing_name).confirm, {"certificateId": new.certificate_id})
        promote(self.state_dir)
        self.creds = Credentials(
            self.state_dir, new.thing_name, new.certificate_id, new.iot_endpoint, new.not_after
        )
        events.emit(
            events.Renewed(new.thing_name, old.certificate_id, new.certificate_id, new.not_after)
        )

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    # -- one renewal --

    def _certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.creds.cert_path.read_bytes())

    def renew(self, reason: str = "SCHEDULED") -> Credentials:
        """One renewal (steps 1-5 of the module docstring); RenewalFailed if it did not
        complete, with the old credentials still working and connected."""
        assert self.link is not None, "connect first"
        settings = self.settings
        topics = Topics(self.creds.thing_name)
        key, csr = new_key_and_csr(settings.dsn)
        while not self._answers.empty():  # answers to an earlier request
            self._answers.get_nowait()
        self.link.publish(topics.renew, {"csr": csr})
        events.emit(
            events.RenewalRequested(self.creds.thing_name, self.creds.certificate_id, reason)
        )
        answer = self._wait_for_answer(topics, key)
        new = store_next(self.state_dir, answer)
        old, old_link = self.creds, self.link
        old_link.close()  # one connection per client id, as IoT Core allows
        self.link = None
        try:
            self.link = self.open(new)
        except Exception as exc:
            logger.warning("the new certificate was refused: %s", type(exc).__name__)
            discard_next(self.state_dir)
            self.link = self.open(old)
            raise RenewalFailed("CONNECT", type(exc).__name__) from exc
        self.creds = new
        self._finish(old)
        return self.creds

    def _wait_for_answer(self, topics: Topics, key: ec.EllipticCurvePrivateKey) -> Answer:
        deadline = self._clock() + self.settings.answer_timeout
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise RenewalFailed("TIMEOUT", "no answer to the renewal request")
            try:
                topic, payload = self._answers.get(timeout=remaining)
            except queue.Empty:
                continue
            if topic == topics.rejected:
                raise RenewalFailed(
                    _rejected_code(payload), retry_after=_retry_after(payload, self.backoff.cap)
                )
            try:
                return check_answer(
                    payload,
                    key,
                    dsn=self.settings.dsn,
                    thing_name=self.creds.thing_name,
                    cas=list(self.settings.cas),
                    thing_prefix=self.settings.thing_prefix,
                    iot_endpoint=self.settings.iot_endpoint,
                )
            except TrustError as exc:
                if exc.reason is trust.Refusal.KEY_MISMATCH:
                    continue  # an answer to an earlier request (another key): not ours
                raise RenewalFailed(exc.reason.name, str(exc)) from exc

    # -- the loop --

    def run(self, stop: threading.Event, renewals: int | None = None) -> int:
        """Renew when due or asked, until ``renewals`` renewals completed or ``stop`` is set;
        the number of completed renewals."""
        done = 0
        delay = seconds_until_due(
            self._certificate(), dt.datetime.now(dt.UTC), self.settings.renew_after
        )
        retrying = False
        while not stop.is_set() and (renewals is None or done < renewals):
            reason = self._wait(self._clock() + delay, stop, nudgeable=not retrying)
            if reason is None:
                break
            try:
                self.renew(reason)
            except RenewalFailed as failure:
                retrying = True
                delay = self.backoff.next(floor=failure.retry_after)
                logger.warning("renewal failed (%s); retry in %g s", failure.reason, delay)
                events.emit(events.RenewalFailed(self.creds.thing_name, delay, failure.reason))
            else:
                done += 1
                retrying = False
                self.backoff.reset()
                delay = seconds_until_due(self._certificate(), dt.datetime.now(dt.UTC))
        return done

    def _wait(self, wake: float, stop: threading.Event, *, nudgeable: bool) -> str | None:
        """Wait until ``wake`` or, unless retrying (a backoff and a retryAfter are floors),
        the moment a nudge named; the renewal's reason, or None once ``stop`` is set."""
        while not stop.is_set():
            with self._lock:
                nudged = self._nudged_at if nudgeable else None
            target = wake if nudged is None else min(wake, nudged)
            if self._clock() >= target:
                with self._lock:
                    self._nudged_at = None  # this renewal answers every nudge so far
                return "DUE" if nudged is not None and nudged <= wake else "SCHEDULED"
            stop.wait(min(0.2, max(0.0, target - self._clock())))
        return None


def _retry_after(payload: bytes, cap: float) -> float:
    """A rejection's ``retryAfterSeconds``, within [0, cap]; 0 when absent or not a number."""
    try:
        value = json.loads(payload).get("retryAfterSeconds")
    except (ValueError, AttributeError, RecursionError):
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0.0
    return float(min(max(value, 0), cap))


def _renew_within(payload: bytes) -> float:
    """A nudge's ``renewWithinSeconds`` (the expiry watch's spread); 0 (at once) when absent
    or not a number, as from a watch that gives none."""
    try:
        value = json.loads(payload).get(rules.RENEW_WITHIN)
    except (ValueError, AttributeError, RecursionError):
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0.0
    return float(min(max(value, 0), MAX_NUDGE_SPREAD))


def _rejected_code(payload: bytes) -> str:
    try:
        code = json.loads(payload).get("code")
    except (ValueError, AttributeError, RecursionError):
        return "REJECTED"
    text = str(code) if code else "REJECTED"
    return "".join(c for c in text if c.isalnum() or c == "_")[:64] or "REJECTED"
