"""Build each function's deployment package as ``sam build`` does, under ``.local/build/``.

For a function whose CodeUri is ``<dir>``, the package ``<build>/<LogicalId>/`` is what Lambda
unpacks into /var/task: ``pip install -r <dir>/requirements.txt --target`` it, then a copy of
``<dir>`` on top. Nothing else: boto3 and its dependencies come from the runtime, so they are
in the package only when the requirements pull them in, exactly as in AWS.

- pip is the running interpreter's, with pip's own configuration (indexes, find-links,
  constraints); wheels are for this interpreter, not for the template's Runtime.
- The dependencies are installed again only when requirements.txt changes: a stamp next to
  the package records a hash of it and the interpreter's tag. The code is copied on every
  build (a few dozen files; unchanged ones are skipped, removed ones removed).
- A build goes to a temporary folder first, so an interrupted pip never leaves a package that
  looks complete; a lock file keeps two processes from building the same package at once.
- ``<build>/runtime/`` stands in for what the Lambda runtime provides: links to this
  interpreter's boto3, botocore, s3transfer, jmespath, dateutil, urllib3 and six, and nothing
  else (RUNTIME_DISTRIBUTIONS).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import DeployError

Progress = Callable[[str], None]

# What the Lambda Python runtime ships besides the standard library.
RUNTIME_DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "urllib3",
    "six",
)
_SHOWN_PIP_LINES = ("Collecting", "Installing", "Successfully", "ERROR")
_SKIPPED_CODE = ("__pycache__", ".pytest_cache", ".mypy_cache")


@dataclass(frozen=True)
class Package:
    """A built function: its package folder (/var/task) and the runtime's folder (boto3)."""

    logical_id: str
    root: Path
    runtime: Path


def _python_tag() -> str:
    return f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"


def _stamp(requirements: bytes) -> str:
    return hashlib.sha256(requirements).hexdigest() + " " + _python_tag()


def _has_requirements(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip_install(requirements: Path, target: Path, say: Progress | None) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--requirement",
        str(requirements),
        "--no-input",
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        # pip compares the target with this interpreter's own packages, which Lambda never sees
        "--no-warn-conflicts",
    ]
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(  # noqa: S603 - this interpreter's pip, fixed arguments
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    ) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            line = line.rstrip()
            tail.append(line)
            if say is not None and line.startswith(_SHOWN_PIP_LINES):
                say(f"    {line}")
    if pip.returncode != 0:
        shown = "\n".join(tail)
        raise DeployError(f"pip install -r {requirements} failed ({pip.returncode}):\n{shown}")


def _code_files(code_uri: Path) -> list[str]:
    files: list[str] = []
    for directory, subdirs, names in os.walk(code_uri):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_CODE)
        for name in sorted(names):
            if not name.endswith(".pyc"):
                files.append(os.path.relpath(os.path.join(directory, name), code_uri))
    return files


def _copy_code(code_uri: Path, root: Path, manifest: Path) -> None:
    """Copy the code over the package; drop files an earlier copy made that the code lost."""
    files = _code_files(code_uri)
    try:
        previous = set(json.loads(manifest.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        previous = set()
    for name in sorted(previous - set(files)):
        (root / name).unlink(missing_ok=True)
    for name in files:
        source, target = code_uri / name, root / name
        stat = source.stat()
        with contextlib.suppress(FileNotFoundError):
            current = target.stat()
            if (current.st_size, current.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fresh = target.with_name(f".{target.name}.new")  # whole, as for the runtime's links
        shutil.copy2(source, fresh)
        fresh.replace(target)
    manifest.write_text(json.dumps(files), encoding="utf-8")


def runtime_folder(build_root: Path) -> Path:
    """``<build_root>/runtime``: links to this interpreter's copy of RUNTIME_DISTRIBUTIONS."""
    folder = build_root / "runtime"
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(build_root / "runtime.lock"):
        _link_runtime(folder)
    return folder


def _link_runtime(folder: Path) -> None:
    wanted: dict[str, Path] = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise DeployError(f"{name} is not installed; the offline runtime provides it") from exc
        for file in distribution.files or ():
            top = file.parts[0]
            if top not in ("..", "__pycache__") and not top.endswith(".pth"):
                wanted[top] = Path(str(distribution.locate_file(top)))
    for entry in folder.iterdir():
        if entry.name not in wanted or not entry.is_symlink():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for top, source in wanted.items():
        link = folder / top
        # The same folder reached another way (a checkout's .venv through a symlink) is the
        # same link: replacing it would pull it from under a function importing through it.
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        # A new link replaces the old in one step: a function starting meanwhile sees one
        # or the other, never none.
        fresh = folder / f".{top}.new"
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(source)
        fresh.replace(link)


def build_package(
    logical_id: str, code_uri: Path, build_root: Path, *, progress: Progress | None = None
) -> Package:
    """Build (or refresh) one function's package; pip runs only when requirements changed."""
    build_root = build_root.resolve()
    code_uri = code_uri.resolve()
    build_root.mkdir(parents=True, exist_ok=True)
    root = build_root / logical_id
    stamp_file = build_root / f"{logical_id}.stamp"
    manifest = build_root / f"{logical_id}.files"
    requirements = code_uri / "requirements.txt"
    wanted = _stamp(requirements.read_bytes() if requirements.is_file() else b"")
    with _locked(build_root / f"{logical_id}.lock"):
        current = stamp_file.read_text(encoding="utf-8") if stamp_file.is_file() else None
        if current != wanted or not root.is_dir():
            scratch = build_root / f"{logical_id}.tmp"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            if requirements.is_file() and _has_requirements(requirements.read_text("utf-8")):
                if progress is not None:
                    progress(f"  build  {logical_id}: pip install -r {requirements} (once)")
                _pip_install(requirements, scratch, progress)
            stamp_file.unlink(missing_ok=True)
            manifest.unlink(missing_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            scratch.rename(root)
            stamp_file.write_text(wanted, encoding="utf-8")
        _copy_code(code_uri, root, manifest)
    return Package(logical_id=logical_id, root=root, runtime=runtime_folder(build_root))


def build_packages(
    code_uris: Mapping[str, Path], build_root: Path, *, progress: Progress | None = None
) -> dict[str, Package]:
    """``build_package`` for each function (logical ID -> code directory)."""
    return {
        logical_id: build_package(logical_id, code_uri, build_root, progress=progress)
        for logical_id, code_uri in code_uris.items()
    }
