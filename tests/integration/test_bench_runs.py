"""`make bench` must keep working as the code changes. This checks that it runs and prints each
figure; it never looks at the figures themselves (benchmarks are not timed tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmarks_run_and_print_every_figure() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    env.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--devices",
            "2",
            "--cpu-requests",
            "4",
            "--import-runs",
            "1",
            # the herd's figures are checked in tests/unit/test_herd_bench_runs.py; here, that
            # `python -m bench` runs it
            "--herd-devices",
            "2000",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for figure in (
        "cold import median",
        "EC_prime256v1  CPU median",
        "RSA_2048       CPU median",
        "latency median",
        "latency p95",
        "AWS calls / device",
        "critical path calls",
        "renewal herd: 2,000 devices",
    ):
        assert figure in result.stdout, figure
    assert "request failed" not in result.stdout


def test_the_disconnect_benchmark_runs_and_prints_its_figures() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    env.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.disconnect", "--devices", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "expected mechanism:" in result.stdout
    for operation in ("revoke ", "release"):
        assert f"{operation} -> disconnect  p50" in result.stdout, result.stdout
        assert f"{operation} disconnected by:" in result.stdout, result.stdout
    assert "still connected" not in result.stdout
