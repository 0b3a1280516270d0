"""Expiry rules: a device's expiry state, and how renewal requests are spread (no herd).

The warning window is a share of the configured certificate validity (``ExpiryWarningPercent``
of ``DeviceCertValidityDays``), so it means the same for one-year certificates (about 110 days
at 30 %) as for 7-day short-lived ones (about 50 hours). usecases/expiry.py runs the watch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from provisioning.domain.models import DeviceRecord, DeviceStatus


@dataclass(frozen=True)
class NudgeSpread:
    """How the watch spreads the renewals it asks for (module docstring, "No herd")."""

    seconds: int  # each device asked renews at a random moment of this (renewWithinSeconds)
    per_second: float  # the renewals a run may cause, on average over ``seconds``

    @property
    def per_run(self) -> int:
        """The most devices one run asks to renew."""
        return max(1, int(self.seconds * self.per_second))

    def message(self, not_after: str) -> dict[str, object]:
        """The renew/due payload (the device's side: onboarding_ble.renewal.nudged_delay)."""
        return {"notAfter": not_after, "reason": "EXPIRING", RENEW_WITHIN: self.seconds}


# The name the device reads the spread by (example/onboarding_ble/rules.py, RENEW_WITHIN).
RENEW_WITHIN = "renewWithinSeconds"
# One hour (the template's shortest ExpiryWatchSchedule: a run's renewals are done before the
# next run asks), half a renewal a second: 1,800 devices a run, a tenth of what the renewal
# function's reserved concurrency serves (docs/architecture.md, "Renewal without a herd").
NUDGE_SPREAD = NudgeSpread(seconds=3600, per_second=0.5)


class ExpiryState(enum.StrEnum):
    VALID = "VALID"
    EXPIRING = "EXPIRING"
    EXPIRED = "EXPIRED"
    NONE = "NONE"


@dataclass(frozen=True)
class ExpiryWindow:
    validity_days: int
    warning_percent: int

    @property
    def length(self) -> timedelta:
        return timedelta(days=self.validity_days) * self.warning_percent / 100

    def state_of(self, not_after: str, now: datetime) -> ExpiryState:
        moment = parse_iso(not_after)
        if moment <= now:
            return ExpiryState.EXPIRED
        if moment <= now + self.length:
            return ExpiryState.EXPIRING
        return ExpiryState.VALID


def device_expiry(record: DeviceRecord, window: ExpiryWindow, now: datetime) -> ExpiryState:
    """The expiry state GET /devices/{dsn} shows."""
    if record.status != DeviceStatus.ACTIVE or not record.certificate_id or not record.not_after:
        return ExpiryState.NONE
    return window.state_of(record.not_after, now)


def has_expired(record: DeviceRecord, now: datetime) -> bool:
    """An ACTIVE device whose certificate has run out: provisioning it again is a recovery
    (usecases/provision.py), not a rotation. A revoked or released device is not expired."""
    return device_expiry(record, ExpiryWindow(0, 0), now) == ExpiryState.EXPIRED


def parse_iso(text: str) -> datetime:
    """An ISO-8601 UTC time as the rows store it (``2026-11-29T11:00:00Z``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def renew_due_topic(thing_name: str) -> str:
    return f"things/{thing_name}/certificate/renew/due"
