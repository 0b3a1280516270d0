"""Fixtures the unit tests share."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509

from tests.support.device_answers import make_ca


@pytest.fixture
def ca() -> tuple[Any, x509.Certificate]:
    """A fresh root CA for one test: its private key and its certificate."""
    return make_ca()
