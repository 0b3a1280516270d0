"""`make load` must keep working as the code changes: a tiny line through the offline stack
with quotas on. It checks that the run finishes, prints its summary and that the invariants
hold; it never looks at throughput or latency (benchmarks are not timed tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_line_onboards_every_device_and_the_invariants_hold() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    env.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", "--devices", "10", "--clients", "4", "--users", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for line in (
        "== load summary ==",
        "devices: 10/10 onboarded",
        "throughput:",
        "request latency: p50",
        "status codes:",
        "  200 OK: 10",
        "AWS calls under a quota",
        "iot RegisterCertificate",
        "invariants: OK",
        # 10 devices fit in the stage's burst: no steady-state figure is claimed for them
        "steady state: not measured",
    ):
        assert line in result.stdout, line
    assert "5xx answers: 0;" in result.stdout
