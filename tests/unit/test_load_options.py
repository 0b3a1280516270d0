"""`make load`'s options: a rate, timeout or quota scale that is not a number above 0 is a usage
error before anything starts (a NaN rate would send every device at once; a tiny one would
sleep past the run's end)."""

from __future__ import annotations

import pytest

from bench import load


@pytest.mark.parametrize(
    "option",
    [
        ["--rate", "nan"],
        ["--rate", "inf"],
        ["--rate", "0"],
        ["--timeout", "-1"],
        ["--timeout", "nan"],
        ["--quota-scale", "0"],
    ],
)
def test_a_meaningless_figure_is_a_usage_error(
    option: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(load, "run_load", lambda *_a, **_k: pytest.fail("the line started"))
    with pytest.raises(SystemExit) as exit_:
        load.main(["--devices", "1", *option])
    assert exit_.value.code == 2
    assert "must be a number above 0" in capsys.readouterr().err
