"""python -m bench: latency and AWS calls per device, handler CPU, cold import time, and the
renewal herd (bench/herd.py: a 100,000-device fleet through one renewal cycle, simulated).

Latency runs the real handler, adapters and botocore against moto (in-process, resources
deployed from template.yaml) with a fixed delay added to every AWS call, the harness the
design's targets are stated on. CPU time runs the handler against instant in-memory
adapters, so it counts only this code's work. Cold import runs in fresh interpreters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
for _path in ("provisioning_lambda", "local", "."):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

# As the template's Globals would, before any handler module is imported.
for _name, _value in {
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "Bench",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)

TARGETS = {
    "median": "<= 0.22 s per device at 25 ms per AWS call",
    "calls": "<= 6 AWS calls on the critical path: claim, issue, get, register, attach, commit",
    "cpu": "< 5 ms handler CPU per request, AWS excluded",
    "import": "< 0.5 s cold import of the handler module",
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


Interval = tuple[float, float, str]  # start, end, operation


def longest_sequential_chain(intervals: list[Interval]) -> list[str]:
    """The calls the request waited for, in order: from the call that ended last, back through
    the call that ended last before each one started (what ran beside them is left out)."""
    chain: list[str] = []
    ordered = sorted(intervals, key=lambda call: call[1])
    before = float("inf")
    for start, end, operation in reversed(ordered):
        if end <= before:
            chain.append(operation)
            before = start
    return chain[::-1]


class CallRecorder:
    """A botocore hook pair: delay each AWS call, and time it for the critical-path count."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.intervals: list[Interval] = []
        self._starts = threading.local()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send", self.before_send)
        client.meta.events.register("needs-retry", self.after_call)

    def before_send(self, **_: Any) -> None:
        self._starts.value = time.perf_counter()
        time.sleep(self.delay)

    def after_call(self, event_name: str = "", **_: Any) -> None:
        start = getattr(self._starts, "value", None)
        if start is not None:
            operation = event_name.rsplit(".", 1)[-1]  # needs-retry.<service>.<Operation>
            with self.lock:
                self.intervals.append((start, time.perf_counter(), operation))
            self._starts.value = None

    def take(self) -> list[Interval]:
        with self.lock:
            taken, self.intervals = self.intervals, []
        return taken


def cache_moto_ca_key() -> None:
    """Make moto's ACM PCA load its CA key once instead of on every signature.

    moto keeps the CA's RSA key encrypted and decrypts and re-validates it for every
    certificate it signs: tens of milliseconds of this process's CPU per IssueCertificate.
    In AWS that work happens inside ACM PCA, not in the Lambda, so the benchmark reports the
    latency both with moto as it is and with this cost taken out.
    """
    from moto.acmpca.models import CertificateAuthority

    loader = CertificateAuthority.key.fget  # type: ignore[attr-defined]

    def cached_key(ca: Any) -> Any:
        if "_bench_key" not in ca.__dict__:
            ca.__dict__["_bench_key"] = loader(ca)
        return ca.__dict__["_bench_key"]

    CertificateAuthority.key = property(cached_key)  # type: ignore[assignment,method-assign]


