"""The pieces of routing on their own: circuit breaker, region book, backoff, routes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from meridian.client import UnknownRegionError
from meridian.client.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from meridian.client.clock import ManualClock
from meridian.client.errors import ClientConfigError
from meridian.client.options import RetryPolicy, RoutingOptions
from meridian.client.regions import RegionBook
from meridian.client.routing import KeyRef, Placement, ReplicaDirectory, blob_key_id, route
from meridian.proto.kms.v1 import kms_pb2

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
ACCOUNT = "111122223333"
MRK = "mrk-" + "1a" * 16
UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ciphertext_v1.json"


def _arn(region: str, key_id: str) -> str:
    return f"arn:meridian:kms:{region}:{ACCOUNT}:key/{key_id}"


# ---- circuit breaker ------------------------------------------------------------------


def test_breaker_opens_after_failures_in_a_row_and_successes_reset_the_count() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures_to_open=3, open_s=1.0))
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    breaker.record_success(0.0)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.record_failure(0.5)
    assert breaker.state(0.5) is BreakerState.OPEN
    assert not breaker.acquire(1.49)
    assert breaker.reopens_at() == 1.5


def test_half_open_lets_exactly_one_trial_through() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures_to_open=1, open_s=1.0))
    breaker.record_failure(0.0)
    assert breaker.state(1.0) is BreakerState.HALF_OPEN
    assert breaker.acquire(1.0)
    assert not breaker.acquire(1.0)  # the trial is in flight
    breaker.release()  # it was cancelled: another may try
    assert breaker.acquire(1.0)
    breaker.record_success(1.1)
    assert breaker.state(1.1) is BreakerState.CLOSED
    assert breaker.acquire(1.1) and breaker.acquire(1.1)


def test_a_failed_trial_reopens_for_twice_as_long_up_to_the_cap() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures_to_open=1, open_s=1.0, open_s_max=3.0))
    breaker.record_failure(0.0)
    now = 0.0
    open_times = []
    for _ in range(4):
        now = breaker.reopens_at()
        assert breaker.acquire(now)
        breaker.record_failure(now)
        open_times.append(breaker.reopens_at() - now)
    assert open_times == [2.0, 3.0, 3.0, 3.0]
    # A success resets the open time to the policy's first value.
    now = breaker.reopens_at()
    assert breaker.acquire(now)
    breaker.record_success(now)
    breaker.record_failure(now)
    assert breaker.reopens_at() - now == 1.0


def test_outcomes_while_open_change_nothing() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures_to_open=1, open_s=5.0))
    breaker.record_failure(0.0)
    breaker.record_success(1.0)  # a late answer from before it opened
    breaker.record_failure(2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert breaker.reopens_at() == 5.0


@pytest.mark.parametrize(
    "policy",
    [
        {"failures_to_open": 0},
        {"open_s": 0},
        {"open_s": 10, "open_s_max": 5},
        {"open_s_max": float("inf")},
    ],
)
def test_breaker_policy_limits(policy: dict[str, float]) -> None:
    with pytest.raises(ClientConfigError):
        BreakerPolicy(**policy)  # type: ignore[arg-type]


# ---- region book ------------------------------------------------------------------------


def _book(preferred: str | None = None, clock: ManualClock | None = None) -> RegionBook:
    return RegionBook(
        REGIONS,
        policy=BreakerPolicy(failures_to_open=2, open_s=1.0),
        preferred_region=preferred,
        clock=clock or ManualClock(),
    )


def test_unmeasured_regions_keep_configuration_order_then_rtt_decides() -> None:
    book = _book()
    assert book.order(REGIONS) == list(REGIONS)
    book.probed("ap-south-1", rtt_s=0.040, serving=True)
    assert book.order(REGIONS) == ["ap-south-1", "us-east-1", "eu-west-1"]
    book.probed("eu-west-1", rtt_s=0.005, serving=True)
    book.probed("us-east-1", rtt_s=0.080, serving=True)
    assert book.order(REGIONS) == ["eu-west-1", "ap-south-1", "us-east-1"]
    assert book.snapshot().nearest == "eu-west-1"


def test_round_trip_times_are_smoothed() -> None:
    book = _book()
    book.probed("eu-west-1", rtt_s=0.100, serving=True)
    book.probed("eu-west-1", rtt_s=0.020, serving=True)
    assert book.rtt_s("eu-west-1") == pytest.approx(0.75 * 0.100 + 0.25 * 0.020)
    stats = book.snapshot().regions["eu-west-1"]
    assert stats.rtt_samples == 2
    assert stats.rtt_ms == pytest.approx(80.0)
    # A probe without an answer leaves the time alone but marks the region down.
    book.probed("eu-west-1", rtt_s=None, serving=False)
    assert book.snapshot().regions["eu-west-1"].healthy is False
    assert book.snapshot().regions["eu-west-1"].rtt_samples == 2


def test_preferred_region_comes_first_while_healthy() -> None:
    book = _book(preferred="ap-south-1")
    book.probed("eu-west-1", rtt_s=0.001, serving=True)
    book.probed("ap-south-1", rtt_s=0.200, serving=True)
    assert book.order(REGIONS)[0] == "ap-south-1"
    book.probed("ap-south-1", rtt_s=None, serving=False)
    assert book.order(REGIONS)[0] == "eu-west-1"


def test_open_breakers_are_left_out_and_doubtful_regions_go_last() -> None:
    clock = ManualClock()
    book = _book(clock=clock)
    for region, rtt in zip(REGIONS, (0.001, 0.002, 0.003), strict=True):
        book.probed(region, rtt_s=rtt, serving=True)
    book.unavailable("us-east-1", "UNAVAILABLE: down")
    book.unavailable("us-east-1", "UNAVAILABLE: down")
    assert book.order(REGIONS) == ["eu-west-1", "ap-south-1"]
    assert book.reopens_at(REGIONS) == clock.monotonic() + 1.0
    clock.advance(1.0)
    # Half-open: usable again, but after the healthy ones.
    assert book.order(REGIONS) == ["eu-west-1", "ap-south-1", "us-east-1"]
    stats = book.snapshot().regions["us-east-1"]
    assert (stats.breaker, stats.unavailable, stats.last_error) == (
        BreakerState.HALF_OPEN,
        2,
        "UNAVAILABLE: down",
    )


def test_a_region_that_answers_with_errors_is_up() -> None:
    book = _book()
    for _ in range(5):
        book.answered_with_error("eu-west-1", "NOT_FOUND: no key")
    assert book.snapshot().regions["eu-west-1"].breaker is BreakerState.CLOSED
    assert book.snapshot().regions["eu-west-1"].errors == 5


def test_failed_health_checks_open_the_breaker_and_a_good_one_closes_it() -> None:
    clock = ManualClock()
    book = _book(clock=clock)
    book.probed("ap-south-1", rtt_s=None, serving=False)
    book.probed("ap-south-1", rtt_s=None, serving=False)
    assert "ap-south-1" not in book.order(REGIONS)
    clock.advance(1.0)
    book.probed("ap-south-1", rtt_s=0.01, serving=True)
    assert book.snapshot().regions["ap-south-1"].breaker is BreakerState.CLOSED


# ---- backoff -------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0)
    rng = random.Random(7)
    for round_number, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (40, 1.0)]:
        samples = [policy.backoff_s(round_number, rng) for _ in range(200)]
        assert all(0 <= sample <= ceiling for sample in samples)
        # Spread over the whole range, not a fixed delay.
        assert max(samples) > 0.8 * ceiling and min(samples) < 0.2 * ceiling


@pytest.mark.parametrize(
    "settings",
    [
        {"attempts_max": 0},
        {"attempts_max": 21},
        {"attempt_timeout_s": 0},
        {"backoff_base_s": float("nan")},
    ],
)
def test_retry_policy_limits(settings: dict[str, float]) -> None:
    with pytest.raises(ClientConfigError):
        RetryPolicy(**settings)  # type: ignore[arg-type]


def test_routing_option_limits() -> None:
    with pytest.raises(ClientConfigError, match="hedge_after_s"):
        RoutingOptions(hedge_after_s=-1)
    with pytest.raises(ClientConfigError, match="health_check_interval_s"):
        RoutingOptions(health_check_interval_s=0)


# ---- routes ---------------------------------------------------------------------------------


def _route(placement: Placement, pinned: str | None = None, **fields: object) -> tuple[str, ...]:
    return route(
        placement,
        fields,
        ("key_id", "source_key_id"),
        regions=REGIONS,
        home_region="us-east-1",
        pinned_region=pinned,
        directory=ReplicaDirectory(ManualClock()),
    ).candidates


def test_key_references() -> None:
    assert KeyRef.parse(MRK).is_mrk
    assert KeyRef.parse(_arn("eu-west-1", MRK)).is_mrk
    assert KeyRef.parse(_arn("eu-west-1", MRK)).arn_region == "eu-west-1"
    assert not KeyRef.parse(UUID).is_mrk
    assert not KeyRef.parse("alias/mrk-" + "1" * 32).is_mrk
    assert KeyRef.parse(_arn("eu-west-1", MRK)).in_region("ap-south-1") == _arn("ap-south-1", MRK)
    assert KeyRef.parse(MRK).in_region("ap-south-1") == MRK


def test_routes_by_placement() -> None:
    assert _route(Placement.ANY) == REGIONS
    assert _route(Placement.REPLICA, key_id=MRK) == REGIONS
    assert _route(Placement.REPLICA, key_id=_arn("sa-east-1", MRK)) == REGIONS
    assert _route(Placement.REPLICA, key_id=UUID) == ("us-east-1",)
    assert _route(Placement.REPLICA, key_id=_arn("eu-west-1", UUID)) == ("eu-west-1",)
    assert _route(Placement.REPLICA, key_id="alias/x") == ("us-east-1",)
    # Every key the call names must be an MRK for it to go anywhere.
    assert _route(Placement.REPLICA, key_id=MRK, source_key_id=UUID) == ("us-east-1",)
    assert _route(Placement.DEFINITE, key_id=MRK) == ("us-east-1",)
    assert _route(Placement.DEFINITE, key_id=_arn("ap-south-1", MRK)) == ("ap-south-1",)
    assert _route(Placement.PRIMARY, key_id=_arn("ap-south-1", MRK)) == ("ap-south-1",)
    assert _route(Placement.PRIMARY, key_id=MRK) == ("us-east-1",)
    for placement in Placement:
        assert _route(placement, pinned="eu-west-1", key_id=MRK) == ("eu-west-1",)
    with pytest.raises(UnknownRegionError, match="sa-east-1"):
        _route(Placement.DEFINITE, key_id=_arn("sa-east-1", UUID))


def test_decrypt_is_routed_by_the_key_id_in_the_blob() -> None:
    vectors = json.loads(VECTORS.read_text())
    blobs = {vector["key_id"]: bytes.fromhex(vector["blob"]) for vector in vectors["vectors"]}
    mrk_blob = next(blob for key_id, blob in blobs.items() if key_id.startswith("mrk-"))
    uuid_blob = next(blob for key_id, blob in blobs.items() if not key_id.startswith("mrk-"))
    assert blob_key_id(mrk_blob) == "mrk-1234abcd12ab34cd56ef1234567890ab"
    assert _route(Placement.REPLICA, ciphertext_blob=mrk_blob) == REGIONS
    assert _route(Placement.REPLICA, ciphertext_blob=uuid_blob) == ("us-east-1",)
    for garbage in (b"", b"\x01", b"\x02\x04abcd", b"\x01\x40short", b"\x01\x02 x", b"blob"):
        assert blob_key_id(garbage) is None
        assert _route(Placement.REPLICA, ciphertext_blob=garbage) == ("us-east-1",)


def test_the_directory_learns_replica_regions_and_primaries() -> None:
    clock = ManualClock()
    directory = ReplicaDirectory(clock)
    response = kms_pb2.DescribeKeyResponse(
        key_metadata=kms_pb2.KeyMetadata(
            key_id=MRK,
            multi_region=True,
            multi_region_configuration=kms_pb2.MultiRegionConfiguration(
                multi_region_key_type="PRIMARY",
                primary_key=kms_pb2.MultiRegionKey(arn=_arn("eu-west-1", MRK), region="eu-west-1"),
                replica_keys=[
                    kms_pb2.MultiRegionKey(arn=_arn("ap-south-1", MRK), region="ap-south-1")
                ],
            ),
        )
    )
    directory.learn(response)
    directory.learn(kms_pb2.EncryptResponse(region="us-east-1"))  # nothing to learn
    # Knowledge orders the candidates; it never confines them (it may be stale).
    assert directory.known_regions(MRK) == {"eu-west-1", "ap-south-1"}
    assert directory.candidates(MRK, REGIONS) == REGIONS
    assert directory.primary(MRK) == "eu-west-1"
    # A region that said NotFound is left out for a minute.
    directory.mark_absent(MRK, "ap-south-1")
    assert directory.candidates(MRK, REGIONS) == ("us-east-1", "eu-west-1")
    clock.advance(60.5)
    assert directory.candidates(MRK, REGIONS) == REGIONS
    assert directory.known_regions(MRK) == set()
    assert directory.primary(MRK) is None


def test_the_directory_is_bounded() -> None:
    directory = ReplicaDirectory(ManualClock(), keys_max=2)
    for index in range(3):
        directory.mark_absent(f"mrk-{index:032x}", "us-east-1")
    assert directory.candidates(f"mrk-{0:032x}", REGIONS) == REGIONS
    assert directory.candidates(f"mrk-{2:032x}", REGIONS) == REGIONS[1:]
