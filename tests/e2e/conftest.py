"""The offline stack for end-to-end tests: moto server + template deployment + local gateway.

One stack per test session (deploying takes a few seconds), on free ports of 127.0.0.1,
stopped when the session ends. Tests use unique DSNs and users, so they can share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import RunningStack, start_stack

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="session")
def offline_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The running stack; its state file is at ``offline_stack.state_path``."""
    state_dir = tmp_path_factory.mktemp("devstack")
    stack = start_stack(
        template=TEMPLATE,
        # Devices renew seconds after they are provisioned here (--renew-after 0).
        parameters={"AdminEmail": "admin@example.com", "RenewalMinIntervalSeconds": "0"},
        state_path=state_dir / "stack.json",
        lambda_log_dir=state_dir / "logs",
    )
    try:
        yield stack
    finally:
        stack.stop()
