"""One call's tries, as a sans-IO state machine shared by both twins.

The twins' ``_invoke`` loops (``_failover.py``) ask ``CallPlan.next_step()`` what to
do — send an ``Attempt`` to a region, sleep a ``Backoff``, or ``GiveUp`` with an
error — do it, and report each outcome back (``succeeded``/``failed``/``abandoned``).
All decisions live here, reading time only through the injected clock, so they run
the same for KmsClient and AsyncKmsClient and deterministically under a ManualClock.

The rules (DESIGN.md §6, STYLE.md 14), driven by the operation table in ``_core``:

- One deadline (``timeout_s``) covers every attempt and pause of a call.
- UNAVAILABLE and DEADLINE_EXCEEDED (no answer) are retried if the operation is
  ``repeatable``, or carries an idempotency token the server de-duplicates. A
  repeatable call whose placement allows several regions moves on at once to the next
  region not tried in this round (failover); once every candidate was tried it pauses
  with jittered exponential backoff and starts another round.
- A call that is not repeatable stays in one region: idempotency tokens are
  de-duplicated per region, so only there is a retry known not to act twice.
- ThrottlingException is retried the same way (the call was refused, not run).
- A call on multi-region keys (placement REPLICA) that meets NotFoundException or
  KMSInvalidStateException in one region — no replica there, or one still being
  created — tries the next region; the error is raised only if no region can serve.
- Every other error is the region's answer and ends the call at once.
- Regions whose circuit breaker is open get no attempts; if every candidate's is
  open, the call waits for the first trial only if it comes within ``backoff_max_s``
  (and the deadline), else fails at once: a dead region costs its callers little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

from meridian.client.errors import (
    KmsError,
    KMSInvalidStateException,
    NotFoundException,
    ServiceUnavailableError,
    ThrottlingException,
)
from meridian.client.options import RoutingOptions
from meridian.client.regions import RegionBook
from meridian.client.routing import ReplicaDirectory, Route

__all__ = ["TOKEN_METADATA_KEY", "Attempt", "Backoff", "CallPlan", "GiveUp"]

RequestT = TypeVar("RequestT", bound=Message)

# gRPC metadata that carries a creating call's idempotency token
# (docs/contributors/shared-contracts.md); the server de-duplicates on it.
TOKEN_METADATA_KEY = "x-meridian-idempotency-token"  # noqa: S105 - a header name

_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send the call to ``region``; give up on it after ``timeout_s``. With a
    ``hedge_region``, start a second attempt there if no answer came within
    ``hedge_after_s`` (ask ``begin_hedge`` first)."""

    region: str
    timeout_s: float
    hedge_region: str | None = None
    hedge_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    error: KmsError


Step = Attempt | Backoff | GiveUp


