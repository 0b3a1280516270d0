"""Session-wide test setup: the Lambda environment that the template's Globals give every function.

In Lambda these variables exist before the handler module is imported, so the Powertools
logger and metrics read them at import. The tests import the modules early, so set them now,
from template.yaml itself rather than from a copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent


def _globals_environment() -> dict[str, str]:
    template, errors = decode(str(ROOT / "template.yaml"))
    if errors or template is None:
        raise RuntimeError(f"template.yaml does not load: {errors}")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return {str(name): str(value) for name, value in variables.items()}


for _name, _value in _globals_environment().items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Where moto differs from AWS in ways the product relies on (the client-auth certificate
# template, atomic conditional writes), bridge it as the offline stack does: devstack.moto_gaps.
from devstack import moto_gaps  # noqa: E402
from tests.support import once  # noqa: E402

moto_gaps.apply()
once.apply()
