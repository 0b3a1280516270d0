"""Session-wide test setup: the Lambda environment that the template's Globals give every function.

In Lambda these variables exist before the handler module is imported, so the Powertools
logger and metrics read them at import. The tests import the modules early, so set them now,
from template.yaml itself rather than from a copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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
# template, atomic conditional writes), bridge it as the offline stack does:
# devstack.moto_bridges.gaps.
from devstack.moto_bridges import gaps as moto_gaps  # noqa: E402
from tests.support import once  # noqa: E402

moto_gaps.apply()
once.apply()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Which tests pytest-xdist keeps together on one worker (``--dist loadgroup``).

    It runs first: pytest-xdist's own hook reads the groups to name each test's scope, and a
    group marked after it is ignored (every test then goes wherever a worker is free, and each
    worker starts a stack of its own).

    A module's tests stay together, so its module fixtures are made once. The modules that use
    an offline stack run on one worker, one after another, with the stack that worker starts:
    its moto server runs in the worker's process, and moto's in-process mock, which integration
    and unit tests start, resets the whole process's moto state, the server's included. A module
    that names its own ``OFFLINE_STACK_GROUP`` gets a worker, and so a stack, of its own: one
    whose tests mostly wait (a renewal held for minutes) then runs beside the others instead of
    after them.

    The groups are handed out in the order of their first test (pyproject.toml turns off
    pytest-xdist's reordering by size), so the stacks' groups come first, the ones with a stack
    of their own first of all: the longest waits start at once, and the many small unit modules
    fill the end of the run.
    """
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    rank: dict[str, int] = {}
    for module, tests in by_module.items():
        uses_stack = any("offline_stack" in getattr(test, "fixturenames", ()) for test in tests)
        group, rank[module] = module, 2
        if uses_stack:
            owner = getattr(tests[0], "module", None)
            group = getattr(owner, "OFFLINE_STACK_GROUP", "offline-stack")
            rank[module] = 0 if hasattr(owner, "OFFLINE_STACK_GROUP") else 1
        for test in tests:
            test.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Stop the run when pytest-xdist ignored the groups above (on the controller, which
    schedules by the names each worker sends).

    A worker names each grouped test ``<test>@<group>``, and the controller schedules by that
    name; with pytest 9.2 the renaming silently does nothing (pytest-xdist issue 1386): every
    test then goes to any worker, each worker starts a stack of its own, and the run is minutes
    longer.
    """
    config = getattr(node, "config", None)
    if config is None or config.getvalue("dist") != "loadgroup":
        return  # another --dist, asked for on the command line: no groups to lose
    lost = [nodeid for nodeid in ids if "@" not in nodeid.rsplit("]", 1)[-1]]
    if lost:
        pytest.exit(
            f"pytest-xdist did not group {len(lost)} of {len(ids)} tests (first: {lost[0]}): "
            "use the pytest version requirements-dev.txt pins",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
