"""``python -m devstack``: what ``.venv/bin/devstack`` (installed by ``make venv``) runs."""

import sys

from devstack.entry import main

sys.exit(main())
