"""``python -m onboarding_ble.webbluetooth``: see ``command``.

Ctrl-C and SIGTERM are held from here until the command's own handlers are in place (``run``
takes them then): a Ctrl-C while the modules load stops it as quietly as a later one.
"""

import signal
import sys

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

from onboarding_ble.webbluetooth.command import main  # noqa: E402 - after the signals are held

sys.exit(main())
