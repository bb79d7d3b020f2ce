"""When may a chunk of a TCP stream arrive? The proxy's decisions, without any I/O.

The proxy reads a chunk from one side at time `now_s` and asks :class:`Direction` when it
may be written to the other side. The answer models one direction of a link:

- bandwidth: the direction is a single transmitter shared by all of the link's
  connections; a chunk starts when the previous one has left and takes
  `size * 8 / bandwidth` seconds to send;
- latency and jitter: then it travels `latency +/- jitter` (never below zero);
- loss: each 1460-byte segment is lost with `loss_percent` probability; TCP resends a
  lost segment after a retransmission timeout (200 ms, the Linux minimum, plus a round
  trip), doubling on each repeated loss, so loss shows up as delay, never as corruption;
- order: a stream's bytes arrive in the order sent, so no chunk is delivered before
  the previous chunk of the same connection (`not_before_s`).

Partitions are not decided here: they hold data at the proxy's gate (cli/netem/proxy.py).
Time and randomness come from the caller, so tests run this on a fake clock with a
seeded generator and measure exact numbers.
"""

from __future__ import annotations

import dataclasses
import random

from meridian.cli.netem.shape import LinkShape

__all__ = ["RETRANSMISSIONS_MAX", "RTO_MIN_S", "SEGMENT_BYTES", "Delivery", "Direction"]

SEGMENT_BYTES = 1460
RTO_MIN_S = 0.2
# TCP would try longer, but the chance of more consecutive losses is negligible at any
# loss rate this proxy accepts (99% at most), and a bound keeps one chunk's delay finite.
RETRANSMISSIONS_MAX = 6


@dataclasses.dataclass(frozen=True)
class Delivery:
    at_s: float
    retransmissions: int


class Direction:
    """One direction of one link: its transmitter (bandwidth) and its dice (jitter, loss)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._busy_until_s = 0.0

    def schedule(
        self, shape: LinkShape, now_s: float, size_bytes: int, not_before_s: float = 0.0
    ) -> Delivery:
        """When a chunk of `size_bytes` read at `now_s` may be delivered."""
        assert size_bytes >= 0
        if shape.bandwidth_kbps is None:
            # Unlimited: no transmitter queue; a backlog left by an earlier limit is dropped.
            self._busy_until_s = now_s
        else:
            start_s = max(now_s, self._busy_until_s)
            self._busy_until_s = start_s + size_bytes * 8 / (shape.bandwidth_kbps * 1000)
        latency_s = shape.latency_ms / 1000
        travel_s = latency_s
        if shape.jitter_ms:
            jitter_s = shape.jitter_ms / 1000
            travel_s = max(0.0, latency_s + self._rng.uniform(-jitter_s, jitter_s))
        retransmissions = self._retransmissions(shape, size_bytes)
        # A retransmission timeout is at least RTO_MIN_S plus one round trip.
        timeout_s = RTO_MIN_S + 2 * latency_s
        penalty_s = sum(timeout_s * 2**attempt for attempt in range(retransmissions))
        arrival_s = self._busy_until_s + travel_s + penalty_s
        return Delivery(at_s=max(arrival_s, not_before_s), retransmissions=retransmissions)

    def _retransmissions(self, shape: LinkShape, size_bytes: int) -> int:
        if not shape.loss_percent:
            return 0
        loss = shape.loss_percent / 100
        segments = max(1, -(-size_bytes // SEGMENT_BYTES))
        if self._rng.random() >= 1 - (1 - loss) ** segments:
            return 0
        # The resent segment can be lost again; each repeat doubles the timeout.
        count = 1
        while count < RETRANSMISSIONS_MAX and self._rng.random() < loss:
            count += 1
        return count
