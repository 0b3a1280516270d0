"""Time budget derived from the Lambda context: every wait in this package is bounded by it."""

from __future__ import annotations

import time
from typing import Protocol

from ca_registration.errors import DeadlineExceeded


class RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Budget:
    """Seconds left for work: the Lambda's remaining time minus a margin kept for answering."""

    def __init__(self, context: RemainingTime, margin_s: float) -> None:
        self._context = context
        self.margin_s = margin_s

    def seconds_left(self) -> float:
        return self._context.get_remaining_time_in_millis() / 1000.0 - self.margin_s

    def check(self, what: str) -> float:
        left = self.seconds_left()
        if left <= 0:
            raise DeadlineExceeded(f"ran out of time {what}")
        return left

    def sleep(self, seconds: float, what: str) -> None:
        """Sleep at most ``seconds`` and never past the budget; raise once the budget is gone."""
        left = self.check(what)
        time.sleep(max(0.0, min(seconds, left)))
        self.check(what)
