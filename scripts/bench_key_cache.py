"""The committed-key cache (``KeyCache``, server/storage/repository.py) as a region grows.

    scripts/bench-key-cache [--output FILE]

Measures, in this process, with real ``Key`` objects built from rows as SQLite returns
them (every string a fresh object, as after a read):

1. what a commit costs the event loop: ``invalidate()`` with the cache holding 1,000,
   10,000 and 100,000 keys (every control-plane write calls it);
2. the hit rate and the time per lookup (get, and put after a miss) when calls pick a
   key uniformly from working sets of 10,000 to 1,000,000 keys (the cache holds
   100,000), the case of a region whose callers use more keys than it caches;
3. the memory one cached key (with its current version) and one cached material take.

Prints a table and writes the figures as JSON (default bench-results/key-cache.json).
A miss costs far more than these figures in a node (a SQL read on aiosqlite's thread,
an unwrap of the material), which ``meridian bench --scale`` measures end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from meridian.server.domain.identifiers import key_arn
from meridian.server.domain.material_cache import MaterialCache
from meridian.server.domain.model import KeyVersion
from meridian.server.domain.validation import default_key_policy
from meridian.server.storage.repository import KeyCache, _key_from_row

ACCOUNT = "000000000000"
REGION = "us-east-1"
CACHE_ENTRIES = 100_000
REPEATS = 5
LOOKUPS = 200_000
# A 32-byte material wrapped by the file root key: format byte, provider byte, nonce, tag.
WRAPPED_MATERIAL_BYTES = 2 + 32 + 12 + 16


def fresh(text: str) -> str:
    """A new string object equal to ``text``, as each SQLite row read gives."""
    return text.encode().decode()


def row(index: int, policy: str) -> tuple[Any, ...]:
    key_id = str(random.Random(index).getrandbits(128))  # noqa: S311 - ids only
    return (
        key_id,
        fresh(key_arn(REGION, ACCOUNT, key_id)),
        fresh(ACCOUNT),
        fresh(REGION),
        1_700_000_000_000_000 + index,
        fresh("scale bench"),
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        "AWS_KMS",
        "Enabled",
        fresh(policy),
        os.urandom(32),
        0,
        None,
        None,
        0,
    )


def invalidate_ms(entries: int, policy: str) -> float:
    runs = []
    for _ in range(REPEATS):
        cache = KeyCache(entries_max=CACHE_ENTRIES)
        for index in range(entries):
            cache.put(_key_from_row(row(index, policy)), cache.generation)
        started = time.perf_counter()
        cache.invalidate()
        runs.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(runs), 3)


def working_set(keys: int, policy: str) -> dict[str, float]:
    """Uniform picks over ``keys`` keys; a miss reads the row (prebuilt here) and puts it."""
    rows = [row(index, policy) for index in range(min(keys, 2 * CACHE_ENTRIES))]
    picker = random.Random(7)  # noqa: S311 - benchmark picks
    cache = KeyCache(entries_max=CACHE_ENTRIES)
    # Warm up: as many lookups as the cache holds keys, twice.
    for _ in range(2 * CACHE_ENTRIES):
        _lookup(cache, rows, picker.randrange(keys))
    hits = 0
    started = time.perf_counter()
    for _ in range(LOOKUPS):
        hits += _lookup(cache, rows, picker.randrange(keys))
    elapsed = time.perf_counter() - started
    return {"hit_rate": round(hits / LOOKUPS, 3), "lookup_us": round(elapsed / LOOKUPS * 1e6, 3)}


def _lookup(cache: KeyCache, rows: list[tuple[Any, ...]], index: int) -> int:
    # Key ids beyond the prebuilt rows reuse a row under a distinct id (memory stays small).
    base = rows[index % len(rows)]
    key_id = base[0] if index < len(rows) else f"{base[0]}-{index}"
    if cache.get(key_id) is not None:
        return 1
    cache.put(_key_from_row((key_id, *base[1:])), cache.generation)
    return 0


def bytes_per_key(policy: str) -> float:
    """One cached key with its current version, as ``SqliteRepository.get_key`` puts it."""
    cache = KeyCache(entries_max=CACHE_ENTRIES)
    count = 20_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(count):
        # The row is dropped after the put: what stays is what the cache holds.
        key = _key_from_row(row(index, policy))
        version = KeyVersion(
            key_id=key.key_id,
            material_id=key.current_material_id,
            created_at=key.created_at,
            wrapped_material=os.urandom(WRAPPED_MATERIAL_BYTES),
        )
        cache.put(key, cache.generation, version)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return round((after - before) / count)


def bytes_per_material() -> float:
    """One unwrapped 32-byte key material in the material cache (domain/material_cache.py)."""
    cache = MaterialCache(entries_max=CACHE_ENTRIES)
    count = 20_000
    key_ids = [str(index) for index in range(count)]  # held by the key cache in a node
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for key_id in key_ids:
        cache.put(key_id, os.urandom(32), os.urandom(32))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return round((after - before) / count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("bench-results/key-cache.json"))
    args = parser.parse_args()
    policy = default_key_policy(ACCOUNT)
    document: dict[str, Any] = {
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "platform": platform.platform(),
        "cache_entries_max": CACHE_ENTRIES,
        "invalidate_ms": {},
        "working_sets": {},
    }
    print(f"invalidate() (one commit) with the cache holding N keys, median of {REPEATS}:")
    for entries in (1_000, 10_000, 100_000):
        figure = invalidate_ms(entries, policy)
        document["invalidate_ms"][str(entries)] = figure
        print(f"  {entries:>9,} keys  {figure:9.3f} ms")
    print(f"uniform picks over a working set, cache of {CACHE_ENTRIES:,}:")
    for keys in (10_000, 50_000, 150_000, 1_000_000):
        figures = working_set(keys, policy)
        document["working_sets"][str(keys)] = figures
        print(
            f"  {keys:>9,} keys  hit rate {figures['hit_rate']:.3f}  "
            f"{figures['lookup_us']:.2f} us per lookup"
        )
    document["bytes_per_cached_key"] = bytes_per_key(policy)
    print(
        f"memory per cached key (with its wrapped current version): "
        f"{document['bytes_per_cached_key']:.0f} bytes"
    )
    document["bytes_per_cached_material"] = bytes_per_material()
    print(f"memory per cached material: {document['bytes_per_cached_material']:.0f} bytes")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
