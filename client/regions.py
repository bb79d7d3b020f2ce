"""What the client knows about each region: distance, health, breaker, counters.

``RegionBook`` is the one shared, thread-safe record that every call, every retry
and the health checker update, and that orders candidate regions for a call:

1. regions whose breaker is OPEN are left out (they get no calls);
2. regions that look healthy (breaker CLOSED, last health check SERVING or none yet)
   come before doubtful ones (HALF_OPEN, or a failed/NOT_SERVING health check);
3. within a group, for a multi-region key the regions known to hold a replica first;
   then the preferred region if the caller named one; then by smoothed round-trip time
   (unmeasured regions last); then in configuration order.

Round-trip times come only from health checks (``grpc.health.v1.Health/Check``),
never from API calls, whose latency includes the server's work (an fsync, an RSA
key generation) and says little about distance.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from meridian.client.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from meridian.client.clock import Clock

__all__ = ["ClientStats", "RegionBook", "RegionStats"]

# Weight of a new round-trip sample in the smoothed value. TCP's SRTT uses 1/8; a
# client probes only every second or two, so it gives each sample more weight to
# notice a region that got slower within a few probes.
RTT_SMOOTHING = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionStats:
    """One region as this client sees it (``client.stats().regions[name]``)."""

    region: str
    rtt_ms: float | None  # smoothed round-trip time of health checks; None: not measured
    rtt_samples: int
    healthy: bool | None  # the last health check answered SERVING; None: none yet
    breaker: BreakerState
    calls: int  # attempts sent here, retries and hedges included
    successes: int
    unavailable: int  # attempts that failed with UNAVAILABLE or DEADLINE_EXCEEDED
    errors: int  # attempts the region answered with an error (it was up)
    hedges: int  # of ``calls``: second attempts sent here by hedging
    last_error: str | None  # "CODE: message" of the last failed attempt


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStats:
    """A snapshot of the client's routing (``client.stats()``)."""

    regions: dict[str, RegionStats]
    calls: int  # API calls made (each may take several attempts)
    retries: int  # attempts beyond each call's first
    failovers: int  # retries sent to another region than the attempt before
    hedges: int  # second attempts started by hedging
    hedge_wins: int  # hedged calls the second attempt answered first
    nearest: str | None  # where a call that may go anywhere would go now


@dataclass
class _Region:
    name: str
    index: int
    breaker: CircuitBreaker
    rtt_s: float | None = None
    rtt_samples: int = 0
    healthy: bool | None = None
    calls: int = 0
    successes: int = 0
    unavailable: int = 0
    errors: int = 0
    hedges: int = 0
    last_error: str | None = None


