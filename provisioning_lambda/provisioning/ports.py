"""What the domain needs from AWS, as ports the adapters implement, and the bundle of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from provisioning.config import Settings
from provisioning.domain.attestation import AllowlistEntry
from provisioning.domain.budget import Budget
from provisioning.domain.challenge import Consumed
from provisioning.domain.expiry import NUDGE_SPREAD, ExpiryWindow, NudgeSpread
from provisioning.domain.models import (
    AuditEvent,
    CertificateNames,
    CertificateRef,
    CommitGuard,
    DeviceRecord,
    ExpiringPage,
    Intent,
    IssuedCertificate,
    RegisteredCertificate,
    Release,
)

EXPIRY_PAGE_SIZE = 100  # devices a page of the expiry index holds


class PcaPort(Protocol):
    def issue(
        self,
        csr_pem: bytes,
        validity_days: int,
        idempotency_token: str,
        names: CertificateNames,
    ) -> str: ...
    def fetch(self, certificate_arn: str) -> IssuedCertificate | None: ...
    def revoke(self, issuer_arn: str, serial_hex: str, reason: str) -> None: ...
    def valid_until(self) -> datetime: ...
    def root_valid_until(self) -> datetime: ...


class IotPort(Protocol):
    @property
    def data_endpoint(self) -> str: ...
    def certificate_arn(self, certificate_id: str) -> str: ...
    def status(self, certificate_id: str) -> str: ...
    def ensure_thing(self, thing_name: str) -> None: ...
    def register(self, certificate_pem: str, ca_pem: str) -> RegisteredCertificate: ...
    def attach_policy(self, certificate_arn: str) -> None: ...
    def attach_thing(self, thing_name: str, certificate_arn: str) -> None: ...
    def set_status(self, certificate_id: str, status: str) -> None: ...
    def detach(self, thing_name: str, certificate_arn: str) -> None: ...
    def remove_from_group(self, thing_name: str) -> None: ...


class PublisherPort(Protocol):
    def publish(self, topic: str, payload: Mapping[str, Any]) -> None: ...


class ConnectionsPort(Protocol):
    def disconnect(self, client_id: str) -> None:
        """End the client's MQTT session now, with a clean session; done when none is open."""


class StorePort(Protocol):
    def claim(
        self,
        dsn: str,
        owner_check: str | None,
        new_owner: str,
        request_id: str,
        now: int,
        lease_until: int,
        must_exist: bool = False,
    ) -> DeviceRecord | None: ...
    def get(self, dsn: str) -> DeviceRecord | None: ...
    def record_intent(self, dsn: str, request_id: str, intent: Intent) -> None: ...
    def commit(
        self,
        record: DeviceRecord,
        request_id: str,
        audit: AuditEvent,
        retiring: tuple[CertificateRef, ...] = (),
        superseded: CertificateRef | None = None,
        grace_until: int = 0,
        guards: tuple[CommitGuard, ...] = (),
    ) -> None: ...
    def commit_revocation(
        self,
        dsn: str,
        request_id: str,
        at: str,
        held: tuple[CertificateRef, ...],
    ) -> None: ...
    def retire_superseded(self, dsn: str, request_id: str, ref: CertificateRef) -> None: ...
    def settle(
        self,
        dsn: str,
        request_id: str,
        *,
        release: Release,
        clear_intent: bool = False,
        retired: tuple[CertificateRef, ...] = (),
        audits: tuple[AuditEvent, ...] = (),
        work_left: bool = False,
        now: int = 0,
        wake_at: int = 0,
        attempts: int = 0,
        park: bool = False,
    ) -> None: ...
    def due(self, now: int, limit: int) -> list[str]: ...
    def parked(self, limit: int) -> list[str]: ...


class AllowlistPort(Protocol):
    def get(self, dsn: str) -> AllowlistEntry | None: ...
    def is_certified(self, dsn: str, key_id: str) -> bool: ...
    def certified_key_guard(self, dsn: str, key_id: str, at: str, request_id: str) -> CommitGuard:
        """Record the attested key as certified; refused if it was (ATTESTATION_REPLAYED)."""

    def not_blocked_guard(self, dsn: str) -> CommitGuard:
        """The DSN is not BLOCKED when the commit applies (DEVICE_BLOCKED)."""

    def add(self, dsn: str, public_key_der: bytes, at: str, actor: str) -> str: ...
    def block(self, dsn: str, at: str, actor: str) -> AllowlistEntry: ...


class ChallengePort(Protocol):
    def put_challenge(
        self, dsn: str, challenge: bytes, caller_sub: str, expires_at: int, at: str
    ) -> None: ...
    def consume_challenge(
        self, dsn: str, challenge: bytes, caller_sub: str, now: int, at: str, request_id: str
    ) -> Consumed: ...


class BudgetHolder:
    """The budget of the request in progress, read by the adapters' clients before each
    attempt and retry. A container runs one request at a time."""

    def __init__(self) -> None:
        self._budget: Budget | None = None

    def current(self) -> Budget | None:
        return self._budget

    @contextmanager
    def running(self, budget: Budget) -> Iterator[None]:
        outer, self._budget = self._budget, budget
        try:
            yield
        finally:
            self._budget = outer


@dataclass
class Services:
    settings: Settings
    pca: PcaPort
    iot: IotPort
    store: StorePort
    executor: ThreadPoolExecutor
    budgets: BudgetHolder = field(default_factory=BudgetHolder)
    # Only the functions that answer devices over MQTT (renewal) publish.
    publisher: PublisherPort | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    allowlist: AllowlistPort | None = None
    # IoT's data plane, to end a device's live session when its access ends (lease.py).
    connections: ConnectionsPort | None = None
    # Attestation challenges (challenge.py); kept beside the allowlist, None without it.
    challenges: ChallengePort | None = None


class ExpiryStorePort(Protocol):
    def expiring(
        self,
        shard: int,
        since: str,
        until: str,
        cursor: object = None,
        limit: int = EXPIRY_PAGE_SIZE,
    ) -> ExpiringPage: ...
    def count_expired(
        self, shard: int, before: str, cursor: object = None
    ) -> tuple[int, object]: ...
    def watch_cursors(self, since: str, until: str) -> dict[int, object]: ...
    def save_watch_cursors(self, cursors: dict[int, object]) -> None: ...


class NotifierPort(Protocol):
    def notify(self, subject: str, message: str) -> None: ...


@dataclass
class WatchServices:
    """What one run of the watch needs; the handler builds it once per container."""

    store: ExpiryStorePort
    publisher: PublisherPort
    notifier: NotifierPort
    window: ExpiryWindow
    shards: int
    thing_name: Callable[[str], str]  # DSN -> thing name, for rows that lack one
    executor: Executor
    budgets: BudgetHolder = field(default_factory=BudgetHolder)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    spread: NudgeSpread = NUDGE_SPREAD
    # The issuing CA's end (PcaPort.valid_until); None: not checked.
    issuer_valid_until: Callable[[], datetime] | None = None
    # The root CA's end (PcaPort.root_valid_until); None: not checked.
    root_valid_until: Callable[[], datetime] | None = None
