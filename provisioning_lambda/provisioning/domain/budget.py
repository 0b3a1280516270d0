"""The time a request may still spend, shared by the domain and the AWS adapters.

Figures (the function's Timeout is 25 s, API Gateway gives up at 29 s):

- one AWS attempt takes at most ``ATTEMPT_SECONDS`` (1 s to connect + 3 s to read);
- the request stops ``HARD_STOP_SECONDS`` before the function's timeout: no attempt starts
  unless it can end before then, and no retry is made that could not;
- a forward step starts only while ``FORWARD_RESERVE_SECONDS`` remain, enough for two
  worst-case attempts of the rollback; whatever the rollback cannot finish in time stays in the
  device row's intent, for the next request or the sweeper (see lease.py);
- the lease is held for the time left plus ``LEASE_MARGIN_SECONDS``, so it outlives the longest
  the request can run, even when Lambda kills it at its timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from provisioning.domain.errors import OutOfTime

ATTEMPT_SECONDS = 4.0
HARD_STOP_SECONDS = 1.0
FORWARD_RESERVE_SECONDS = 2 * ATTEMPT_SECONDS + HARD_STOP_SECONDS
LEASE_MARGIN_SECONDS = 5


class Budget:
    """What is left of the Lambda's time, up to the hard stop before its timeout."""

    def __init__(self, remaining_ms: Callable[[], int]) -> None:
        self._remaining_ms = remaining_ms

    def seconds_left(self) -> float:
        return self._remaining_ms() / 1000 - HARD_STOP_SECONDS

    def lease_seconds(self) -> int:
        """How long a lease taken now must last: past the moment Lambda would kill us."""
        return int(self._remaining_ms() / 1000 + LEASE_MARGIN_SECONDS + 0.999)

    def allows(self, seconds: float) -> bool:
        return self.seconds_left() >= seconds

    def require(self, step: str, seconds: float = FORWARD_RESERVE_SECONDS) -> None:
        if not self.allows(seconds):
            raise OutOfTime(step)