class RegionBook:
    def __init__(
        self,
        regions: Iterable[str],
        *,
        policy: BreakerPolicy,
        preferred_region: str | None,
        clock: Clock,
    ) -> None:
        self._regions = {
            name: _Region(name=name, index=index, breaker=CircuitBreaker(policy))
            for index, name in enumerate(regions)
        }
        self._preferred = preferred_region
        self._clock = clock
        self._lock = threading.Lock()
        self._calls = 0
        self._retries = 0
        self._failovers = 0
        self._hedges = 0
        self._hedge_wins = 0

    # ---- choosing ----------------------------------------------------------------------

    def order(self, candidates: Iterable[str], *, favoured: Collection[str] = ()) -> list[str]:
        """The candidates a call may use now, best first; regions with an open breaker
        are left out. ``favoured`` regions (known to hold the key) come first among
        equally healthy ones."""
        now = self._clock.monotonic()
        with self._lock:
            usable = [
                region
                for name in candidates
                if (region := self._regions[name]).breaker.state(now) is not BreakerState.OPEN
            ]
            usable.sort(key=lambda region: self._rank(region, now, favoured))
            return [region.name for region in usable]

    def _rank(
        self, region: _Region, now: float, favoured: Collection[str]
    ) -> tuple[int, int, int, float, int]:
        doubtful = region.breaker.state(now) is not BreakerState.CLOSED or region.healthy is False
        unknown = bool(favoured) and region.name not in favoured
        preferred = region.name == self._preferred
        rtt = region.rtt_s if region.rtt_s is not None else math.inf
        return (int(doubtful), int(unknown), int(not preferred), rtt, region.index)

    def acquire(self, region: str) -> bool:
        """Take the right to send to ``region`` (false while its breaker forbids it)."""
        now = self._clock.monotonic()
        with self._lock:
            return self._regions[region].breaker.acquire(now)

    def reopens_at(self, candidates: Iterable[str]) -> float | None:
        """The earliest time one of the candidates' open breakers lets a trial through."""
        now = self._clock.monotonic()
        with self._lock:
            times = [
                region.breaker.reopens_at()
                for name in candidates
                if (region := self._regions[name]).breaker.state(now) is BreakerState.OPEN
            ]
        return min(times, default=None)

    # ---- outcomes ------------------------------------------------------------------------

    def call_started(self) -> None:
        with self._lock:
            self._calls += 1

    def attempt_started(self, region: str, *, retry: bool, failover: bool, hedge: bool) -> None:
        with self._lock:
            entry = self._regions[region]
            entry.calls += 1
            if hedge:
                entry.hedges += 1
                self._hedges += 1
            if retry:
                self._retries += 1
            if failover:
                self._failovers += 1

    def hedge_won(self) -> None:
        with self._lock:
            self._hedge_wins += 1

    def succeeded(self, region: str) -> None:
        now = self._clock.monotonic()
        with self._lock:
            entry = self._regions[region]
            entry.successes += 1
            entry.breaker.record_success(now)

    def unavailable(self, region: str, description: str) -> None:
        """The region did not answer (UNAVAILABLE, DEADLINE_EXCEEDED)."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._regions[region]
            entry.unavailable += 1
            entry.last_error = description
            entry.breaker.record_failure(now)

    def answered_with_error(self, region: str, description: str) -> None:
        """The region answered, with an error: it is up, whatever it said."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._regions[region]
            entry.errors += 1
            entry.last_error = description
            entry.breaker.record_success(now)

    def abandoned(self, region: str) -> None:
        """An attempt was cancelled before it had an outcome (a hedge that lost)."""
        with self._lock:
            self._regions[region].breaker.release()

    def probed(self, region: str, *, rtt_s: float | None, serving: bool) -> None:
        """A health check's result: ``rtt_s`` None when the region did not answer."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._regions[region]
            entry.healthy = serving
            if rtt_s is not None:
                entry.rtt_s = (
                    rtt_s
                    if entry.rtt_s is None
                    else (1 - RTT_SMOOTHING) * entry.rtt_s + RTT_SMOOTHING * rtt_s
                )
                entry.rtt_samples += 1
            # A probe is a trial like any call: it may close a half-open breaker, and a
            # dead region opens the breaker even when no call goes there.
            if serving:
                entry.breaker.record_success(now)
            else:
                entry.breaker.record_failure(now)

    # ---- reading -------------------------------------------------------------------------

    def snapshot(self) -> ClientStats:
        order = self.order(self._regions)
        now = self._clock.monotonic()
        with self._lock:
            regions = {
                name: RegionStats(
                    region=name,
                    rtt_ms=None if entry.rtt_s is None else round(entry.rtt_s * 1000, 3),
                    rtt_samples=entry.rtt_samples,
                    healthy=entry.healthy,
                    breaker=entry.breaker.state(now),
                    calls=entry.calls,
                    successes=entry.successes,
                    unavailable=entry.unavailable,
                    errors=entry.errors,
                    hedges=entry.hedges,
                    last_error=entry.last_error,
                )
                for name, entry in self._regions.items()
            }
            return ClientStats(
                regions=regions,
                calls=self._calls,
                retries=self._retries,
                failovers=self._failovers,
                hedges=self._hedges,
                hedge_wins=self._hedge_wins,
                nearest=order[0] if order else None,
            )

    def rtt_s(self, region: str) -> float | None:
        with self._lock:
            return self._regions[region].rtt_s

    def breaker_states(self) -> Mapping[str, BreakerState]:
        now = self._clock.monotonic()
        with self._lock:
            return {name: entry.breaker.state(now) for name, entry in self._regions.items()}
