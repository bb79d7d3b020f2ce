"""Failover through the real clients over a scripted transport, in virtual time.

Every test here runs KmsClient or AsyncKmsClient end to end (routing, retry plan,
stubs, error rebuilding) against ``FakeNetwork``: regions with a latency and a state,
a ManualClock that only the fake moves, and a seeded Random. Outcomes and the time
spent are exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from client_fakes import FakeNetwork
from test_client_support import FakeError

from meridian.client import (
    ClientConfigError,
    KMSInvalidStateException,
    NotFoundException,
    ServiceUnavailableError,
)
from meridian.client.breaker import BreakerPolicy, BreakerState
from meridian.client.options import RetryPolicy
from meridian.client.retry import TOKEN_METADATA_KEY
from meridian.proto.kms.v1 import kms_pb2

ACCOUNT = "111122223333"
MRK = "mrk-" + "2b" * 16
UUID = "0b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
# Round trips: ap-south-1 is the home region (first), eu-west-1 the nearest.
LATENCIES = {"ap-south-1": 0.080, "eu-west-1": 0.005, "us-east-1": 0.040}
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ciphertext_v1.json"


def _arn(region: str, key_id: str) -> str:
    return f"arn:meridian:kms:{region}:{ACCOUNT}:key/{key_id}"


def _unavailable() -> FakeError:
    return FakeError(grpc.StatusCode.UNAVAILABLE, None, "connection reset", request_id=None)


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork(dict(LATENCIES))


def _measured(network: FakeNetwork, **client_options: object):  # type: ignore[no-untyped-def]
    client = network.sync_client(**client_options)  # type: ignore[arg-type]
    client.check_health()
    return client


# ---- the nearest region ---------------------------------------------------------------


def test_calls_that_may_go_anywhere_go_to_the_nearest_region(network: FakeNetwork) -> None:
    with network.sync_client() as client:
        # Nothing measured yet: the home region.
        assert client.generate_random().region == "ap-south-1"
        stats = client.check_health()
        assert stats.nearest == "eu-west-1"
        assert {name: region.rtt_ms for name, region in stats.regions.items()} == {
            "ap-south-1": 80.0,
            "eu-west-1": 5.0,
            "us-east-1": 40.0,
        }
        assert client.generate_random().region == "eu-west-1"
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "eu-west-1"
        assert client.decrypt(ciphertext_blob=b"opaque", key_id=MRK).region == "eu-west-1"
        # Single-region keys stay where they live; calls that act go home.
        assert client.encrypt(key_id=UUID, plaintext=b"x").region == "ap-south-1"
        assert client.encrypt(key_id=_arn("us-east-1", UUID), plaintext=b"x").region == (
            "us-east-1"
        )
        assert client.create_key().region == "ap-south-1"
        assert client.list_keys().region == "ap-south-1"


def test_a_preferred_region_wins_while_it_is_healthy(network: FakeNetwork) -> None:
    with _measured(network, preferred_region="us-east-1") as client:
        assert client.generate_random().region == "us-east-1"
        network.regions["us-east-1"].serving = False
        client.check_health()
        assert client.generate_random().region == "eu-west-1"


def test_an_mrk_arn_is_rewritten_for_the_region_that_serves_it(network: FakeNetwork) -> None:
    with _measured(network) as client:
        result = client.encrypt(key_id=_arn("ap-south-1", MRK), plaintext=b"x")
    assert result.region == "eu-west-1"
    assert network.api_calls("Encrypt")[0].request.key_id == _arn("eu-west-1", MRK)


def test_decrypt_without_key_id_follows_the_mrk_in_the_blob(network: FakeNetwork) -> None:
    vectors = json.loads(VECTORS.read_text())["vectors"]
    mrk_blob = next(bytes.fromhex(v["blob"]) for v in vectors if v["key_id"].startswith("mrk-"))
    uuid_blob = next(bytes.fromhex(v["blob"]) for v in vectors if v["key_id"] == UUID)
    with _measured(network) as client:
        assert client.decrypt(ciphertext_blob=mrk_blob).region == "eu-west-1"
        assert client.decrypt(ciphertext_blob=uuid_blob).region == "ap-south-1"


# ---- failover -------------------------------------------------------------------------------


def test_failover_goes_to_the_next_nearest_region_at_once(network: FakeNetwork) -> None:
    network.regions["eu-west-1"].script.append(_unavailable())
    with _measured(network) as client:
        result = client.encrypt(key_id=MRK, plaintext=b"x")
        stats = client.stats()
    assert result.region == "us-east-1"
    assert network.regions_called("Encrypt") == ["eu-west-1", "us-east-1"]
    assert network.clock.sleeps == []  # a fresh region needs no pause
    assert (stats.calls, stats.retries, stats.failovers) == (1, 1, 1)
    assert stats.regions["eu-west-1"].unavailable == 1
    assert stats.regions["eu-west-1"].last_error == "UNAVAILABLE: connection reset"


def test_a_hanging_region_costs_one_attempt_timeout(network: FakeNetwork) -> None:
    retry = RetryPolicy(attempt_timeout_s=0.3)
    with _measured(network, routing=network.options(retry=retry)) as client:
        # It hangs after the health check, which still thinks it the nearest.
        network.regions["eu-west-1"].state = "hang"
        started = network.clock.monotonic()
        result = client.generate_random(timeout_s=5)
        elapsed = network.clock.monotonic() - started
    assert result.region == "us-east-1"
    assert elapsed == pytest.approx(0.3 + 0.040)
    assert [call.timeout_s for call in network.api_calls()] == [0.3, 0.3]


def test_every_region_down_fails_within_the_deadline(network: FakeNetwork) -> None:
    for region in network.regions.values():
        region.state = "down"
    routing = network.options(breaker=BreakerPolicy(failures_to_open=10))
    with network.sync_client(routing=routing) as client:
        started = network.clock.monotonic()
        with pytest.raises(ServiceUnavailableError) as caught:
            client.generate_random(timeout_s=2)
        elapsed = network.clock.monotonic() - started
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    # Five attempts: one round over the three regions, then backoff and another round.
    assert network.regions_called() == [
        "ap-south-1",
        "eu-west-1",
        "us-east-1",
        "ap-south-1",
        "eu-west-1",
    ]
    assert len(network.clock.sleeps) == 1
    assert 0 <= network.clock.sleeps[0] <= 0.025
    assert elapsed <= 2


def test_the_deadline_covers_every_attempt(network: FakeNetwork) -> None:
    for region in network.regions.values():
        region.state = "hang"
    with network.sync_client() as client:
        started = network.clock.monotonic()
        with pytest.raises(ServiceUnavailableError) as caught:
            client.generate_random(timeout_s=3)
        elapsed = network.clock.monotonic() - started
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed == pytest.approx(3.0)
    # The first attempt may use 2 s (attempt_timeout_s), the second what is left.
    assert [call.timeout_s for call in network.api_calls()] == pytest.approx([2.0, 1.0])


def test_a_single_region_call_is_retried_with_backoff(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].script.extend([_unavailable(), _unavailable()])
    with network.sync_client() as client:
        result = client.describe_key(key_id=UUID)
    assert result.region == "ap-south-1"
    assert network.regions_called() == ["ap-south-1"] * 3
    assert len(network.clock.sleeps) == 2
    assert all(0 <= sleep <= 0.05 for sleep in network.clock.sleeps)


def test_a_pinned_client_never_leaves_its_region(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].state = "down"
    routing = network.options(breaker=BreakerPolicy(failures_to_open=10))
    with network.sync_client(region="ap-south-1", routing=routing) as client:
        with pytest.raises(ServiceUnavailableError):
            client.generate_random()
        with pytest.raises(ServiceUnavailableError):
            client.encrypt(key_id=MRK, plaintext=b"x")
    assert set(network.regions_called()) == {"ap-south-1"}


# ---- circuit breakers ---------------------------------------------------------------------


def test_an_open_breaker_keeps_calls_away_until_a_trial_closes_it(network: FakeNetwork) -> None:
    with _measured(network) as client:
        network.regions["eu-west-1"].state = "down"
        # Three failed attempts in a row (the default) open it; each call fails over.
        for _ in range(3):
            assert client.stats().regions["eu-west-1"].breaker is BreakerState.CLOSED
            assert client.encrypt(key_id=MRK, plaintext=b"x").region == "us-east-1"
        assert client.stats().regions["eu-west-1"].breaker is BreakerState.OPEN
        assert network.regions_called() == ["eu-west-1", "us-east-1"] * 3
        before = len(network.regions_called())
        for _ in range(5):
            assert client.encrypt(key_id=MRK, plaintext=b"x").region == "us-east-1"
        assert network.regions_called()[before:] == ["us-east-1"] * 5
        # The region comes back; after open_s one trial goes there and closes it.
        network.regions["eu-west-1"].state = "up"
        network.clock.advance(1.0)
        assert client.stats().regions["eu-west-1"].breaker is BreakerState.HALF_OPEN
        # Half-open regions come after healthy ones: the trial is the health check.
        client.check_health()
        assert client.stats().regions["eu-west-1"].breaker is BreakerState.CLOSED
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "eu-west-1"


def test_a_call_with_every_breaker_open_waits_for_a_trial_if_time_allows(
    network: FakeNetwork,
) -> None:
    routing = network.options(breaker=BreakerPolicy(failures_to_open=1, open_s=1.0))
    with network.sync_client(region="ap-south-1", routing=routing) as client:
        network.regions["ap-south-1"].script.append(_unavailable())
        # The failure opens the breaker; the call waits 1 s for the trial, which works.
        assert client.generate_random(timeout_s=5).region == "ap-south-1"
        assert network.clock.sleeps == [pytest.approx(1.0)]
        network.regions["ap-south-1"].script.append(_unavailable())
        network.clock.sleeps.clear()
        # Too little time left to wait for the trial: the failure is the answer...
        with pytest.raises(ServiceUnavailableError, match="connection reset"):
            client.generate_random(timeout_s=0.5)
        sent = len(network.sent)
        # ...and while the breaker is open, the next call fails at once, unsent.
        with pytest.raises(ServiceUnavailableError, match="circuit breaker is open"):
            client.generate_random(timeout_s=0.5)
        assert network.clock.sleeps == []
        assert len(network.sent) == sent


# ---- what is retried ----------------------------------------------------------------------


def test_creating_calls_retry_only_in_their_region_with_one_token(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].script.extend([_unavailable(), _unavailable()])
    with _measured(network) as client:
        assert client.create_key().region == "ap-south-1"
    calls = network.api_calls("CreateKey")
    assert [call.region for call in calls] == ["ap-south-1"] * 3
    tokens = {dict(call.metadata)[TOKEN_METADATA_KEY] for call in calls}
    assert len(tokens) == 1
    assert len(tokens.pop()) == 32


def test_each_creating_call_has_its_own_token(network: FakeNetwork) -> None:
    with network.sync_client() as client:
        client.create_key()
        client.create_alias(alias_name="alias/a", target_key_id=UUID)
        client.schedule_key_deletion(key_id=UUID)
        client.encrypt(key_id=UUID, plaintext=b"x")
    metadata = [dict(call.metadata) for call in network.api_calls()]
    tokens = [entry.get(TOKEN_METADATA_KEY) for entry in metadata]
    assert None not in tokens[:3] and len(set(tokens[:3])) == 3
    assert tokens[3] is None  # repeatable calls need none


def test_without_tokens_a_creating_call_is_tried_once(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].script.append(_unavailable())
    routing = network.options(idempotency_tokens=False)
    with network.sync_client(routing=routing) as client, pytest.raises(ServiceUnavailableError):
        client.create_key()
    assert network.regions_called() == ["ap-south-1"]
    assert network.api_calls()[0].metadata == ()


def test_an_answer_is_never_retried(network: FakeNetwork) -> None:
    network.regions["eu-west-1"].script.append(
        FakeError(grpc.StatusCode.INVALID_ARGUMENT, "InvalidCiphertextException", "bad")
    )
    with _measured(network) as client, pytest.raises(Exception, match="bad"):
        client.decrypt(ciphertext_blob=b"x", key_id=MRK)
    assert network.regions_called() == ["eu-west-1"]


def test_throttling_is_retried(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].script.append(
        FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "ThrottlingException", "slow down")
    )
    with network.sync_client() as client:
        assert client.create_key().region == "ap-south-1"
    assert network.regions_called() == ["ap-south-1", "ap-south-1"]
    # Throttling says the region is up: its breaker is untouched.
    assert network.regions["ap-south-1"].script == type(network.regions["ap-south-1"].script)()


def test_a_region_without_the_replica_passes_the_call_on(network: FakeNetwork) -> None:
    network.regions["eu-west-1"].script.append(
        FakeError(grpc.StatusCode.NOT_FOUND, "NotFoundException", "no replica here")
    )
    network.regions["us-east-1"].script.append(
        FakeError(grpc.StatusCode.FAILED_PRECONDITION, "KMSInvalidStateException", "Creating")
    )
    with _measured(network) as client:
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "ap-south-1"
        # The region that had no replica is skipped for a while.
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "us-east-1"
    assert network.regions_called() == ["eu-west-1", "us-east-1", "ap-south-1", "us-east-1"]


def test_no_replica_anywhere_raises_the_nearest_regions_answer(network: FakeNetwork) -> None:
    for name in ("eu-west-1", "us-east-1", "ap-south-1"):
        network.regions[name].script.append(
            FakeError(grpc.StatusCode.NOT_FOUND, "NotFoundException", f"not in {name}")
        )
    with _measured(network) as client, pytest.raises(NotFoundException) as caught:
        client.encrypt(key_id=MRK, plaintext=b"x")
    assert caught.value.region == "eu-west-1"
    assert len(network.regions_called()) == 3


def test_a_single_region_key_in_the_wrong_state_is_an_answer(network: FakeNetwork) -> None:
    network.regions["ap-south-1"].script.append(
        FakeError(grpc.StatusCode.FAILED_PRECONDITION, "KMSInvalidStateException", "pending")
    )
    with network.sync_client() as client, pytest.raises(KMSInvalidStateException):
        client.encrypt(key_id=UUID, plaintext=b"x")
    assert network.regions_called() == ["ap-south-1"]


def test_regions_known_to_hold_a_replica_are_tried_first(network: FakeNetwork) -> None:
    def describe(region: str, method: str, request: object) -> object:
        if method != "DescribeKey":
            return getattr(kms_pb2, f"{method}Response")(region=region)
        metadata = kms_pb2.KeyMetadata(key_id=MRK, multi_region=True)
        configuration = metadata.multi_region_configuration
        configuration.primary_key.region = "us-east-1"
        configuration.replica_keys.add(region="ap-south-1")
        return kms_pb2.DescribeKeyResponse(key_metadata=metadata, region=region)

    network.handler = describe  # type: ignore[assignment]
    with _measured(network) as client:
        client.describe_key(key_id=MRK)
        # eu-west-1 is nearest but was not named as holding a replica.
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "us-east-1"
        # Knowledge only orders: with the known regions down, eu-west-1 is still tried.
        network.regions["us-east-1"].state = "down"
        network.regions["ap-south-1"].state = "down"
        assert client.encrypt(key_id=MRK, plaintext=b"x").region == "eu-west-1"


def test_bad_timeouts_are_refused_before_sending(network: FakeNetwork) -> None:
    with network.sync_client() as client, pytest.raises(ClientConfigError):
        client.generate_random(timeout_s=-1)
    assert network.sent == []


# ---- the async twin behaves the same ------------------------------------------------------


async def test_async_failover_breaker_and_tokens(network: FakeNetwork) -> None:
    network.regions["eu-west-1"].script.append(_unavailable())
    network.regions["ap-south-1"].script.append(_unavailable())
    async with network.async_client() as client:
        stats = await client.check_health()
        assert stats.nearest == "eu-west-1"
        assert (await client.generate_random()).region == "us-east-1"
        created = await client.create_key()
        assert created.region == "ap-south-1"
        for region in network.regions.values():
            region.state = "down"
        with pytest.raises(ServiceUnavailableError):
            await client.generate_random(timeout_s=1)
    assert network.regions_called("GenerateRandom")[:2] == ["eu-west-1", "us-east-1"]
    creates = network.api_calls("CreateKey")
    assert [call.region for call in creates] == ["ap-south-1", "ap-south-1"]
    assert len({dict(call.metadata)[TOKEN_METADATA_KEY] for call in creates}) == 1
