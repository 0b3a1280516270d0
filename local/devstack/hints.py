"""The commands the offline stack prints for the user to paste: each runs as printed.

``make venv`` installs the project (pyproject.toml) into .venv, which puts the ``devstack``
command in ``.venv/bin``. Hints name it by that path, so they run from the repository's root
(where ``make up`` runs and the default state file is) without activating the virtualenv, and
carry ``--state`` when the stack's state file is not the default one.
"""

from __future__ import annotations

import shlex
from pathlib import Path

COMMAND = ".venv/bin/devstack"
DEFAULT_STATE = Path(".local/stack.json")


def command(*words: str, state: Path | str | None = None) -> str:
    """``.venv/bin/devstack WORDS [--state PATH]``, quoted for a POSIX shell."""
    parts = [COMMAND, *words]
    if state is not None and Path(state) != DEFAULT_STATE:
        parts += ["--state", str(state)]
    return " ".join(shlex.quote(part) for part in parts)


BROWSER = ".venv/bin/python -m onboarding_ble.webbluetooth"


def browser(state: Path | str | None = None) -> str:
    """The phone-app browser (``make browser``), named as a module of the venv's Python: it is
    the example's stand-in for a phone's radio, not a ``devstack`` command."""
    parts = BROWSER.split()
    if state is not None and Path(state) != DEFAULT_STATE:
        parts += ["--state", str(state)]
    return " ".join(shlex.quote(part) for part in parts)
