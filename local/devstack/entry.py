"""``.venv/bin/devstack`` (and ``python -m devstack``): the command line, with Ctrl-C held while
it loads.

The offline stack's modules take a second or two to import (boto3, the SAM translator,
pydantic). A Ctrl-C (or SIGTERM) that comes meanwhile would end in a traceback from inside
some library's import, or, in a class statement, as a RuntimeError (Python 3.11). So both are
held (blocked) until the modules are loaded; then one that came is taken, and the command stops
quietly as it does later (status 130; SIGTERM ends it as by default).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def main() -> int:
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    cli = importlib.import_module("devstack.cli")
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # what came meanwhile is taken here
    except KeyboardInterrupt:
        return 130
    try:
        status: int = cli.main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`devstack state outputs | head -3`): stop quietly, as a shell tool
        # does, and let nothing write to the closed pipe again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status
