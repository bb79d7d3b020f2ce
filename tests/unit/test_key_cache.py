"""The committed-key cache: O(1) invalidation, LRU eviction, copies out."""

from __future__ import annotations

from datetime import UTC, datetime

from meridian.server.domain.model import Key, KeySpec, KeyState, KeyUsage, Origin
from meridian.server.storage.repository import KeyCache


def _key(key_id: str) -> Key:
    return Key(
        key_id=key_id,
        arn=f"arn:meridian:kms:us-east-1:000000000000:key/{key_id}",
        account_id="000000000000",
        region="us-east-1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        description="",
        key_spec=KeySpec.SYMMETRIC_DEFAULT,
        key_usage=KeyUsage.ENCRYPT_DECRYPT,
        origin=Origin.AWS_KMS,
        state=KeyState.ENABLED,
        policy="{}",
        current_material_id=bytes(32),
    )


def test_a_commit_makes_every_entry_a_miss_until_read_again() -> None:
    cache = KeyCache(entries_max=10)
    cache.put(_key("a"), cache.generation)
    assert cache.get("a") is not None
    cache.invalidate()
    assert cache.get("a") is None
    # A read that started before the commit must not be cached.
    cache.put(_key("a"), cache.generation - 1)
    assert cache.get("a") is None
    cache.put(_key("a"), cache.generation)
    assert cache.get("a") is not None
    assert len(cache) == 1


def test_the_least_recently_used_key_leaves_when_full() -> None:
    cache = KeyCache(entries_max=3)
    for key_id in "abc":
        cache.put(_key(key_id), cache.generation)
    assert cache.get("a") is not None  # now the most recently used
    cache.put(_key("d"), cache.generation)
    assert [key_id for key_id in "abcd" if cache.get(key_id) is not None] == ["a", "c", "d"]
    assert len(cache) == 3


def test_callers_get_copies() -> None:
    cache = KeyCache()
    cache.put(_key("a"), cache.generation)
    first = cache.get("a")
    assert first is not None
    first.state = KeyState.DISABLED
    second = cache.get("a")
    assert second is not None and second.state is KeyState.ENABLED


def test_a_copy_carries_every_field() -> None:
    from dataclasses import replace

    original = replace(
        _key("a"),
        multi_region=True,
        deletion_date=datetime(2026, 2, 1, tzinfo=UTC),
        state=KeyState.PENDING_DELETION,
        pending_window_days=7,
        revision=42,
        description="with every optional field set",
    )
    cache = KeyCache()
    cache.put(original, cache.generation)
    original.revision = 43  # the cache holds its own copy from the start
    copied = cache.get("a")
    assert copied is not None
    assert copied == replace(original, revision=42)
