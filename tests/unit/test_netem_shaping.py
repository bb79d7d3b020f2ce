"""The proxy's scheduling decisions on a fake clock: exact numbers, no sleeping."""

from __future__ import annotations

import random
import statistics

import pytest

from meridian.cli.netem.shape import LinkId, LinkShape, ShapeChange, ShapeError
from meridian.cli.netem.shaping import RETRANSMISSIONS_MAX, RTO_MIN_S, Direction


def direction(seed: int = 7) -> Direction:
    return Direction(random.Random(seed))


def test_an_unshaped_link_delivers_at_once() -> None:
    assert direction().schedule(LinkShape(), 12.5, 1000).at_s == 12.5


def test_latency_delays_every_chunk_by_the_one_way_delay() -> None:
    shape = LinkShape(latency_ms=80)
    link = direction()
    for now_s in (0.0, 0.01, 3.0):
        assert link.schedule(shape, now_s, 500).at_s == pytest.approx(now_s + 0.080)


def test_jitter_stays_within_its_bound_and_never_goes_negative() -> None:
    link = direction()
    shape = LinkShape(latency_ms=50, jitter_ms=10)
    delays = [link.schedule(shape, 100.0, 100).at_s - 100.0 for _ in range(2000)]
    assert min(delays) >= 0.040 - 1e-9
    assert max(delays) <= 0.060 + 1e-9
    # Uniform around the latency: the spread is real, the centre is the latency.
    assert statistics.mean(delays) == pytest.approx(0.050, abs=0.001)
    assert statistics.pstdev(delays) > 0.004

    small = LinkShape(latency_ms=1, jitter_ms=5)
    assert min(link.schedule(small, 0.0, 1).at_s for _ in range(2000)) == 0.0


def test_chunks_of_one_stream_never_overtake_each_other() -> None:
    link = direction()
    shape = LinkShape(latency_ms=20, jitter_ms=20)
    last_s = 0.0
    for step in range(500):
        delivery = link.schedule(shape, step * 0.001, 10, not_before_s=last_s)
        assert delivery.at_s >= last_s
        last_s = delivery.at_s


def test_bandwidth_serializes_chunks_on_a_shared_transmitter() -> None:
    link = direction()
    # 80 kbit/s = 10,000 bytes/s: a 1000-byte chunk takes 0.1 s to send.
    shape = LinkShape(latency_ms=5, bandwidth_kbps=80)
    arrivals = [link.schedule(shape, 0.0, 1000).at_s for _ in range(10)]
    assert arrivals == pytest.approx([0.1 * (index + 1) + 0.005 for index in range(10)])
    # Another connection on the same direction waits behind the backlog.
    assert link.schedule(shape, 0.0, 1000).at_s == pytest.approx(1.105)
    # Once the transmitter is idle, a chunk only pays its own transmission time.
    assert link.schedule(shape, 10.0, 500).at_s == pytest.approx(10.055)


def test_loss_becomes_retransmission_delay() -> None:
    link = direction(seed=3)
    shape = LinkShape(latency_ms=10, loss_percent=10)
    deliveries = [link.schedule(shape, 0.0, 1460) for _ in range(5000)]
    lost = [delivery for delivery in deliveries if delivery.retransmissions]
    # One segment per chunk: about 10% of chunks lose it at least once.
    assert 350 < len(lost) < 650
    timeout_s = RTO_MIN_S + 2 * 0.010
    for delivery in deliveries:
        expected_s = 0.010 + sum(timeout_s * 2**n for n in range(delivery.retransmissions))
        assert delivery.at_s == pytest.approx(expected_s)
    assert all(d.retransmissions <= RETRANSMISSIONS_MAX for d in deliveries)
    # Repeated losses happen (10% of the lost ones lose the resend too), and cost double.
    assert any(delivery.retransmissions >= 2 for delivery in lost)


def test_larger_chunks_are_hit_by_loss_more_often() -> None:
    link = direction(seed=11)
    shape = LinkShape(loss_percent=2)
    small = sum(bool(link.schedule(shape, 0.0, 100).retransmissions) for _ in range(4000))
    large = sum(bool(link.schedule(shape, 0.0, 64 * 1024).retransmissions) for _ in range(4000))
    # One segment (2%) against 45 segments (1 - 0.98**45, about 60%).
    assert small < 160
    assert large > 2000


def test_no_loss_means_no_retransmissions() -> None:
    link = direction()
    assert not any(link.schedule(LinkShape(), 0.0, 65536).retransmissions for _ in range(1000))


def test_link_names_are_undirected_and_put_the_client_first() -> None:
    assert LinkId.between("us-east-1", "eu-west-1") == LinkId.between("eu-west-1", "us-east-1")
    assert str(LinkId.between("us-east-1", "eu-west-1")) == "eu-west-1<->us-east-1"
    assert str(LinkId.between("us-east-1", "client")) == "client<->us-east-1"
    assert LinkId.parse("us-east-1<->client").is_client
    assert LinkId.parse("a-b-1<->c-d-2") == LinkId("a-b-1", "c-d-2")
    with pytest.raises(ShapeError, match="not a link name"):
        LinkId.parse("us-east-1")
    with pytest.raises(ShapeError, match="itself"):
        LinkId.between("us-east-1", "us-east-1")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"latency_ms": -1}, "latency_ms must be between 0 and 60000"),
        ({"jitter_ms": float("nan")}, "jitter_ms must be between"),
        ({"loss_percent": 100}, "loss_percent must be between 0 and 99"),
        ({"bandwidth_kbps": 0}, "bandwidth_kbps must be between 1"),
        ({"latency_ms": "fast"}, "latency_ms must be a number"),
        ({"partitioned": 1}, "partitioned must be true or false"),
        ({"delay": 1}, "unknown link setting"),
    ],
)
def test_impossible_shapes_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        LinkShape.from_json(settings)


def test_a_change_keeps_what_it_does_not_name() -> None:
    shape = LinkShape(latency_ms=38, jitter_ms=2, bandwidth_kbps=512)
    assert ShapeChange(partitioned=True).apply(shape) == LinkShape(
        latency_ms=38, jitter_ms=2, bandwidth_kbps=512, partitioned=True
    )
    assert ShapeChange(latency_ms=80, bandwidth_kbps=0).apply(shape) == LinkShape(
        latency_ms=80, jitter_ms=2
    )
    assert ShapeChange().is_empty
    assert not ShapeChange(partitioned=False).is_empty
    assert LinkShape.from_json(shape.to_json()) == shape
    assert shape.describe() == "38 ms +/- 2 ms, 512 kbit/s"
    assert LinkShape(loss_percent=1, partitioned=True).describe() == "0 ms, 1% loss, PARTITIONED"
