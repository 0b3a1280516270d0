"""python -m bench.herd: a fleet onboarded in one day, through one renewal cycle, against the
renewal function's reserved concurrency and maximum event age. Pure Python, no AWS, seconds.

It uses the real rules, imported: the device's schedule (``onboarding_ble.renewal``:
``renewal_delay`` in ``RENEWAL_WINDOW``, ``nudged_delay`` for the watch's requests, ``Backoff``
after a request that got no answer) and the expiry watch's spread (``provisioning.usecases.expiry``:
``NUDGE_SPREAD``, ``ExpiryWindow``). The function's settings and the watch's schedule are read
from template.yaml's defaults (override them to compare).

The model, and what it leaves out:

- devices are onboarded at a uniform rate over ``--onboarding-hours`` (and, as a second
  scenario, as fast as IoT's RegisterCertificate quota allows, 10 a second);
- each renews on its own at its moment of the window, except a share (``--unscheduled``) that
  never does (firmware without renewal, say) and renews only when the expiry watch asks it;
  the watch runs every ``ExpiryWatchSchedule`` and asks the soonest-expiring devices of the
  warning window that have not renewed, at most ``NUDGE_SPREAD.per_run`` a run;
- a renewal is two invocations: the request (``--request-seconds``) and, once the device has
  reconnected (a second later), its confirm (``--confirm-seconds``);
- Lambda's asynchronous queue: an event that finds every reserved execution busy is throttled
  and tried again 1, 2, 4 ... s later (up to 5 minutes), as Lambda documents, and dropped once
  older than ``MaximumEventAgeInSeconds``. A device whose request was dropped retries after
  its answer timeout and its jittered backoff.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The device's and the expiry watch's own rules are imported, not copied. Not through
# bench.__main__: importing it sets the benchmarks' Powertools environment (metrics off) in
# whatever process imports this module, a test session among them.
ROOT = Path(__file__).resolve().parent.parent
for _path in ("example", "provisioning_lambda"):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

from onboarding_ble import renewal  # noqa: E402
from provisioning.domain import expiry  # noqa: E402

REGISTER_CERTIFICATE_QUOTA = 10.0  # IoT RegisterCertificate, per second, per account: shared
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
THROTTLE_RETRY_CAP = 300.0  # Lambda's longest interval between tries of a throttled event
RECONNECT_SECONDS = 1.0  # from the accepted answer to the confirm (reconnect, publish)
MAX_DEVICE_ATTEMPTS = 10


@dataclass(frozen=True)
class Settings:
    devices: int
    onboarding_seconds: float
    validity_days: int
    warning_percent: int
    watch_every: float  # seconds
    concurrency: int
    max_event_age: float
    request_seconds: float
    confirm_seconds: float
    unscheduled: float
    seed: int


@dataclass
class Figures:
    requests: list[float] = field(default_factory=list)  # first tries and device retries
    registered: list[float] = field(default_factory=list)  # request invocations' starts
    nudged: int = 0
    throttled: int = 0  # events that had to wait for a free execution
    longest_wait: float = 0.0
    dropped: int = 0  # events older than the maximum event age
    device_retries: int = 0
    renewed: int = 0  # requests answered (the device then holds its new certificate)
    confirms_dropped: int = 0  # the previous certificate then waits out the grace period
    not_renewed: int = 0


def template_defaults() -> dict[str, Any]:
    """The function's concurrency and event age, the watch's schedule and the window's share,
    as template.yaml deploys them by default."""
    from cfnlint.decode import decode

    template, _ = decode(str(ROOT / "template.yaml"))
    assert template is not None
    parameters = template["Parameters"]
    function = template["Resources"]["RenewalFunction"]["Properties"]
    rate = str(parameters["ExpiryWatchSchedule"]["Default"])  # rate(6 hours)
    count, unit = rate.removeprefix("rate(").removesuffix(")").split()
    unit_seconds = {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
    concurrency = str(parameters["RenewalReservedConcurrency"]["Default"])
    return {
        "concurrency": int(concurrency) if concurrency.isdigit() else 1000,
        "max_event_age": float(function["EventInvokeConfig"]["MaximumEventAgeInSeconds"]),
        "watch_hours": int(count) * unit_seconds / 3600,
        "warning_percent": int(parameters["ExpiryWarningPercent"]["Default"]),
    }


def own_moments(settings: Settings, rng: random.Random) -> tuple[list[float], list[float]]:
    """Each device's onboarding time and the moment it renews on its own (inf: never), in
    seconds from the start of the onboarding day, by the device's own rule."""
    lifetime = timedelta(days=settings.validity_days)
    onboarded, own = [], []
    for n in range(settings.devices):
        start = settings.onboarding_seconds * n / settings.devices
        born = EPOCH + timedelta(seconds=start)
        onboarded.append(start)
        if rng.random() < settings.unscheduled:
            own.append(float("inf"))
        else:
            own.append(start + renewal.renewal_delay(born, born + lifetime, born, rng))
    return onboarded, own


