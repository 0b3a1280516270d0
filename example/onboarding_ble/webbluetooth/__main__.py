"""``python -m onboarding_ble.webbluetooth``: see ``command``."""

import sys

from onboarding_ble.webbluetooth.command import main

sys.exit(main())
