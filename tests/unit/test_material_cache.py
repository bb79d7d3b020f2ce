"""The unwrapped-material cache: LRU, forget_key, and clear() without a pause."""

from __future__ import annotations

import pytest

from meridian.server.domain.material_cache import PURGE_PER_CALL, MaterialCache


def test_lru_eviction_and_forget_key() -> None:
    cache = MaterialCache(entries_max=2)
    cache.put("a", b"1", b"material a1")
    cache.put("b", b"1", b"material b1")
    assert cache.get("a", b"1") == b"material a1"  # a is now the most recent
    cache.put("c", b"1", b"material c1")
    assert cache.get("b", b"1") is None
    assert cache.get("a", b"1") == b"material a1"
    cache.forget_key("a")
    assert cache.get("a", b"1") is None
    assert cache.get("c", b"1") == b"material c1"


def test_nothing_from_before_a_clear_is_served_and_its_memory_is_released() -> None:
    cache = MaterialCache(entries_max=1000)
    for index in range(100):
        cache.put(f"key-{index}", b"m", b"old")
    cache.clear()
    assert cache.get("key-0", b"m") is None
    assert cache.get("key-99", b"m") is None
    cache.put("key-5", b"m", b"new")  # stored again after the clear: served
    assert cache.get("key-5", b"m") == b"new"
    for _ in range(100 // PURGE_PER_CALL + 1):
        cache.get("absent", b"m")
    assert len(cache) == 1, "the old entries were dropped"
    assert cache.get("key-5", b"m") == b"new"


def test_entries_max_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MaterialCache(entries_max=0)
