"""The load test's moto patches (bench.moto_patches) name the moto release they were written
for, the one requirements-dev.txt pins, and refuse to apply to any other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import moto_patches
from bench.moto_patches import costs, lookups

ROOT = Path(__file__).resolve().parents[2]


def pinned_moto() -> str:
    requirements = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    (pin,) = re.findall(r"^moto(?:\[[^\]]*\])?==(\S+)$", requirements, flags=re.MULTILINE)
    return pin


@pytest.mark.parametrize("patch", [costs, lookups])
def test_each_patch_names_the_pinned_moto_release(patch: object) -> None:
    assert pinned_moto() == patch.MOTO_VERSION


def test_a_patch_refuses_another_moto_release_naming_both() -> None:
    with pytest.raises(moto_patches.MotoVersionError) as refused:
        moto_patches.require_moto("0.0.1", "bench.moto_patches.costs")
    message = str(refused.value)
    assert "moto 0.0.1" in message and f"moto {pinned_moto()} is installed" in message
    assert "bench.moto_patches.costs" in message


@pytest.mark.parametrize("patch", [costs, lookups])
def test_apply_raises_before_touching_moto_on_another_release(
    patch: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patch, "_applied", False)
    monkeypatch.setattr(patch, "MOTO_VERSION", "0.0.1")
    with pytest.raises(moto_patches.MotoVersionError):
        patch.apply()  # type: ignore[attr-defined]
