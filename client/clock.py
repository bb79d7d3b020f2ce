"""Injectable time for the client's routing: the system clock, and one tests move by hand.

Failover decisions (deadlines, backoff, circuit breakers, smoothed round-trip times)
read time only through a ``Clock``, so the whole retry logic can run under a
``ManualClock`` in tests, deterministically and without waiting (trio's
``MockClock``, TigerBeetle's ``TimeSim``). Times are seconds on a monotonic scale;
only differences mean anything.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of this clock's time."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to, for deterministic tests.

    ``sleep`` and ``sleep_async`` advance the clock by the requested amount at once
    and remember it in ``sleeps``, so a test can assert on the backoff a client chose
    without waiting for it.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)
        # Still yield to the event loop, as a real sleep would.
        await asyncio.sleep(0)
