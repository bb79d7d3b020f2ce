"""The data-key cache: bounded by age, messages and bytes, and partitioned."""

from __future__ import annotations

import io

import pytest
from client_fakes import FakeKeyring, FakeNetwork

from meridian.client.clock import ManualClock
from meridian.client.envelope import DataKeyCache, Envelope
from meridian.client.envelope.cache import EncryptionMaterials
from meridian.client.envelope.format import WrappedKey
from meridian.client.errors import ClientConfigError

MATERIALS = EncryptionMaterials(b"k" * 32, (WrappedKey("arn", b"blob"),))


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork({"us-east-1": 0.01})


@pytest.fixture
def keyring(network: FakeNetwork) -> FakeKeyring:
    return FakeKeyring(network)


def _generated(keyring: FakeKeyring) -> int:
    return keyring.counts.get("GenerateDataKey", 0)


def test_no_cache_means_a_data_key_per_message(network: FakeNetwork, keyring: FakeKeyring) -> None:
    with network.sync_client() as kms:
        envelope = Envelope(kms, [keyring.add_key("us-east-1")])
        for _ in range(3):
            envelope.encrypt(b"x")
    assert _generated(keyring) == 3


def test_messages_bound(network: FakeNetwork, keyring: FakeKeyring) -> None:
    cache = DataKeyCache(max_age_s=60, max_messages=3)
    with network.sync_client() as kms:
        envelope = Envelope(kms, [keyring.add_key("us-east-1")], cache=cache)
        messages = [envelope.encrypt(b"x") for _ in range(7)]
        assert _generated(keyring) == 3  # 3 + 3 + 1 messages
        # Cached or not, every message opens.
        assert all(envelope.decrypt(message).plaintext == b"x" for message in messages)
    # Messages sharing a data key still differ (own message id, own AES key).
    assert len(set(messages)) == 7


def test_bytes_bound(network: FakeNetwork, keyring: FakeKeyring) -> None:
    cache = DataKeyCache(max_age_s=60, max_bytes=100)
    with network.sync_client() as kms:
        envelope = Envelope(kms, [keyring.add_key("us-east-1")], cache=cache)
        for size in (40, 40, 30, 10):  # 40+40 fit; 30 would pass 100; then 30+10
            envelope.encrypt(b"x" * size)
        assert _generated(keyring) == 2
        envelope.encrypt(b"x" * 101)  # larger than the bound: never cached
        envelope.encrypt(b"x" * 101)
        assert _generated(keyring) == 4


def test_age_bound(network: FakeNetwork, keyring: FakeKeyring) -> None:
    clock = ManualClock()
    cache = DataKeyCache(max_age_s=10, clock=clock)
    with network.sync_client() as kms:
        envelope = Envelope(kms, [keyring.add_key("us-east-1")], cache=cache)
        envelope.encrypt(b"x")
        clock.advance(9.9)
        envelope.encrypt(b"x")
        assert _generated(keyring) == 1
        clock.advance(0.1)
        envelope.encrypt(b"x")
        assert _generated(keyring) == 2


def test_streams_of_unknown_length_are_never_served_from_the_cache(
    network: FakeNetwork, keyring: FakeKeyring
) -> None:
    cache = DataKeyCache(max_age_s=60)
    with network.sync_client() as kms:
        envelope = Envelope(kms, [keyring.add_key("us-east-1")], cache=cache)
        for _ in range(2):
            envelope.encrypt_stream(io.BytesIO(b"data"), io.BytesIO())
        list(envelope.encrypt_chunks([b"data"]))
        assert _generated(keyring) == 3
        for _ in range(2):
            envelope.encrypt_stream(io.BytesIO(b"data"), io.BytesIO(), plaintext_length=4)
        assert _generated(keyring) == 4


def test_entries_are_per_context_and_per_configuration(
    network: FakeNetwork, keyring: FakeKeyring
) -> None:
    cache = DataKeyCache(max_age_s=60)
    key = keyring.add_key("us-east-1")
    with network.sync_client() as kms:
        one = Envelope(kms, [key], cache=cache)
        one.encrypt(b"x", encryption_context={"a": "1"})
        one.encrypt(b"x", encryption_context={"a": "1"})
        one.encrypt(b"x", encryption_context={"a": "2"})
        assert _generated(keyring) == 2
        Envelope(kms, [key, keyring.add_key("us-east-1")], cache=cache).encrypt(b"x")
        assert _generated(keyring) == 3


def test_decrypt_entries_save_calls_but_never_cross_configurations(
    network: FakeNetwork, keyring: FakeKeyring
) -> None:
    cache = DataKeyCache(max_age_s=60)
    key = keyring.add_key("us-east-1")
    with network.sync_client() as kms:
        reader = Envelope(kms, [key], cache=cache)
        message = Envelope(kms, [key]).encrypt(b"x")
        for _ in range(3):
            assert reader.decrypt(message).plaintext == b"x"
        assert keyring.counts["Decrypt"] == 1
        assert reader.decrypt(message).info.region is None  # served from the cache
        # An envelope configured with other keys must ask KMS (and here, cannot).
        stranger = Envelope(kms, [keyring.add_key("us-east-1")], cache=cache)
        with pytest.raises(Exception, match="none of the message's keys"):
            stranger.decrypt(message)
    assert cache.stats().hits == 3


def test_capacity_evicts_the_least_recently_used() -> None:
    cache = DataKeyCache(max_age_s=60, capacity=2)
    for name in (b"a", b"b"):
        cache.put_for_encrypt(name, MATERIALS, 1)
    assert cache.materials_for_encrypt(b"a", 1) is not None
    cache.put_for_encrypt(b"c", MATERIALS, 1)
    assert cache.materials_for_encrypt(b"b", 1) is None
    assert cache.materials_for_encrypt(b"a", 1) is not None
    assert cache.stats().entries == 2
    cache.clear()
    assert cache.stats().entries == 0


def test_a_single_message_limit_caches_nothing() -> None:
    cache = DataKeyCache(max_age_s=60, max_messages=1)
    cache.put_for_encrypt(b"a", MATERIALS, 1)
    assert cache.materials_for_encrypt(b"a", 1) is None
    assert "hidden" in repr(MATERIALS) and "kkkk" not in repr(MATERIALS)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_age_s": 0},
        {"max_age_s": float("inf")},
        {"max_age_s": 1, "max_messages": 0},
        {"max_age_s": 1, "max_messages": 2**32 + 1},
        {"max_age_s": 1, "max_bytes": 0},
        {"max_age_s": 1, "capacity": 0},
    ],
)
def test_cache_limits(settings: dict[str, float]) -> None:
    with pytest.raises(ClientConfigError):
        DataKeyCache(**settings)  # type: ignore[arg-type]
