"""A per-region circuit breaker: closed, open, half-open.

    CLOSED --(failures_to_open transport failures in a row)--> OPEN
    OPEN --(open_s elapsed)--> HALF_OPEN
    HALF_OPEN --(the one trial succeeds)--> CLOSED
    HALF_OPEN --(the trial fails)--> OPEN, for twice as long (up to open_s_max)

Only transport failures count (UNAVAILABLE, DEADLINE_EXCEEDED, a failed health
check): a region that answers with an error, even a refusal, is up. While a breaker
is OPEN the region gets no calls, so a dead region costs callers nothing; after
``open_s`` one trial is let through, which is a real call or the health checker's
probe, whichever comes first. The breaker is a plain state machine over times the
caller passes in: it reads no clock and takes no lock (``RegionBook`` holds one).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from meridian.client.errors import ClientConfigError

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a region's breaker opens and how long it stays open.

    ``failures_to_open``: transport failures in a row that open the breaker.
    ``open_s``: how long it stays open the first time; each failed trial doubles it,
    up to ``open_s_max``, and a success resets it.
    """

    failures_to_open: int = 3
    open_s: float = 1.0
    open_s_max: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.failures_to_open <= 1000:
            raise ClientConfigError("failures_to_open must be between 1 and 1000")
        if not (math.isfinite(self.open_s) and 0 < self.open_s <= self.open_s_max):
            raise ClientConfigError("open_s must be positive and at most open_s_max")
        if not math.isfinite(self.open_s_max):
            raise ClientConfigError("open_s_max must be finite")


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._state = BreakerState.CLOSED
        self._failures_in_row = 0
        self._open_s = policy.open_s
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.transitions = 0

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self.reopens_at():
            self._move(BreakerState.HALF_OPEN)
            self._trial_in_flight = False
        return self._state

    def reopens_at(self) -> float:
        """When an OPEN breaker lets a trial through (meaningless in other states)."""
        return self._opened_at + self._open_s

    def acquire(self, now: float) -> bool:
        """May a call go to this region now? In HALF_OPEN this takes the one trial."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def release(self) -> None:
        """A call let through by ``acquire`` ended without an outcome (cancelled)."""
        self._trial_in_flight = False

    def record_success(self, now: float) -> None:
        state = self.state(now)
        if state is BreakerState.OPEN:
            # A late answer from before the breaker opened proves little: the
            # region failed since. Only the trial after open_s may close it.
            return
        self._failures_in_row = 0
        self._trial_in_flight = False
        self._open_s = self._policy.open_s
        if state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            self._open_s = min(self._open_s * 2, self._policy.open_s_max)
            self._open(now)
            return
        self._failures_in_row += 1
        if self._failures_in_row >= self._policy.failures_to_open:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures_in_row = 0
        self._trial_in_flight = False
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self.transitions += 1