class CallPlan(Generic[RequestT]):
    def __init__(
        self,
        *,
        operation: str,
        request: RequestT,
        route: Route,
        repeatable: bool,
        hedge: bool,
        timeout_s: float,
        options: RoutingOptions,
        book: RegionBook,
        directory: ReplicaDirectory,
    ) -> None:
        self.operation = operation
        self._request = request
        self._route = route
        self._options = options
        self.clock = options.clock
        self._clock = options.clock
        self._book = book
        self._directory = directory
        self.deadline = self._clock.monotonic() + timeout_s
        token = options.idempotency_tokens and not repeatable
        self.metadata: tuple[tuple[str, str], ...] | None = (
            ((TOKEN_METADATA_KEY, options.randbytes(16).hex()),) if token else None
        )
        self._may_retry = repeatable or token
        # Only a repeatable call may move to another region (see the module docstring).
        self._failover = repeatable and route.spread
        self._hedge_after_s = options.hedge_after_s if hedge and self._failover else None
        self._candidates: tuple[str, ...] = route.candidates
        self._requests: dict[str, RequestT] = {}
        self._attempts = 0
        self._round = 0
        self._tried: set[str] = set()
        self._excluded: set[str] = set()
        self._previous_region: str | None = None
        self._last_error: KmsError | None = None
        self._replica_error: KmsError | None = None
        self._final: KmsError | None = None
        book.call_started()

    @property
    def is_final(self) -> bool:
        """The call has its answer: an error that no other attempt can change."""
        return self._final is not None

    def request_for(self, region: str) -> RequestT:
        """The request as sent to ``region`` (an MRK's ARN rewritten to name it)."""
        rewrites = [(name, ref) for name, ref in self._route.rewrites if ref.arn_region != region]
        if not rewrites:
            return self._request
        request = self._requests.get(region)
        if request is None:
            request = type(self._request)()
            request.CopyFrom(self._request)
            for name, ref in rewrites:
                setattr(request, name, ref.in_region(region))
            self._requests[region] = request
        return request

    # ---- deciding ------------------------------------------------------------------------

    def next_step(self) -> Step:
        if self._final is not None:
            return GiveUp(self._final)
        now = self._clock.monotonic()
        remaining = self.deadline - now
        if remaining <= 0:
            return GiveUp(self._last_error or self._no_time_error())
        if self._attempts >= self._options.retry.attempts_max:
            return GiveUp(self._last_error or self._no_time_error())
        allowed = [region for region in self._candidates if region not in self._excluded]
        if not allowed:
            return GiveUp(self._replica_error or self._last_error or self._no_time_error())
        if not self._failover and self._previous_region is not None:
            # Fixed to the region of its first attempt (a token is valid only there).
            allowed = [self._previous_region]
        order = self._book.order(allowed, favoured=self._route.known_replicas)
        fresh = [region for region in order if region not in self._tried]
        for region in fresh:
            if self._book.acquire(region):
                return self._attempt(region, fresh, remaining)
        if order:
            # Every usable region was tried in this round: pause, then another round.
            delay = self._options.retry.backoff_s(self._round, self._options.rng)
            self._round += 1
            self._tried.clear()
            if delay >= remaining:
                return GiveUp(self._last_error or self._no_time_error())
            return Backoff(delay)
        reopens_at = self._book.reopens_at(allowed)
        # Worth waiting for the trial only if it comes about as soon as a backoff would:
        # an open breaker is there to make calls to a dead region fail fast.
        if (
            reopens_at is not None
            and reopens_at - now < remaining
            and reopens_at - now <= self._options.retry.backoff_max_s
        ):
            self._tried.clear()
            return Backoff(reopens_at - now)
        return GiveUp(self._last_error or self._circuit_open_error(allowed))

    def _attempt(self, region: str, fresh: list[str], remaining: float) -> Attempt:
        retry = self._attempts > 0
        failover = retry and region != self._previous_region
        self._attempts += 1
        self._tried.add(region)
        self._previous_region = region
        self._book.attempt_started(region, retry=retry, failover=failover, hedge=False)
        timeout = self._attempt_timeout(remaining)
        hedge_region = None
        if self._hedge_after_s is not None and self._hedge_after_s < timeout:
            hedge_region = next((other for other in fresh if other != region), None)
        return Attempt(
            region=region,
            timeout_s=timeout,
            hedge_region=hedge_region,
            hedge_after_s=self._hedge_after_s if hedge_region is not None else None,
        )

    def _attempt_timeout(self, remaining: float) -> float:
        per_attempt = self._options.retry.attempt_timeout_s
        last_possible = self._attempts >= self._options.retry.attempts_max or not self._may_retry
        if per_attempt is None or last_possible:
            return remaining
        return min(remaining, per_attempt)

    def begin_hedge(self, region: str) -> float | None:
        """Start the hedge attempt to ``region``; its timeout, or None if it may not go."""
        remaining = self.deadline - self._clock.monotonic()
        if (
            remaining <= 0
            or region in self._tried
            or self._attempts >= self._options.retry.attempts_max
            or not self._book.acquire(region)
        ):
            return None
        self._attempts += 1
        self._tried.add(region)
        self._book.attempt_started(region, retry=False, failover=False, hedge=True)
        return self._attempt_timeout(remaining)

    # ---- outcomes ------------------------------------------------------------------------

    def succeeded(self, region: str, response: object, *, hedge: bool = False) -> None:
        self._book.succeeded(region)
        if hedge:
            self._book.hedge_won()
        self._directory.learn(response)

    def failed(self, region: str, error: KmsError) -> None:
        self._last_error = error
        description = f"{error.code.name}: {error.message}"
        no_answer = error.code in _NO_ANSWER
        if no_answer and not error.reason:
            self._book.unavailable(region, description)
        else:
            # The region answered (DependencyTimeoutException travels as UNAVAILABLE but
            # is a live region's answer): it is up, whatever it said.
            self._book.answered_with_error(region, description)
        if no_answer:
            if not self._may_retry:
                self._final = error
            return
        if isinstance(error, ThrottlingException):
            return
        mrk = self._route.mrk_key_id
        if (
            mrk is not None
            and self._failover
            and isinstance(error, NotFoundException | KMSInvalidStateException)
        ):
            if isinstance(error, NotFoundException):
                self._directory.mark_absent(mrk, region)
            self._excluded.add(region)
            self._replica_error = self._replica_error or error
            return
        self._final = error

    def abandoned(self, region: str) -> None:
        """An attempt was cancelled without an outcome (the other hedge answered)."""
        self._book.abandoned(region)

    # ---- errors the plan makes itself ----------------------------------------------------

    def _no_time_error(self) -> KmsError:
        return ServiceUnavailableError(
            f"{self.operation} found no region to try within its deadline",
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            operation=self.operation,
        )

    def _circuit_open_error(self, regions: list[str]) -> KmsError:
        return ServiceUnavailableError(
            f"{self.operation} was not sent: the circuit breaker is open for "
            f"{', '.join(regions)} (the region failed repeatedly)",
            code=grpc.StatusCode.UNAVAILABLE,
            operation=self.operation,
            region=regions[0] if len(regions) == 1 else None,
        )