def bench_latency(devices: int, delay_ms: float) -> list[float]:
    fake_credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    os.environ.update(fake_credentials, AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws

    from devstack.cloudformation.deployer import deploy
    from devstack.moto_bridges import gaps as moto_gaps

    moto_gaps.apply()
    with mock_aws():
        print("deploying template.yaml into moto ...", flush=True)
        stack = deploy(ROOT / "template.yaml", {"AdminEmail": "bench@example.com"}, progress=None)
        os.environ.update(stack.functions["ProvisioningFunction"].environment)
        # The figures, not a log line or a metrics document per request.
        os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        from provisioning.adapters.composition import get_services
        from provisioning.handlers.api import lambda_handler
        from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn

        get_services.cache_clear()
        services = get_services()
        recorder = CallRecorder(delay_ms / 1000)
        for adapter in (services.pca, services.iot, services.store):
            recorder.attach(adapter.client)  # type: ignore[union-attr]  # the real adapters

        # One warm-up request: the container's first request also looks up the IoT endpoint.
        lambda_handler(api_event(Device(unique_dsn()).body(), "bench-user"), FakeLambdaContext())
        recorder.take()

        latencies: list[float] = []
        calls: list[int] = []
        chains: list[list[str]] = []
        print(f"provisioning {devices} devices, {delay_ms:g} ms added to every AWS call ...")
        for _ in range(devices):
            event = api_event(Device(unique_dsn()).body(), "bench-user")
            started = time.perf_counter()
            response = lambda_handler(event, FakeLambdaContext())
            latencies.append(time.perf_counter() - started)
            if response["statusCode"] != 200:
                print(f"  request failed: {response['body']}")
            intervals = recorder.take()
            calls.append(len(intervals))
            chains.append(longest_sequential_chain(intervals))
    median = statistics.median(latencies) * 1000
    print(f"  latency median      {median:8.1f} ms   ({TARGETS['median']})")
    print(f"  latency p95         {percentile(latencies, 0.95) * 1000:8.1f} ms")
    print(
        f"  AWS calls / device  {statistics.median(calls):8.0f}      (all calls, incl. concurrent)"
    )
    lengths = [len(chain) for chain in chains]
    print(f"  critical path calls {statistics.median(lengths):8.0f}      ({TARGETS['calls']})")
    common = max(set(map(tuple, chains)), key=lambda chain: chains.count(list(chain)))
    print(f"  critical path       {' -> '.join(common)}")
    return latencies


def bench_cpu(requests: int, algorithm: str) -> None:
    """Handler + domain + crypto per request, against instant in-memory adapters."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.fakes import FakeIot, FakePca, FakeStore, fake_settings
    from provisioning.ports import Services
    from tests.support.lambda_support import Device, FakeLambdaContext, api_event, unique_dsn

    services = Services(
        settings=fake_settings(algorithm),
        pca=FakePca(),
        iot=FakeIot(),
        store=FakeStore(),
        executor=ThreadPoolExecutor(max_workers=8),
        sleep=lambda _s: None,
    )
    from provisioning.handlers import api as handler_module
    from provisioning.handlers import context as route_context_module

    with mock.patch.object(route_context_module, "get_services", lambda: services):
        events = [api_event(Device(unique_dsn()).body(), "bench-user") for _ in range(requests)]
        handler_module.lambda_handler(events[0], FakeLambdaContext())
        samples = []
        for event in events[1:]:
            started = time.process_time()
            response = handler_module.lambda_handler(event, FakeLambdaContext())
            samples.append(time.process_time() - started)
            if response["statusCode"] != 200:
                raise SystemExit(f"the handler failed: {response['body']}")
    print(
        f"  {algorithm:14s} CPU median {statistics.median(samples) * 1000:6.2f} ms,"
        f" p95 {percentile(samples, 0.95) * 1000:6.2f} ms   ({TARGETS['cpu']})"
    )


def bench_import(runs: int) -> None:
    """Import time of the handler module in fresh interpreters, as a Lambda cold start sees it.

    Two things differ from Lambda in this virtualenv and are set as Lambda has them: the X-Ray
    SDK behaves as in Lambda only when LAMBDA_TASK_ROOT is set (elsewhere it builds two X-Ray
    clients for centralized sampling at import, about 0.2 s), and the Lambda runtime has no
    awscrt (this virtualenv has it for the device SDK; botocore would load it).
    """
    code = (
        "import time; t = time.perf_counter(); import provisioning.handlers.api; "
        "print(time.perf_counter() - t)"
    )
    code_dir = ROOT / "provisioning_lambda"
    env = dict(os.environ, PYTHONPATH=str(code_dir), PYTHONDONTWRITEBYTECODE="")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.update(LAMBDA_TASK_ROOT=str(code_dir), BOTO_DISABLE_CRT="true")
    samples = []
    for _ in range(runs):
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.strip()))
    print(
        f"  cold import median {statistics.median(samples) * 1000:6.0f} ms,"
        f" max {max(samples) * 1000:6.0f} ms over {runs} fresh interpreters   ({TARGETS['import']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m bench", description=__doc__)
    parser.add_argument("--devices", type=int, default=40, help="devices to provision (default 40)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="added to every AWS call")
    parser.add_argument("--cpu-requests", type=int, default=200, help="requests for the CPU figure")
    parser.add_argument("--import-runs", type=int, default=5, help="fresh interpreters to time")
    parser.add_argument(
        "--herd-devices", type=int, default=100_000, help="the renewal herd's fleet (100,000)"
    )
    parser.add_argument(
        "--only", choices=("latency", "cpu", "import", "herd"), help="run one benchmark only"
    )
    args = parser.parse_args(argv)
    if args.only in (None, "import"):
        print("cold import of provisioning.handlers.api")
        bench_import(args.import_runs)
    if args.only in (None, "cpu"):
        print("handler CPU per request, AWS excluded")
        bench_cpu(args.cpu_requests, "EC_prime256v1")
        bench_cpu(max(20, args.cpu_requests // 4), "RSA_2048")
    if args.only in (None, "latency"):
        print("per-device latency against moto, as moto is")
        bench_latency(args.devices, args.delay_ms)
        print("per-device latency against moto, its CA key loaded once (see cache_moto_ca_key)")
        cache_moto_ca_key()
        bench_latency(args.devices, args.delay_ms)
    if args.only in (None, "herd"):
        from bench import herd

        herd.main(["--devices", str(args.herd_devices)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