def nudges(
    settings: Settings, onboarded: list[float], own: list[float], rng: random.Random
) -> tuple[list[float], int]:
    """When each device renews once the expiry watch's requests are taken into account (the
    sooner of its own moment and the moment it draws in a request's spread), and how many
    requests the watch sent. Devices are taken as renewing when they first ask (the function's
    delays are seconds; the watch's runs are hours apart)."""
    lifetime = settings.validity_days * 86400.0
    window = expiry.ExpiryWindow(settings.validity_days, settings.warning_percent)
    warning = window.length.total_seconds()
    spread = expiry.NUDGE_SPREAD
    moments = list(own)
    by_expiry = sorted(range(len(onboarded)), key=lambda i: onboarded[i])  # expiry order
    expiries = [onboarded[i] + lifetime for i in by_expiry]
    sent, run = 0, 0.0
    end = max(onboarded) + lifetime
    while run < end:
        # EXPIRING: notAfter in [run, run + warning]; not renewed yet by the time of the run
        low = bisect.bisect_left(expiries, run)
        high = bisect.bisect_right(expiries, run + warning)
        asked = 0
        for i in by_expiry[low:high]:
            if asked >= spread.per_run:
                break
            if moments[i] <= run:
                continue
            asked += 1
            moments[i] = min(moments[i], run + renewal.nudged_delay(spread.seconds, rng))
        sent += asked
        run += settings.watch_every
    return moments, sent


def function_queue(settings: Settings, first_tries: list[float], rng: random.Random) -> Figures:
    """The renewal function's asynchronous queue, event by event (module docstring)."""
    figures = Figures()
    # (time, order, kind, device, first arrival, wait before the next try, device attempt)
    events: list[tuple[float, int, str, int, float, float, int]] = []
    order = 0
    for device, moment in enumerate(first_tries):
        if moment != float("inf"):
            events.append((moment, order, "request", device, moment, 1.0, 1))
            order += 1
        else:
            figures.not_renewed += 1
    heapq.heapify(events)
    running: list[float] = []  # when each busy execution frees up
    backoffs: dict[int, renewal.Backoff] = {}
    while events:
        now, _, kind, device, arrived, retry_in, attempt = heapq.heappop(events)
        if kind == "request" and retry_in == 1.0 and now == arrived:
            figures.requests.append(now)
        while running and running[0] <= now:
            heapq.heappop(running)
        if len(running) >= settings.concurrency:
            if retry_in == 1.0:
                figures.throttled += 1
            if now + retry_in - arrived > settings.max_event_age:
                figures.dropped += 1
                if kind == "request" and attempt < MAX_DEVICE_ATTEMPTS:  # no answer: retry
                    backoff = backoffs.setdefault(
                        device, renewal.Backoff(rng=random.Random(rng.random()))
                    )
                    again = arrived + renewal.ANSWER_TIMEOUT + backoff.next()
                    figures.device_retries += 1
                    heapq.heappush(events, (again, order, kind, device, again, 1.0, attempt + 1))
                    order += 1
                elif kind == "request":
                    figures.not_renewed += 1
                else:
                    figures.confirms_dropped += 1
                continue
            again_in = min(2 * retry_in, THROTTLE_RETRY_CAP)
            heapq.heappush(
                events, (now + retry_in, order, kind, device, arrived, again_in, attempt)
            )
            order += 1
            continue
        figures.longest_wait = max(figures.longest_wait, now - arrived)
        if kind == "request":
            figures.registered.append(now)
            done = now + settings.request_seconds
            heapq.heappush(running, done)
            figures.renewed += 1
            confirm = done + RECONNECT_SECONDS
            heapq.heappush(events, (confirm, order, "confirm", device, confirm, 1.0, attempt))
            order += 1
        else:
            heapq.heappush(running, now + settings.confirm_seconds)
    return figures


def peak(times: list[float], seconds: int) -> float:
    """The highest rate (per second) over any ``seconds``-long window of whole seconds."""
    if not times:
        return 0.0
    counts = Counter(int(t) for t in times)
    first, last = min(counts), max(counts)
    best = window = 0
    for second in range(first, last + 1):
        window += counts.get(second, 0) - counts.get(second - seconds, 0)
        best = max(best, window)
    return best / seconds


