"""`make venv` installs once and again only when its inputs change; `make down` with nothing up
succeeds; `make clean` leaves no state or build output. Each runs the real Makefile in an
empty directory, so nothing of this checkout is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = (
    "requirements-dev.txt",
    "provisioning_lambda/requirements.txt",
    "deployment_lambda/requirements.txt",
    "example/requirements.txt",
)

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(target: str, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(  # noqa: S603
        ["make", *options, target],  # noqa: S607 - make from PATH, as a user runs it
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    return tmp_path


def test_make_venv_runs_again_only_when_a_requirements_file_or_pyproject_changes(
    project: Path,
) -> None:
    # GIVEN a virtualenv installed after its inputs last changed
    old = time.time() - 3600
    for name in (*REQUIREMENTS, "pyproject.toml"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("")
        os.utime(project / name, (old, old))
    stamp = project / ".venv" / "bin" / ".installed"
    stamp.parent.mkdir(parents=True)
    stamp.touch()

    # WHEN `make venv` is asked what it would do, THEN nothing
    dry = make("venv", project, "-n")
    assert dry.returncode == 0, dry.stderr
    assert "pip" not in dry.stdout

    # WHEN pyproject.toml (the project's packaging: the devstack command) changes
    os.utime(project / "pyproject.toml")
    dry = make("venv", project, "-n")
    # THEN the requirements and the project itself are installed again, and the stamp renewed
    assert "pip install --quiet -r requirements-dev.txt" in dry.stdout
    assert "pip install --quiet --no-deps --editable ." in dry.stdout
    assert dry.stdout.rstrip().endswith("touch .venv/bin/.installed")


def test_make_down_with_nothing_ever_installed_or_up_succeeds_in_one_line(project: Path) -> None:
    done = make("down", project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no offline stack is up (no .venv): nothing to stop\n"
    assert not (project / ".venv").exists()  # and nothing was installed to say so


def test_make_clean_removes_the_virtualenv_state_and_build_output(project: Path) -> None:
    # GIVEN what the project's commands leave behind, beside its own files
    made = [
        ".venv/bin/python",
        ".local/stack.json",
        ".local/build/ProvisioningFunction/app.py",
        ".aws-sam/build/template.yaml",  # sam build
        "build/lib/devstack/cli.py",
        "iot_device_onboarding.egg-info/PKG-INFO",  # the editable install
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".coverage",
    ]
    kept = ["template.yaml", "local/devstack/cli.py", "example/device.py"]
    for name in made + kept:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")

    # WHEN `make clean` runs
    done = make("clean", project)

    # THEN all of it is gone, and only it
    assert done.returncode == 0, done.stderr
    left = sorted(str(path.relative_to(project)) for path in project.rglob("*") if path.is_file())
    assert left == sorted(["Makefile", *kept])
