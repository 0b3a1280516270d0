"""`make help` lists every documented target, the ones with digits in their names too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_documented_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    documented = re.findall(r"^([^\s:#=]+):[^\n]*## ", makefile, flags=re.MULTILINE)
    assert {"e2e", "down", "up", "test"} <= set(documented)

    listed = subprocess.run(
        ["make", "-s", "help"],  # noqa: S607 - make from PATH, as a user runs it
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == documented
