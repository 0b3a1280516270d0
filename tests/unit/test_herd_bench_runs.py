"""`python -m bench.herd` (in `make bench`) must keep working as the code changes. This checks
that it runs with a small fleet and prints each figure; it never looks at the figures (benchmarks
are not timed tests)."""

from __future__ import annotations

import pytest

from bench import herd


def test_the_herd_simulation_runs_and_prints_every_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert herd.main(["--devices", "2000", "--validity-days", "1"]) == 0
    out = capsys.readouterr().out
    for figure in (
        "renewal herd: 2,000 devices",
        "onboarded evenly over 24 h",
        "onboarded at the RegisterCertificate quota",
        "renewal requests     peak",
        "/s over 1 s",
        "/s over 60 s; mean",
        "RegisterCertificate  peak",
        "quota 10/s",
        "function capacity",
        "nudged by the watch",
        "throttled",
        "dropped",
    ):
        assert figure in out, figure
    assert out.count("renewal requests") == 2
