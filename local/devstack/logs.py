"""``devstack logs``: the stack's log files, printed or followed like ``tail -f``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from devstack.errors import DevstackError


def log_files(directory: Path, name: str | None = None) -> list[Path]:
    """The ``*.log`` files in ``directory``, or the one called ``name`` (.log optional)."""
    if not directory.is_dir():
        raise DevstackError(f"no logs yet: {directory} does not exist (is the stack up?)")
    files = sorted(directory.glob("*.log"))
    if name is None:
        if not files:
            raise DevstackError(f"no logs yet in {directory}")
        return files
    wanted = name.removesuffix(".log")
    chosen = [path for path in files if path.stem == wanted]
    if not chosen:
        known = ", ".join(path.stem for path in files) or "none yet"
        raise DevstackError(f"no log named {wanted!r} in {directory} (there are: {known})")
    return chosen


def follow(
    files: list[Path],
    out: TextIO,
    *,
    interval: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Print what is in ``files`` and then each new line as it arrives, until ``keep_going()``
    is false or Ctrl-C; with several files each line is prefixed by its file's name."""
    offsets = dict.fromkeys(files, 0)
    prefix = len(files) > 1
    try:
        while True:
            for path, offset in offsets.items():
                try:
                    with path.open("r", encoding="utf-8", errors="replace") as handle:
                        if path.stat().st_size < offset:  # truncated or replaced: start over
                            offset = 0
                        handle.seek(offset)
                        for line in handle:
                            out.write(f"{path.stem}| {line}" if prefix else line)
                        offsets[path] = handle.tell()
                except FileNotFoundError:
                    offsets[path] = 0
            out.flush()
            if not keep_going():
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
