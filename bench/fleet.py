"""python -m bench.fleet: GET /devices's first page for a member with one device and for a
member with many (10,000 by default), side by side. Figures are printed, never asserted.

The real handler, domain, adapters and botocore run against moto (in-process, resources
deployed from template.yaml), with a fixed delay added to every AWS call as in ``python -m
bench``. The fleet rows are written straight into the devices table as commits leave them (this
measures reading, not provisioning). Besides the time, it prints what DynamoDB did for a page:
the Query calls and the items they read. Those are what AWS charges and what bounds the latency
there; moto itself filters an index by looking at every row of the table, so its own time grows
with the table, for both members alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from bench.__main__ import ROOT, CallRecorder

BIG, SMALL = "bench-fleet-big", "bench-fleet-small"


def _row(dsn: str, owner: str, created_at: str) -> dict[str, Any]:
    return {
        "dsn": {"S": dsn},
        "owner_sub": {"S": owner},
        "status": {"S": "ACTIVE"},
        "created_at": {"S": created_at},
        "updated_at": {"S": created_at},
        "listed_at": {"S": f"{created_at}#{dsn}"},
        "thing_name": {"S": f"device_{dsn}"},
        "certificate_id": {"S": f"{len(dsn):064x}"},
        "serial": {"S": "01"},
        "not_before": {"S": created_at},
        "not_after": {"S": "2030-01-01T00:00:00Z"},
        "key_algorithm": {"S": "EC_prime256v1"},
    }


def _seed(dynamodb: Any, table: str, devices: int) -> None:
    rows = [_row("SMALL-0", SMALL, "2026-01-01T00:00:00Z")]
    for n in range(devices):
        # One a second, as provisioning quotas would spread them.
        seconds = n
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + seconds))
        rows.append(_row(f"BIG-{n:06d}", BIG, stamp))
    for start in range(0, len(rows), 25):
        batch = [{"PutRequest": {"Item": item}} for item in rows[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={table: batch})


class QueryCounter:
    """Counts the Query calls and the items DynamoDB read (ScannedCount) for them."""

    def __init__(self) -> None:
        self.queries = 0
        self.scanned = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("after-call.dynamodb.Query", self._after)

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        self.queries += 1
        self.scanned += int(parsed.get("ScannedCount", 0))

    def take(self) -> tuple[int, int]:
        taken, (self.queries, self.scanned) = (self.queries, self.scanned), (0, 0)
        return taken


def bench_first_page(devices: int, runs: int, delay_ms: float, limit: int) -> None:
    fake_credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    os.environ.update(fake_credentials, AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from moto import mock_aws

    from devstack.cloudformation.deployer import deploy
    from devstack.moto_bridges import gaps as moto_gaps

    moto_gaps.apply()
    with mock_aws():
        print("deploying template.yaml into moto ...", flush=True)
        stack = deploy(ROOT / "template.yaml", {"AdminEmail": "bench@example.com"}, progress=None)
        environment = stack.functions["ProvisioningFunction"].environment
        os.environ.update(environment)
        print(f"writing {devices} devices for one member and 1 for another ...", flush=True)
        _seed(boto3.client("dynamodb"), environment["DEVICES_TABLE"], devices)

        from provisioning.adapters.composition import get_services
        from provisioning.handlers.api import lambda_handler
        from tests.support.lambda_support import FakeLambdaContext, api_event

        get_services.cache_clear()
        services = get_services()
        recorder = CallRecorder(delay_ms / 1000)
        recorder.attach(services.store.client)  # type: ignore[attr-defined]
        counter = QueryCounter()
        counter.attach(services.store.client)  # type: ignore[attr-defined]

        def first_page(sub: str) -> tuple[float, int, int, int]:
            event = api_event(None, sub, "Members", method="GET", path="/devices")
            event["resource"] = event["requestContext"]["resourcePath"] = "/devices"
            event["pathParameters"] = None
            event["queryStringParameters"] = {"limit": str(limit)}
            event["multiValueQueryStringParameters"] = {"limit": [str(limit)]}
            started = time.perf_counter()
            response = lambda_handler(event, FakeLambdaContext())
            elapsed = time.perf_counter() - started
            recorder.take()
            if response["statusCode"] != 200:
                raise SystemExit(f"GET /devices failed: {response['body']}")
            listed = len(json.loads(response["body"])["devices"])
            return (elapsed, *counter.take(), listed)

        first_page(SMALL)  # warm the container
        print(f"GET /devices first page (limit {limit}), {delay_ms:g} ms added to every AWS call")
        for name, sub, owned in (("1 device", SMALL, 1), (f"{devices} devices", BIG, devices)):
            samples = [first_page(sub) for _ in range(runs)]
            median = statistics.median(s[0] for s in samples) * 1000
            _, queries, scanned, listed = samples[-1]
            print(
                f"  member with {name:>14}: median {median:8.1f} ms   "
                f"{queries} Query, {scanned} items read, {listed} listed (owns {owned})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m bench.fleet", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000, help="the big fleet (10,000)")
    parser.add_argument("--runs", type=int, default=20, help="pages timed per member (20)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="added to every AWS call")
    parser.add_argument("--limit", type=int, default=25, help="page size (default 25)")
    args = parser.parse_args(argv)
    bench_first_page(args.devices, args.runs, args.delay_ms, args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
