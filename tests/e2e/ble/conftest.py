"""Fixtures for the BLE end-to-end tests (helpers live in procs.py)."""

from .procs import broker, pinned_ca, procs, stack  # noqa: F401 - pytest fixtures
