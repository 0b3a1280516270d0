"""`python -m bench.fleet` must keep working: it runs and prints both members' figures (never
checked: benchmarks are not timed tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_benchmark_runs_and_prints_both_figures() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["local", "example", "."]))
    env.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--devices", "60", "--runs", "2", "--limit", "10"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "member with       1 device:" in result.stdout
    assert "member with     60 devices:" in result.stdout
    # The big member's page lists a page, not the fleet
    assert "10 listed (owns 60)" in result.stdout
