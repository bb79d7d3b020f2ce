"""One shipper per peer: a state machine that says what to send next, and when.

The shipper never awaits or sleeps; its driver (the node's engine or the simulation) asks
``next_action(now, ...)``, performs it, and reports the outcome. Time is plain seconds of
the driver's clock; jitter comes from the injected ``random.Random``.

Protocol with one peer:

1. ``Hello`` learns the peer's acknowledged position of this region's log (and exchanges
   node identities). It is sent at start and after every failure, so the shipper always
   resumes from what the peer durably applied, after a restart of either side.
2. ``SendEntries(first, last)`` ships at most ``batch_entries_max`` entries after the
   position. The peer answers with its new position, or with its actual position if the
   batch does not follow it (a gap); either way the shipper continues from there.
3. If the peer's position is behind the retained tail of the log (older entries were
   pruned), ``SendSnapshot`` ships every key's current state in chunks of keys, then the
   log from the snapshot's position.
4. A failure (timeout, refused, unreachable) backs off exponentially with jitter, between
   ``backoff_initial_s`` and ``backoff_max_s`` (``backoff_recent_max_s`` for a peer reached
   within the last ``recent_contact_s``), then starts again at 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from meridian.server.domain.multi_region import SharedState


@dataclass(frozen=True, slots=True)
class ShipperLimits:
    # A batch holds at most this many entries; the engine also stops at ~512 KiB. A peer
    # that is up to date gets what was appended since its last batch (usually a few
    # entries); a peer catching up gets full batches: fewer round trips, signatures,
    # transactions and fsyncs per entry.
    batch_entries_max: int = 1000
    snapshot_keys_max: int = 1000
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 10.0
    # A peer reached within the last ``recent_contact_s`` is most likely restarting or
    # briefly cut off: its retries back off to at most ``backoff_recent_max_s``, so that
    # it is reached again within about a second of coming back (the retry of a peer that
    # is still down costs one failed connection attempt).
    backoff_recent_max_s: float = 1.0
    recent_contact_s: float = 300.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_entries_max <= 10_000 or not 1 <= self.snapshot_keys_max <= 10_000:
            raise ValueError("batch sizes must be 1 to 10000")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("0 < backoff_initial_s <= backoff_max_s")
        if self.backoff_recent_max_s <= 0:
            raise ValueError("backoff_recent_max_s must be positive")
        if self.recent_contact_s < 0:
            raise ValueError("recent_contact_s must not be negative")


class ConnectionState(StrEnum):
    NEW = "new"  # not reached since this node started
    CONNECTED = "connected"  # the last exchange succeeded
    BACKING_OFF = "backing-off"  # the last exchange failed; waiting to retry


@dataclass(frozen=True, slots=True)
class Hello:
    pass


@dataclass(frozen=True, slots=True)
class SendEntries:
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class SendSnapshot:
    through_seq: int
    after_key_id: str


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do until ``until`` (seconds), or until woken (None)."""

    until: float | None


Action = Hello | SendEntries | SendSnapshot | Idle


@dataclass(slots=True)
class _Snapshot:
    through_seq: int
    after_key_id: str


class PeerShipper:
    def __init__(self, peer: str, limits: ShipperLimits, rng: random.Random) -> None:
        self.peer = peer
        self.limits = limits
        self._rng = rng
        # The peer's acknowledged position of this log; None: unknown, ask with Hello.
        self.position: int | None = None
        self.state = ConnectionState.NEW
        self.failures = 0
        self.retry_at = 0.0
        self.in_flight = False
        self.last_error = ""
        self.last_contact_at: float | None = None
        self._snapshot: _Snapshot | None = None

    @property
    def snapshotting(self) -> bool:
        return self._snapshot is not None

    def next_action(self, now: float, *, retained_first_seq: int, head_seq: int) -> Action:
        """What to do now. ``retained_first_seq`` is the oldest seq still in the outbox
        (``head_seq + 1`` when it is empty); ``head_seq`` the newest ever appended."""
        if self.in_flight:
            return Idle(None)
        if now < self.retry_at:
            return Idle(self.retry_at)
        if self.position is None:
            self.in_flight = True
            return Hello()
        if self._snapshot is None and self.position < retained_first_seq - 1:
            self._snapshot = _Snapshot(through_seq=head_seq, after_key_id="")
        if self._snapshot is not None:
            self.in_flight = True
            return SendSnapshot(self._snapshot.through_seq, self._snapshot.after_key_id)
        if self.position < head_seq:
            self.in_flight = True
            last = min(head_seq, self.position + self.limits.batch_entries_max)
            return SendEntries(self.position + 1, last)
        return Idle(None)

    def on_position(self, now: float, position: int) -> None:
        """The peer answered (Hello, an acknowledgement, or a gap) with its position."""
        self.in_flight = False
        self.position = position
        self._connected(now)

    def on_snapshot_chunk(
        self, now: float, *, next_after_key_id: str | None, position: int
    ) -> None:
        """A snapshot chunk was applied; ``next_after_key_id`` None means it was the last."""
        self.in_flight = False
        if next_after_key_id is None:
            self._snapshot = None
        elif self._snapshot is not None:
            self._snapshot.after_key_id = next_after_key_id
        self.position = position
        self._connected(now)

    def on_failure(self, now: float, error: str) -> None:
        self.in_flight = False
        self.failures += 1
        self.last_error = error
        self.state = ConnectionState.BACKING_OFF
        # After a failure the peer may have restarted or the link changed: resume from
        # what the peer says it applied (Hello), and start any snapshot over.
        self.position = None
        self._snapshot = None
        exponent = min(self.failures - 1, 30)
        delay_s = min(self._backoff_cap_s(now), self.limits.backoff_initial_s * 2**exponent)
        # "Equal jitter": at least half the delay, so retries spread out but never storm.
        self.retry_at = now + delay_s * self._rng.uniform(0.5, 1.0)

    def _backoff_cap_s(self, now: float) -> float:
        contact = self.last_contact_at
        if contact is not None and now - contact <= self.limits.recent_contact_s:
            return min(self.limits.backoff_recent_max_s, self.limits.backoff_max_s)
        return self.limits.backoff_max_s

    def _connected(self, now: float) -> None:
        # ``last_error`` means "since the last success": a connected peer has none.
        self.last_error = ""
        self.failures = 0
        self.retry_at = 0.0
        self.state = ConnectionState.CONNECTED
        self.last_contact_at = now


def prune_through(acked: list[int], *, head_seq: int, retained_entries_max: int) -> int:
    """The highest seq the outbox may delete: everything every peer acknowledged, and in any
    case all but the newest ``retained_entries_max`` (a peer that far behind gets a
    snapshot instead)."""
    floor = min(acked) if acked else head_seq
    return max(0, floor, head_seq - retained_entries_max)


def wants_material(destination: str, *views: SharedState | None) -> bool:
    """Key material goes only to a region that is a live member of the key in one of the
    given views (the record's, or the sender's current one): never to a region that holds
    no related key, whatever the record is about."""
    return any(view is not None and view.is_alive_member(destination) for view in views)
