"""python -m bench.load: a factory line onboarding N devices through the offline stack.

Starts the offline stack with AWS's API quotas on the emulated services
(devstack.moto_bridges.quotas), the template's stage throttle at the gateway
(devstack.apigateway.throttle) and moto's load-only patches (bench.moto_patches), creates app
users, starts the provisioning function's reserved environments (``warm_up``; ``--cold`` skips
it), and onboards ``--devices`` devices over HTTP: devices arrive at ``--rate`` a second
(default twice the rate the quotas allow) and ``--clients`` concurrent clients each take the
next one and call ``POST /certificate`` until it succeeds, honouring ``Retry-After`` (the
Lambda's 429s and 409s carry it) and backing off exponentially, with jitter, on a 429 without
it (the gateway's own throttle, as API Gateway's) and on anything else that may pass.

It prints progress, then devices per second achieved against the bound the quotas set (the
tightest per-device quota: IoT RegisterCertificate, 10 a second), request latency
percentiles, every status code with the codes in the bodies, the AWS calls the quotas
throttled, and a check of the invariants against the emulated AWS: one ACTIVE certificate
per thing, the one its device row names; no ACTIVE certificate no row names; no row left with
a lease, an intent or a certificate to retire.

Figures are printed, never asserted. Everything is bounded: each device gets at most
``--max-attempts`` requests, the run stops at ``--timeout``, all traffic goes to 127.0.0.1.
The exit status is 0 when the run finished and the invariants hold, 1 when they do not.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import queue
import random
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

ROOT = Path(__file__).resolve().parent.parent
for _path in ("local", "."):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

from bench.moto_patches import costs as moto_costs  # noqa: E402
from bench.moto_patches import lookups as moto_lookups  # noqa: E402
from devstack.moto_bridges.quotas import QuotaLimiter  # noqa: E402
from devstack.stack import RunningStack, start_stack  # noqa: E402
from devstack.users import add_user, login  # noqa: E402

TEMPLATE = ROOT / "template.yaml"
LOG_DIR = ROOT / ".local" / "load"  # one folder of Lambda logs per run
# The AWS calls of a first provisioning that have a quota: one each per device.
PER_DEVICE_CALLS = (
    ("acm-pca", "IssueCertificate"),
    ("acm-pca", "GetCertificate"),
    ("iot", "CreateThing"),
    ("iot", "RegisterCertificate"),  # RegisterCertificateWithoutCA in SNI_ONLY mode: same quota
    ("iot", "AttachPolicy"),
    ("iot", "AttachThingPrincipal"),
)
REQUEST_TIMEOUT = 35.0  # seconds; the gateway gives up on the Lambda at 29
BACKOFF_BASE = 0.1  # seconds, first backoff ceiling without Retry-After
STEADY_MIN_DEVICES = 200  # ten times the default stage burst
BACKOFF_CAP = 2.0
PROGRESS_EVERY = 5.0


@dataclass(frozen=True)
class Options:
    devices: int = 1000
    rate: float | None = None  # offered devices per second; None: twice the bound
    clients: int = 64
    users: int = 10
    max_attempts: int = 200
    timeout: float | None = None  # seconds for the whole line; None: from devices and bound
    quotas: bool = True
    quota_scale: float = 1.0  # every quota's rate times this
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides
    warm: bool = True  # start the provisioning function's environments before the line


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (connection failed or timed out)
    code: str  # the body's "code", or what went wrong without an answer
    retry_after: float | None
    seconds: float
    origin: str  # gateway | lambda | none


@dataclass
class Tally:
    """What the clients saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[tuple[int, str, str, bool]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    device_seconds: list[float] = field(default_factory=list)
    done: int = 0
    gave_up: list[str] = field(default_factory=list)
    dsns: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds of CPU the client threads used (in the stack's process)
    done_at: list[float] = field(default_factory=list)  # seconds since the line started
    started: float = 0.0

    def record(self, answer: Answer) -> None:
        with self.lock:
            key = (answer.status, answer.code, answer.origin, answer.retry_after is not None)
            self.answers[key] += 1
            if answer.status:
                self.latencies.append(answer.seconds)


@dataclass
class Report:
    devices: int
    offered_rate: float
    bound: float
    bound_reason: str
    seconds: float
    tally: Tally
    throttled_calls: dict[str, int]
    admitted_calls: dict[str, int]
    quota_rates: dict[str, float]
    requests_by_service: dict[str, int]
    problems: list[str]
    invariant_summary: str
    warmed: int = 0  # environments started before the line

    @property
    def achieved(self) -> float:
        return self.tally.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady(self) -> float:
        """Devices per second between the 10th and the 90th percentile of completions: the
        rate once the workers are warm, before the last devices trickle in. Not measured (0)
        for fewer than STEADY_MIN_DEVICES: the throttle's and the quotas' bursts would let a
        short run pass the bound, which says nothing about a factory line."""
        done = sorted(self.tally.done_at)
        if len(done) < STEADY_MIN_DEVICES:
            return 0.0
        low, high = done[len(done) // 10], done[(9 * len(done)) // 10]
        return ((9 * len(done)) // 10 - len(done) // 10) / (high - low) if high > low else 0.0


def quota_bound(limiter: QuotaLimiter | None, stack: RunningStack) -> tuple[float, str]:
    """Devices per second the quotas and the stage throttle allow, and which one binds."""
    bounds: list[tuple[float, str]] = []
    if limiter is not None:
        for service, operation in PER_DEVICE_CALLS:
            quota = limiter.quotas.get((service, operation))
            if quota is not None:
                bounds.append((quota.rate, f"{service} {operation} {quota.rate:g}/s"))
    throttle = stack.throttle
    setting = throttle.setting_for("/certificate", "POST") if throttle else None
    if setting is not None:
        bounds.append((setting.rate, f"stage throttle {setting.rate:g} requests/s"))
    if not bounds:
        return float("inf"), "none"
    rate, _ = min(bounds)
    return rate, ", ".join(reason for value, reason in bounds if value == rate)


def device_public_key() -> str:
    raw = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


class Line:
    """The clients: each takes the next device that has arrived and onboards it."""

    def __init__(
        self,
        api_url: str,
        tokens: Sequence[str],
        gateway_bodies: set[bytes],
        options: Options,
        deadline: float,
        say: Callable[[str], None],
    ) -> None:
        split = urlsplit(api_url)
        self.host = split.hostname or "127.0.0.1"
        self.port = split.port or 80
        self.path = f"{split.path}/certificate"
        self.tokens = list(tokens)
        self.gateway_bodies = gateway_bodies
        self.options = options
        self.deadline = deadline
        self.say = say
        self.tally = Tally()
        self.arrivals: queue.Queue[int | None] = queue.Queue()
        self.run_id = secrets.token_hex(3).upper()

    def post(self, dsn: str, token: str, public_key: str) -> Answer:
        body = json.dumps({"DSN": dsn, "publicKey": public_key}).encode()
        headers = {"Content-Type": "application/json", "Authorization": token}
        started = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            retry_after = response.getheader("Retry-After")
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            return Answer(0, type(exc).__name__, None, time.monotonic() - started, "none")
        finally:
            connection.close()
        seconds = time.monotonic() - started
        try:
            code = str(json.loads(raw).get("code", "")) if status != 200 else "OK"
        except (ValueError, AttributeError):
            code = "UNPARSABLE_BODY"
        origin = "gateway" if raw in self.gateway_bodies else "lambda"
        return Answer(status, code, _seconds(retry_after), seconds, origin)

    def onboard(self, index: int) -> None:
        dsn = f"LOAD-{self.run_id}-{index:05d}"
        token = self.tokens[index % len(self.tokens)]
        public_key = device_public_key()
        started = time.monotonic()
        backoffs = 0
        for _ in range(self.options.max_attempts):
            if time.monotonic() >= self.deadline:
                break
            answer = self.post(dsn, token, public_key)
            self.tally.record(answer)
            if answer.status == 200:
                with self.tally.lock:
                    self.tally.done += 1
                    self.tally.dsns.append(dsn)
                    self.tally.device_seconds.append(time.monotonic() - started)
                    self.tally.done_at.append(time.monotonic() - self.tally.started)
                return
            if 400 <= answer.status < 500 and answer.status not in (408, 409, 429):
                break  # the request itself is wrong: retrying cannot help
            if answer.retry_after is not None:
                delay = answer.retry_after + random.uniform(0, 0.5)
            else:
                backoffs += 1
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**backoffs))
            time.sleep(max(0.0, min(delay, self.deadline - time.monotonic())))
        with self.tally.lock:
            self.tally.gave_up.append(dsn)

    def client(self) -> None:
        try:
            while True:
                index = self.arrivals.get()
                if index is None:
                    return
                self.onboard(index)
        finally:
            with self.tally.lock:
                self.tally.client_cpu += time.thread_time()

    def run(self, rate: float) -> float:
        """Offer the devices at ``rate`` a second; the seconds from first arrival to last done."""
        workers = [
            threading.Thread(target=self.client, name=f"load-client-{n}", daemon=True)
            for n in range(self.options.clients)
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        self.tally.started = started
        feeder = threading.Thread(target=self._feed, args=(rate, started), daemon=True)
        feeder.start()
        last_done, last_time = 0, started
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(timeout=PROGRESS_EVERY / len(workers))
            now = time.monotonic()
            if now - last_time >= PROGRESS_EVERY:
                with self.tally.lock:
                    done, total = self.tally.done, sum(self.tally.answers.values())
                    throttled = sum(n for key, n in self.tally.answers.items() if key[0] == 429)
                self.say(
                    f"  {now - started:6.1f} s  {done:5d}/{self.options.devices} onboarded  "
                    f"{(done - last_done) / (now - last_time):5.1f} devices/s now  "
                    f"{total} requests, {throttled} answered 429"
                )
                last_done, last_time = done, now
        feeder.join(timeout=1)
        return time.monotonic() - started

    def _feed(self, rate: float, started: float) -> None:
        for index in range(self.options.devices):
            due = min(started + index / rate, self.deadline)
            time.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= self.deadline:
                break
            self.arrivals.put(index)
        for _ in range(self.options.clients):
            self.arrivals.put(None)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _pages(call: Callable[..., dict[str, Any]], key: str, token: str, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    for _ in range(10_000):  # bounded: 10,000 pages
        page = call(**kwargs)
        items.extend(page.get(key, []))
        next_token = page.get(token)
        if not next_token:
            break
        kwargs[{"nextToken": "nextToken", "nextMarker": "marker"}.get(token, token)] = next_token
    return items


def check_invariants(stack: RunningStack, dsns: Sequence[str]) -> tuple[list[str], str]:
    """What the emulated AWS holds after the run, against the invariants (docs/architecture.md)."""
    problems: list[str] = []
    dynamodb, iot = stack.client("dynamodb"), stack.client("iot")
    table = stack.outputs["DevicesTableName"]
    rows: dict[str, dict[str, Any]] = {}
    start_key: dict[str, Any] | None = None
    for _ in range(10_000):
        more = {"ExclusiveStartKey": start_key} if start_key else {}
        page = dynamodb.scan(TableName=table, **more)
        for item in page.get("Items", []):
            rows[item["dsn"]["S"]] = item
        start_key = page.get("LastEvaluatedKey")
        if not start_key:
            break
    statuses = {
        certificate["certificateId"]: certificate["status"]
        for certificate in _pages(iot.list_certificates, "certificates", "nextMarker", pageSize=250)
    }
    named: set[str] = set()
    for dsn, row in rows.items():
        leftovers = sorted(
            name
            for name in row
            if name in ("lease_request_id", "lease_until", "intent", "sweep")
            or name.startswith("retire_")
        )
        if leftovers:
            problems.append(f"{dsn}: row still has {', '.join(leftovers)}")
        certificate_id = row.get("certificate_id", {}).get("S", "")
        thing = row.get("thing_name", {}).get("S", "")
        if certificate_id:
            named.add(certificate_id)
        if not certificate_id or not thing:
            problems.append(f"{dsn}: row names no certificate or thing")
            continue
        principals = iot.list_thing_principals(thingName=thing).get("principals", [])
        active = [
            arn.rsplit("/", 1)[-1]
            for arn in principals
            if statuses.get(arn.rsplit("/", 1)[-1]) == "ACTIVE"
        ]
        if active != [certificate_id]:
            problems.append(f"{dsn}: thing {thing} has ACTIVE {active}, row names {certificate_id}")
    for dsn in dsns:
        if dsn not in rows:
            problems.append(f"{dsn}: onboarded (200) but has no row")
    stray = sorted(
        cid for cid, status in statuses.items() if status == "ACTIVE" and cid not in named
    )
    if stray:
        problems.append(f"{len(stray)} ACTIVE certificates no row names, e.g. {stray[0]}")
    by_status = Counter(statuses.values())
    summary = (
        f"{len(rows)} device rows, {len(statuses)} certificates in IoT ("
        + ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
        + ")"
    )
    return problems, summary


def warm_up(stack: RunningStack, say: Callable[[str], None]) -> int:
    """Start the provisioning function's environments, up to its reserved concurrency, before
    the line. Lambda starts a surge's environments in parallel, each on its own CPU, in about a
    second; this machine starts them on its few cores, several seconds each when dozens start
    at once, and the surge then outruns the reservation (Lambda throttles: 502s) for a reason
    AWS does not have. ``--cold`` skips this, to see that."""
    function = stack.deployment.functions["ProvisioningFunction"]
    count = function.reserved_concurrency or 1
    say(f"warming {count} environments of {function.logical_id} (--cold: none) ...")
    started = time.monotonic()
    warm = stack.invoker.prewarm(function, count)
    say(f"{warm} environments warm in {time.monotonic() - started:.1f} s")
    return warm


def run_load(options: Options, say: Callable[[str], None] = print) -> Report:
    # moto's repeated work and scans would otherwise be what a thousand devices measure; the
    # stack's moto server runs in this process, so patching here reaches it.
    moto_lookups.apply()
    moto_costs.apply()
    log_dir = LOG_DIR / time.strftime("%Y%m%dT%H%M%S")
    say(f"starting the offline stack (quotas {'on' if options.quotas else 'off'}) ...")
    say(f"Lambda logs in {log_dir}")
    stack = start_stack(
        template=TEMPLATE,
        parameters={"AdminEmail": "admin@example.com", **options.parameters},
        lambda_log_dir=log_dir,
        mqtt_port=None,
        quotas=QuotaLimiter().scaled(options.quota_scale) if options.quotas else False,
    )
    try:
        return _run(stack, options, say)
    finally:
        stack.stop()


def _run(stack: RunningStack, options: Options, say: Callable[[str], None]) -> Report:
    bound, reason = quota_bound(stack.quotas, stack)
    rate = options.rate or (2 * bound if bound != float("inf") else 20.0)
    timeout = options.timeout or max(180.0, 6 * options.devices / min(bound, rate))
    cognito = stack.client("cognito-idp")
    tokens = []
    for n in range(max(1, options.users)):
        username = f"line-{secrets.token_hex(3)}-{n}"
        password = add_user(
            cognito,
            stack.outputs["UserPoolId"],
            username,
            email=f"{username}@example.com",
            group="Members",
        )
        tokens.append(
            login(cognito, stack.outputs["UserPoolClientId"], username, password).id_token
        )
    responses = stack.gateway.api.gateway_responses
    gateway_bodies = {stack.gateway.api.error(kind, "").body for kind in responses.defined}
    say(
        f"onboarding {options.devices} devices: offered {rate:g} devices/s, "
        f"{options.clients} clients, {len(tokens)} users; bound {bound:g} devices/s ({reason}"
        + (f", quotas x{options.quota_scale:g}" if options.quota_scale != 1 else "")
        + (
            f", {' '.join(f'{k}={v}' for k, v in options.parameters.items())}"
            if options.parameters
            else ""
        )
        + "); "
        f"stops by {timeout:.0f} s"
    )
    warmed = warm_up(stack, say) if options.warm else 0
    line = Line(stack.api_url, tokens, gateway_bodies, options, time.monotonic() + timeout, say=say)
    limiter = stack.quotas
    # the deployment's own calls are not the line's
    admitted_before = Counter(limiter.admitted) if limiter else Counter()
    throttled_before = Counter(limiter.throttled) if limiter else Counter()
    calls_before = Counter(limiter.calls) if limiter else Counter()
    seconds = line.run(rate)
    say("checking the invariants against the emulated AWS ...")
    problems, summary = check_invariants(stack, line.tally.dsns)
    admitted = (limiter.admitted if limiter else Counter()) - admitted_before
    throttled = (limiter.throttled if limiter else Counter()) - throttled_before
    requests = (limiter.calls if limiter else Counter()) - calls_before
    rates = {key: quota.rate for key, quota in (limiter.quotas.items() if limiter else [])}
    return Report(
        devices=options.devices,
        offered_rate=rate,
        bound=bound,
        bound_reason=reason,
        seconds=seconds,
        tally=line.tally,
        throttled_calls={f"{s} {o}": n for (s, o), n in throttled.items()},
        admitted_calls={f"{s} {o}": n for (s, o), n in admitted.items()},
        quota_rates={f"{s} {o}": rate for (s, o), rate in rates.items()},
        requests_by_service=dict(requests),
        problems=problems,
        invariant_summary=summary,
        warmed=warmed,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def print_report(report: Report, say: Callable[[str], None] = print) -> None:
    tally = report.tally
    share = report.achieved / report.bound if report.bound not in (0, float("inf")) else 0.0
    say("")
    say("== load summary ==")
    say(
        f"environments warmed before the line: {report.warmed}"
        if report.warmed
        else "environments warmed before the line: none (cold start)"
    )
    say(
        f"devices: {tally.done}/{report.devices} onboarded in {report.seconds:.1f} s; "
        f"{len(tally.gave_up)} gave up"
    )
    say(
        f"throughput: {report.achieved:.2f} devices/s achieved, offered {report.offered_rate:g}/s, "
        f"bound {report.bound:g}/s ({report.bound_reason}): {100 * share:.0f} % of the bound"
    )
    if report.steady:
        say(
            f"steady state (10th to 90th percentile of completions): {report.steady:.2f} "
            f"devices/s, {100 * report.steady / report.bound:.0f} % of the bound"
        )
    else:
        say(
            f"steady state: not measured (fewer than {STEADY_MIN_DEVICES} devices; the bursts "
            "the throttle and the quotas allow would dominate)"
        )
    if tally.latencies:
        say(
            "request latency: "
            + ", ".join(
                f"p{int(q * 100)} {percentile(tally.latencies, q):.3f} s" for q in (0.5, 0.95, 0.99)
            )
            + f" over {len(tally.latencies)} requests"
        )
    if tally.device_seconds:
        say(
            "device latency (first request to 200): "
            + ", ".join(
                f"p{int(q * 100)} {percentile(tally.device_seconds, q):.2f} s"
                for q in (0.5, 0.95, 0.99)
            )
            + f", mean {statistics.fmean(tally.device_seconds):.2f} s"
        )
    say("status codes:")
    for (status, code, origin, has_retry_after), count in sorted(tally.answers.items()):
        retry = "with Retry-After" if has_retry_after else "no Retry-After"
        label = f"{status} {code}" if status else f"no answer ({code})"
        suffix = f" [{origin}, {retry}]" if status not in (0, 200) else ""
        say(f"  {label}{suffix}: {count}")
    server_errors = sum(n for key, n in tally.answers.items() if key[0] >= 500)
    lambda_429_without = sum(
        n
        for (s, _, origin, has), n in tally.answers.items()
        if s == 429 and origin == "lambda" and not has
    )
    say(f"5xx answers: {server_errors}; Lambda 429s without Retry-After: {lambda_429_without}")
    if report.requests_by_service and tally.done:
        total = sum(report.requests_by_service.values())
        say(
            f"AWS requests to moto: {total} ({total / tally.done:.1f} per device: "
            + ", ".join(
                f"{service} {n / tally.done:.1f}"
                for service, n in sorted(report.requests_by_service.items())
            )
            + ")"
        )
    say(
        f"load clients' CPU in the stack's process: {tally.client_cpu:.1f} s "
        f"({100 * tally.client_cpu / report.seconds:.0f} % of one core over the run)"
    )
    if report.admitted_calls:
        say("AWS calls under a quota (admitted / throttled with ThrottlingException):")
        measured: list[tuple[float, str]] = []
        for name in sorted(set(report.admitted_calls) | set(report.throttled_calls)):
            admitted = report.admitted_calls.get(name, 0)
            per_device = ""
            if tally.done and admitted:
                calls = admitted / tally.done
                per_device = f", {calls:.2f} per device"
                measured.append((report.quota_rates[name] / calls, name))
            say(f"  {name}: {admitted} / {report.throttled_calls.get(name, 0)}{per_device}")
        if measured:
            rate, name = min(measured)
            say(f"bound from the calls measured per device: {rate:.2f} devices/s ({name})")
    say(f"invariants: {report.invariant_summary}")
    if report.problems:
        say(f"invariants: FAILED ({len(report.problems)} problems)")
        for problem in report.problems[:20]:
            say(f"  {problem}")
    else:
        say("invariants: OK (one ACTIVE certificate per thing, named by its row; none left over)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python -m bench.load",
        description=(
            "Onboard devices through the offline stack with AWS's API quotas and the template's "
            "stage throttle on, and print throughput against the quota bound, latency, status "
            "codes and an invariant check. Figures are printed, never asserted."
        ),
    )
    parser.add_argument("--devices", type=int, default=1000, help="devices (default %(default)s)")
    parser.add_argument(
        "--rate", type=float, help="offered devices per second (default: twice the quota bound)"
    )
    parser.add_argument(
        "--clients", type=int, default=64, help="concurrent HTTP clients (default %(default)s)"
    )
    parser.add_argument("--users", type=int, default=10, help="app users (default %(default)s)")
    parser.add_argument(
        "--max-attempts", type=int, default=200, help="requests per device at most (default 200)"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds for the whole line (default: from devices, bound)"
    )
    parser.add_argument(
        "--no-quotas", action="store_true", help="leave moto unthrottled (stage throttle only)"
    )
    parser.add_argument(
        "--quota-scale",
        type=float,
        default=1.0,
        help="multiply every AWS quota by this, e.g. 0.2 to make the quotas bind below what this "
        "machine's emulator can serve (default 1: AWS's defaults)",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="Key=Value",
        help="template parameters, e.g. ApiThrottleRateLimit=2 ApiThrottleBurstLimit=4",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start the line with no warm environment (this machine starts dozens of Lambda "
        "environments far slower than Lambda does: expect throttles AWS would not give)",
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.clients < 1 or args.max_attempts < 1:
        parser.error("--devices, --clients and --max-attempts must be at least 1")
    for name in ("rate", "timeout", "quota_scale"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a number above 0")
    parameters = dict(item.split("=", 1) for item in args.parameter_overrides if "=" in item)
    if len(parameters) != len(args.parameter_overrides):
        parser.error("--parameter-overrides items are Key=Value")
    options = Options(
        devices=args.devices,
        rate=args.rate,
        clients=args.clients,
        users=args.users,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        quotas=not args.no_quotas,
        quota_scale=args.quota_scale,
        parameters=parameters,
        warm=not args.cold,
    )
    report = run_load(options, say=_say)
    print_report(report, say=_say)
    return 1 if report.problems else 0


def _say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
