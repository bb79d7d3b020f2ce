"""How many committed keys and unwrapped key versions a node holds in memory, [caches].

Both caches are filled lazily and bounded, least recently used out (storage/repository.py
``KeyCache``, domain/material_cache.py). The bound is memory, not the region's size: a
region with fewer keys than the bound never fills it, and one with more cannot hold them
all (a cached key with its wrapped current version takes about 0.85 KB, an unwrapped
material about 0.3 KB; scripts/bench-key-cache). So the sizes are settings with fixed
defaults, not a function of the key count: the defaults keep a node with both caches full
near 200 MiB (docs/performance.md, "Scale"); a region whose callers use more keys than
that, on a host with memory to spare, raises them. Each worker process (``workers``) has
caches of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEYS_DEFAULT = 100_000
MATERIALS_DEFAULT = 100_000
# A limit on the limit: 10,000,000 cached keys are about 8.5 GB.
ENTRIES_MAX = 10_000_000


@dataclass(frozen=True, slots=True)
class CacheSettings:
    keys_max: int = KEYS_DEFAULT
    materials_max: int = MATERIALS_DEFAULT


def parse_cache_settings(raw: dict[str, Any]) -> CacheSettings:
    """The [caches] table; raises ValueError naming the first bad setting."""
    unknown = set(raw) - {"keys_max", "materials_max"}
    if unknown:
        raise ValueError(f"caches.{sorted(unknown)[0]} is not a known setting")
    return CacheSettings(
        keys_max=_entries(raw, "keys_max", KEYS_DEFAULT),
        materials_max=_entries(raw, "materials_max", MATERIALS_DEFAULT),
    )


def _entries(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ENTRIES_MAX:
        raise ValueError(f"caches.{name} must be an integer between 1 and {ENTRIES_MAX}")
    return value