def simulate(settings: Settings) -> Figures:
    rng = random.Random(settings.seed)
    onboarded, own = own_moments(settings, rng)
    moments, sent = nudges(settings, onboarded, own, rng)
    figures = function_queue(settings, moments, rng)
    figures.nudged = sent
    return figures


def report(title: str, settings: Settings, figures: Figures) -> None:
    span = max(figures.requests) - min(figures.requests) if figures.requests else 0.0
    mean = len(figures.requests) / span if span > 0 else 0.0
    one, sixty = peak(figures.requests, 1), peak(figures.requests, 60)
    registered = peak(figures.registered, 1)
    ratio = sixty / mean if mean else 0.0
    capacity = settings.concurrency / (settings.request_seconds + settings.confirm_seconds)
    print(f"  {title}")
    print(
        f"    renewal requests     peak {one:6.2f}/s over 1 s, {sixty:6.2f}/s over 60 s;"
        f" mean {mean:6.3f}/s over {span / 3600:.1f} h (60 s peak / mean {ratio:.1f})"
    )
    print(
        f"    RegisterCertificate  peak {registered:6.2f}/s over 1 s, quota"
        f" {REGISTER_CERTIFICATE_QUOTA:g}/s account-wide, shared with provisioning"
    )
    print(
        f"    function capacity    {capacity:6.2f} renewals/s ({settings.concurrency} executions,"
        f" {settings.request_seconds:g} s + {settings.confirm_seconds:g} s a renewal)"
    )
    print(f"    nudged by the watch  {figures.nudged} requests")
    print(
        f"    throttled            {figures.throttled} events waited for an execution,"
        f" longest wait {figures.longest_wait:.1f} s (event age limit {settings.max_event_age:g} s)"
    )
    print(
        f"    dropped              {figures.dropped} events older than the event age;"
        f" {figures.confirms_dropped} of them confirms; {figures.device_retries} device retries;"
        f" renewed {figures.renewed}, not renewed {figures.not_renewed}"
    )


def main(argv: list[str] | None = None) -> int:
    defaults = template_defaults()
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m bench.herd", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000, help="fleet size (100,000)")
    parser.add_argument("--onboarding-hours", type=float, default=24.0, help="default 24")
    parser.add_argument("--validity-days", type=int, default=7, help="certificates (default 7)")
    parser.add_argument("--concurrency", type=int, default=defaults["concurrency"])
    parser.add_argument("--max-event-age", type=float, default=defaults["max_event_age"])
    parser.add_argument("--watch-hours", type=float, default=defaults["watch_hours"])
    parser.add_argument("--warning-percent", type=int, default=defaults["warning_percent"])
    parser.add_argument("--request-seconds", type=float, default=1.0, help="default 1.0")
    parser.add_argument("--confirm-seconds", type=float, default=0.5, help="default 0.5")
    parser.add_argument(
        "--unscheduled", type=float, default=0.1, help="share renewing only when asked (0.1)"
    )
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    window = renewal.RENEWAL_WINDOW
    spread = expiry.NUDGE_SPREAD
    print(
        f"renewal herd: {args.devices:,} devices, {args.validity_days}-day certificates, own"
        f" renewal at {window.start:.0%}-{window.end:.0%} of the lifetime; the watch every"
        f" {args.watch_hours:g} h asks at most {spread.per_run} a run, spread over"
        f" {spread.seconds} s; {args.unscheduled:.0%} renew only when asked"
    )
    print(
        f"  renewal function: {args.concurrency} executions reserved, events dropped after"
        f" {args.max_event_age:g} s"
    )
    scenarios = [
        (f"onboarded evenly over {args.onboarding_hours:g} h", args.onboarding_hours * 3600),
        (
            f"onboarded at the RegisterCertificate quota ({REGISTER_CERTIFICATE_QUOTA:g}/s)",
            args.devices / REGISTER_CERTIFICATE_QUOTA,
        ),
    ]
    for title, onboarding in scenarios:
        settings = Settings(
            devices=args.devices,
            onboarding_seconds=onboarding,
            validity_days=args.validity_days,
            warning_percent=args.warning_percent,
            watch_every=args.watch_hours * 3600,
            concurrency=args.concurrency,
            max_event_age=args.max_event_age,
            request_seconds=args.request_seconds,
            confirm_seconds=args.confirm_seconds,
            unscheduled=args.unscheduled,
            seed=args.seed,
        )
        report(title, settings, simulate(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
