"""Certificate expiry: a device's expiry state, and the watch that reports and nudges.

The warning window is a share of the configured certificate validity (``ExpiryWarningPercent``
of ``DeviceCertValidityDays``), so it means the same for one-year certificates (about 110 days
at 30 %) as for 7-day short-lived ones (about 50 hours). A certificate is

- ``EXPIRED`` once its notAfter has passed,
- ``EXPIRING`` while its notAfter falls within the window from now,
- ``VALID`` before that; a device whose row names no ACTIVE certificate has ``NONE``.

One run of the watch (scheduled; the function's Timeout bounds it through the Budget):

1. counts the devices whose certificate has already expired (one ``Select=COUNT`` query per
   shard and page, cheap, so it comes first and a run that runs out of time later still
   reports them): they can no longer connect, so they are not asked; they need their owner,
   over BLE;
2. reads, shard by shard and page by page (round robin, soonest expiry first), the devices of
   the sparse ``ExpiryIndex`` whose notAfter is in [now, now + window]: never a table scan;
3. asks each of them to renew: a non-retained QoS 1 message on
   ``things/<thing>/certificate/renew/due``. IoT delivers it to the devices connected (and
   subscribed) now, and to persistent sessions when they come back; a device offline now is
   asked again in a later run. No fleet indexing (connectivity) is needed to find the online
   ones, and nothing retained lingers after the device renewed. At most ``NudgeSpread.per_run``
   devices are asked per run (see "No herd" below);
4. reads the issuing CA's own end (DescribeCertificateAuthority): Private CA signs nothing that
   outlives it, so once fewer than ``DeviceCertValidityDays`` are left of it, every issuance and
   renewal fails. From ``ISSUER_NOTICE`` before that day the run warns. Then the root's end,
   from the issuing CA's chain (GetCertificateAuthorityCertificate): every certificate under
   the root ends with it, and the devices trust only that root, so from ``ROOT_NOTICE`` before
   it the run warns;
5. sends one summary to the operators' topic when it found anything, warns, or could not finish.

Progress across runs: a run that runs out of time while asking keeps, per shard, where it
stopped (the index position after the last page it asked: notAfter and DSN), in one row of
the devices table that is not a device (``WATCH_CURSOR_KEY``, a key no DSN can have). The next
run starts each shard there, not at the soonest expiry again, and a shard whose end a run
reaches starts from the front next time. So devices at the front of the window (offline ones
that never renew) cannot use every run's whole budget: each run goes on further back, and
every device of the window is asked within a few runs however large the fleet. A stored
position that has left the window (its notAfter passed, or beyond the window's end) is
dropped. A run is ``complete`` only when it asked the whole window of every shard (it started
at the front and reached the end) and counted every expired device.

No herd: the renewal function runs only a few renewals at once (its reserved concurrency) and
drops a request that waited longer than its maximum event age, so asking every expiring device
to renew *now* would turn one run into a burst the function drops. Each request therefore
names a spread (``renewWithinSeconds``, ``NUDGE_SPREAD.seconds``: one hour, the shortest
schedule the template allows) and the device renews at a random moment of it; and one run asks
at most ``NUDGE_SPREAD.per_run`` devices (the spread times ``NUDGE_SPREAD.per_second``), so the
renewals the watch causes average at most ``per_second`` a second, and a run's requests are
spent before the next run asks again. A run that reaches that bound stops as a run that runs
out of time does (it keeps its position; it is not ``complete``): the rest are asked by the next
runs. The sizing is in docs/architecture.md ("Renewal without a herd") and ``python -m
bench.herd`` simulates it with these rules.

The watch writes nothing to the device rows: a run that dies, or runs twice, at worst asks a
device to renew twice, which a device handles like one request, and a lost position only makes
the next run start where the previous one started.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provisioning.domain.budget import ATTEMPT_SECONDS, Budget
from provisioning.domain.errors import ProvisioningError
from provisioning.domain.expiry import (
    renew_due_topic,
)
from provisioning.domain.models import ExpiringDevice
from provisioning.lifecycle.lease import iso
from provisioning.observability import logger
from provisioning.ports import EXPIRY_PAGE_SIZE, WatchServices

PAGE_SIZE = EXPIRY_PAGE_SIZE
# Devices listed by name in the operators' summary (the counts cover all of them).
SUMMARY_DEVICES = 20
# Kept for the end of a run: storing where it stopped (one DynamoDB call) and the summary
# (one SNS call, with its retries).
NOTIFY_RESERVE_SECONDS = 2 * ATTEMPT_SECONDS
SAVE_RESERVE_SECONDS = ATTEMPT_SECONDS
# How long before the issuing CA can no longer sign a full-length certificate the operators are
# warned: time to rotate it (docs/runbook-ca-rotation.md).
ISSUER_NOTICE = timedelta(days=90)
# How long before the root CA's end the operators are warned: a new root must reach every
# device, the ones that connect rarely included, before that day (docs/runbook-ca-rotation.md).
ROOT_NOTICE = timedelta(days=365)


@dataclass
class ExpiryReport:
    """What one run found and did (the metrics and the summary)."""

    checked_at: str = ""
    window_ends: str = ""
    expiring: int = 0
    expired: int = 0
    renewals_requested: int = 0
    renewals_failed: int = 0
    complete: bool = True
    resumed: bool = False  # some shard started where an earlier run stopped
    limited: bool = False  # stopped at the most devices a run asks (NudgeSpread.per_run)
    notified: bool = False
    soonest: list[ExpiringDevice] = field(default_factory=list)
    issuer_valid_until: str = ""  # the issuing CA's end ("": not read)
    issuer_last_issue: str = ""  # the last moment a full-length certificate fits in it
    issuer_days_left: float | None = None  # until then (negative: past)
    issuer_due: bool = False  # within ISSUER_NOTICE of it, or past it
    root_valid_until: str = ""  # the root CA's end ("": not read)
    root_days_left: float | None = None  # until then (negative: past)
    root_due: bool = False  # within ROOT_NOTICE of it, or past it

    @property
    def found_anything(self) -> bool:
        due = self.issuer_due or self.root_due
        return bool(self.expiring or self.expired or due or not self.complete)


def watch(services: WatchServices, budget: Budget) -> ExpiryReport:
    now = services.clock()
    report = ExpiryReport(checked_at=iso(now), window_ends=iso(now + services.window.length))
    with services.budgets.running(budget):
        counted = _count_expired(services, budget, report)
        asked = _ask_expiring(services, budget, report)
        report.complete = counted and asked and not report.resumed
        _check_issuer(services, budget, report, now)
        _check_root(services, budget, report, now)
        if report.found_anything:
            report.notified = _notify(services, report)
    logger.info(
        "expiry watch finished",
        extra={
            "expiring": report.expiring,
            "expired": report.expired,
            "renewals_requested": report.renewals_requested,
            "renewals_failed": report.renewals_failed,
            "complete": report.complete,
            "resumed": report.resumed,
            "limited": report.limited,
            "issuer_last_issue": report.issuer_last_issue,
            "issuer_due": report.issuer_due,
            "root_valid_until": report.root_valid_until,
            "root_due": report.root_due,
        },
    )
    return report


def _check_issuer(
    services: WatchServices, budget: Budget, report: ExpiryReport, now: datetime
) -> None:
    """Step 4: when the issuing CA stops fitting a full-length certificate, and whether that is
    within ISSUER_NOTICE (or past)."""
    ends = _read_end(services.issuer_valid_until, budget, "issuing CA unreadable")
    if ends is None:
        return
    last = ends - timedelta(days=services.window.validity_days)
    report.issuer_valid_until, report.issuer_last_issue = iso(ends), iso(last)
    report.issuer_days_left = round((last - now) / timedelta(days=1), 1)
    report.issuer_due = last - now <= ISSUER_NOTICE


def _check_root(
    services: WatchServices, budget: Budget, report: ExpiryReport, now: datetime
) -> None:
    """Step 4, the root: its end, and whether that is within ROOT_NOTICE (or past)."""
    ends = _read_end(services.root_valid_until, budget, "root CA unreadable")
    if ends is None:
        return
    report.root_valid_until = iso(ends)
    report.root_days_left = round((ends - now) / timedelta(days=1), 1)
    report.root_due = ends - now <= ROOT_NOTICE


def _read_end(
    read: Callable[[], datetime] | None, budget: Budget, unreadable: str
) -> datetime | None:
    """A CA's end; None when not checked, out of time, or unreadable (logged: the rest of the
    run stands)."""
    if read is None or not _has_time(budget):
        return None
    try:
        return read()
    except ProvisioningError as error:
        logger.warning(unreadable, extra={"code": error.code})
        return None


def _has_time(budget: Budget) -> bool:
    return budget.allows(ATTEMPT_SECONDS + SAVE_RESERVE_SECONDS + NOTIFY_RESERVE_SECONDS)


def _ask_expiring(services: WatchServices, budget: Budget, report: ExpiryReport) -> bool:
    """Steps 2-3: every shard's pages in turn, from where the last run stopped (else the
    soonest expiry); False when time ran out, the run asked as many devices as it may, or the
    index could not be read."""
    saved = _saved_cursors(services, report)
    cursors: dict[int, object] = {shard: saved.get(shard) for shard in range(services.shards)}
    report.resumed = any(cursor is not None for cursor in cursors.values())
    try:
        while cursors:
            for shard in sorted(cursors):
                if not _has_time(budget):
                    return False
                room = services.spread.per_run - report.expiring
                if room <= 0:
                    report.limited = True
                    return False
                try:
                    page = services.store.expiring(
                        shard,
                        report.checked_at,
                        report.window_ends,
                        cursors[shard],
                        min(PAGE_SIZE, room),
                    )
                except ProvisioningError as error:
                    logger.warning("expiry index unreadable", extra={"code": error.code})
                    return False
                _ask_to_renew(services, page.devices, report)
                if page.cursor is None:
                    del cursors[shard]
                else:
                    cursors[shard] = page.cursor
        return True
    finally:
        # Shards still in ``cursors`` resume there next run; the others start from the front.
        left = {shard: cursor for shard, cursor in cursors.items() if cursor is not None}
        if left != saved:
            _save_cursors(services, left)


def _saved_cursors(services: WatchServices, report: ExpiryReport) -> dict[int, object]:
    try:
        return services.store.watch_cursors(report.checked_at, report.window_ends)
    except ProvisioningError as error:
        logger.warning("expiry watch position unreadable", extra={"code": error.code})
        return {}


def _save_cursors(services: WatchServices, cursors: dict[int, object]) -> None:
    try:
        services.store.save_watch_cursors(cursors)
    except ProvisioningError as error:  # the next run starts where this one started
        logger.warning("expiry watch position not stored", extra={"code": error.code})


def _ask_to_renew(
    services: WatchServices, devices: tuple[ExpiringDevice, ...], report: ExpiryReport
) -> None:
    report.expiring += len(devices)
    report.soonest = sorted([*report.soonest, *devices], key=lambda d: d.not_after)[
        :SUMMARY_DEVICES
    ]
    sent: list[Future[None]] = [
        services.executor.submit(
            services.publisher.publish,
            renew_due_topic(device.thing_name or services.thing_name(device.dsn)),
            services.spread.message(device.not_after),
        )
        for device in devices
    ]
    for future in sent:
        error = future.exception()
        if error is None:
            report.renewals_requested += 1
        else:
            report.renewals_failed += 1
            logger.warning("renewal request not published", extra={"error": type(error).__name__})


def _count_expired(services: WatchServices, budget: Budget, report: ExpiryReport) -> bool:
    """Step 1; False when time ran out (the count is then a lower bound)."""
    for shard in range(services.shards):
        cursor: object = None
        while True:
            if not _has_time(budget):
                return False
            try:
                count, cursor = services.store.count_expired(shard, report.checked_at, cursor)
            except ProvisioningError as error:
                logger.warning("expiry index unreadable", extra={"code": error.code})
                return False
            report.expired += count
            if cursor is None:
                break
    return True


def _notify(services: WatchServices, report: ExpiryReport) -> bool:
    try:
        services.notifier.notify(summary_subject(report), summary_message(report, services))
    except ProvisioningError as error:
        logger.warning("expiry summary not sent", extra={"code": error.code})
        return False
    return True


def summary_subject(report: ExpiryReport) -> str:
    """At most 100 ASCII characters (SNS's limit for a subject)."""
    text = f"Device certificates: {report.expiring} expiring soon, {report.expired} expired"
    text = text if report.complete else f"{text} (incomplete run)"
    if report.issuer_due:
        return f"{text}; rotate the issuing CA"
    return f"{text}; the root CA ends soon" if report.root_due else text


def summary_message(report: ExpiryReport, services: WatchServices) -> str:
    window = services.window
    lines = [
        f"Expiry watch run at {report.checked_at}.",
        f"Warning window: notAfter before {report.window_ends} "
        f"({window.warning_percent}% of {window.validity_days}-day certificates).",
        "",
        f"Expiring soon: {report.expiring} (asked to renew: {report.renewals_requested}; "
        f"not reached: {report.renewals_failed}).",
        f"Expired, still named ACTIVE: {report.expired}. These devices cannot connect any more; "
        "their owners must provision them again over BLE.",
    ]
    if not report.complete:
        lines.append(
            "This run did not cover the whole window (it ran out of time, could not read the "
            "expiry index, went on where an earlier run stopped, or asked the most devices a "
            f"run asks, {services.spread.per_run}): the counts are lower bounds. The next run "
            "goes on where this one stopped."
        )
    if report.issuer_due:
        past = (report.issuer_days_left or 0) < 0
        lines += [
            "",
            f"The issuing CA is valid until {report.issuer_valid_until}. "
            f"{'Since' if past else 'From'} {report.issuer_last_issue} a "
            f"{window.validity_days}-day certificate outlives it, and Private CA refuses every "
            "issuance and renewal (ISSUE_CERTIFICATE_FAILED): rotate the issuing CA "
            f"{'now' if past else 'before then'} (docs/runbook-ca-rotation.md).",
        ]
    if report.root_due:
        past = (report.root_days_left or 0) < 0
        lines += [
            "",
            f"The root CA {'ended' if past else 'ends'} on {report.root_valid_until}"
            f"{'' if past else f' ({report.root_days_left:g} days left)'}. Every certificate "
            "under it, the issuing CA's included, ends with it, and the devices trust only that "
            "root: a new root must reach every device before then "
            "(docs/runbook-ca-rotation.md, 'The root's end').",
        ]
    if report.soonest:
        lines += ["", f"Soonest to expire (up to {SUMMARY_DEVICES}):"]
        lines += [f"  {device.not_after}  {device.dsn}" for device in report.soonest]
    lines += ["", "What to do: docs/runbook.md, section 'Certificate expiry'."]
    return "\n".join(lines)
