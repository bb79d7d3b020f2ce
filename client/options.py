"""How a client retries, fails over, hedges and checks health: ``RoutingOptions``.

    KmsClient.from_cluster_file(
        "cluster.json",
        routing=RoutingOptions(hedge_after_s=0.05, retry=RetryPolicy(attempts_max=3)),
    )

Every knob has a limit (STYLE.md 11) and a default that suits a cluster whose
regions answer within tens of milliseconds. Clock and randomness are injected here
too, so tests run the retry logic under a ``ManualClock`` and a seeded ``Random``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from meridian.client.breaker import BreakerPolicy
from meridian.client.clock import Clock, SystemClock
from meridian.client.errors import ClientConfigError

__all__ = ["BreakerPolicy", "RetryPolicy", "RoutingOptions"]

ATTEMPTS_MAX_LIMIT = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how fast one call is tried again.

    The call's deadline (``timeout_s``) covers every attempt and every pause; nothing
    here can make a call outlive it.

    - ``attempts_max``: attempts per call, the first included.
    - ``attempt_timeout_s``: an attempt that has not answered by then is given up, so
      that a region that hangs leaves time to try another; the last possible attempt
      gets whatever is left of the deadline instead. None: every attempt may use the
      whole remaining deadline.
    - ``backoff_base_s``, ``backoff_max_s``: the pause before a region is tried again
      is drawn uniformly from ``[0, min(backoff_max_s, backoff_base_s * 2**n)]``
      ("full jitter"), n counting the rounds over the candidate regions. Moving on to
      another region that has not been tried in this round needs no pause.
    """

    attempts_max: int = 5
    attempt_timeout_s: float | None = 2.0
    backoff_base_s: float = 0.025
    backoff_max_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts_max <= ATTEMPTS_MAX_LIMIT:
            raise ClientConfigError(f"attempts_max must be between 1 and {ATTEMPTS_MAX_LIMIT}")
        if self.attempt_timeout_s is not None:
            _positive("attempt_timeout_s", self.attempt_timeout_s)
        _positive("backoff_base_s", self.backoff_base_s)
        _positive("backoff_max_s", self.backoff_max_s)

    def backoff_s(self, round_number: int, rng: random.Random) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(round_number, 30))
        return rng.uniform(0, ceiling)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingOptions:
    """Routing, failover and health checking of one client.

    - ``retry``, ``breaker``: see ``RetryPolicy`` and ``BreakerPolicy``.
    - ``hedge_after_s``: for the idempotent reads the retry table marks (Decrypt,
      DescribeKey, ...), start a second attempt in the next region when the first has
      not answered after this long; the first answer wins. None (default): no hedging.
    - ``health_check_interval_s``: how often a background thread (KmsClient) or task
      (AsyncKmsClient) measures each region's round-trip time with a gRPC health
      check, started with the first call. None: no background checks
      (``check_health()`` still measures on demand).
    - ``health_check_timeout_s``: a region that has not answered a check by then
      counts as down.
    - ``idempotency_tokens``: send an idempotency token with every operation that is
      not repeatable (CreateKey, CreateAlias, ScheduleKeyDeletion, ...) so that it can
      be retried in its region without acting twice. False: such calls are tried once.
    - ``clock``, ``rng``: injected time and randomness for jitter, so tests can run the
      retry logic deterministically; ``randbytes`` makes idempotency tokens, which must
      be unique across processes, so it stays a secure source unless a test replaces it.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    hedge_after_s: float | None = None
    health_check_interval_s: float | None = 2.0
    health_check_timeout_s: float = 1.0
    idempotency_tokens: bool = True
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    randbytes: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        if self.hedge_after_s is not None:
            _positive("hedge_after_s", self.hedge_after_s)
        if self.health_check_interval_s is not None:
            _positive("health_check_interval_s", self.health_check_interval_s)
        _positive("health_check_timeout_s", self.health_check_timeout_s)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ClientConfigError(f"{name} must be a positive number of seconds, not {value}")
