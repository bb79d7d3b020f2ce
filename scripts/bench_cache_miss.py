"""What a cache miss costs: the key service's hot operations on keys the node has not cached.

    scripts/bench-cache-miss [--keys N] [--calls N] [--output FILE]

In this process: a real node (``Node``, file root key) seeded with N keys as ``meridian
node seed-keys`` makes them, called through its key service directly (no gRPC, no
authorization or audit hook, so the figures are the miss itself). Measures, per call,
the CPU time of the whole process (the event loop and aiosqlite's thread) and the wall
time:

1. Encrypt, Decrypt and DescribeKey on a key both caches hold (hit), and on keys
   neither holds (miss: every key used once), one call at a time and four at once;
2. the parts of a miss alone: reading the key with its current version (one statement,
   as the node does now) against reading the key row and the version row through
   cursors (as it did before: two statements, three hops to aiosqlite's thread each)
   and against the same statement run on the event loop's thread without a hop (a
   comparison only: the node does not read on the loop's thread), building the
   ``Key``, the unwrap by the file root key, the two cache insertions.

Prints a table and writes the figures as JSON (default bench-results/cache-miss.json).
An HSM root key (``provider = "pkcs11"``) adds its own unwrap per miss: see
``scripts/bench-root-key`` (SoftHSM2: about 0.13-0.28 ms; a network HSM adds its round
trip).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from meridian.cli import pki
from meridian.server.config import NodeConfig, RootKeyConfig, TlsConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.material_cache import MaterialCache
from meridian.server.domain.model import Caller
from meridian.server.domain.service import KeyService, _material_aad
from meridian.server.logging import configure_logging
from meridian.server.node import Node
from meridian.server.seeding import CiphertextSample, SeedOptions, seed_keys
from meridian.server.storage.repository import (
    _KEY_COLUMNS,
    _SELECT_KEY_WITH_CURRENT_VERSION,
    KeyCache,
    SqliteRepository,
    _key_from_row,
)

CALLER = Caller(principal_arn="arn:meridian:iam::000000000000:user/bench")
PLAINTEXT = os.urandom(32)  # a data key, what KMS Decrypt mostly opens
REPEATS = 3
CONCURRENCY = (1, 4)


class Figures:
    """CPU and wall time per call of a batch of calls."""

    def __init__(self) -> None:
        self.cpu_us: list[float] = []
        self.wall_us: list[float] = []

    async def measure(self, calls: Sequence[Callable[[], Awaitable[object]]], at_once: int) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        if at_once == 1:  # no gather: a task per call would cost more than some parts
            for call in calls:
                await call()
        else:
            for start in range(0, len(calls), at_once):
                await asyncio.gather(*(call() for call in calls[start : start + at_once]))
        self.cpu_us.append((time.process_time() - cpu) / len(calls) * 1e6)
        self.wall_us.append((time.perf_counter() - wall) / len(calls) * 1e6)

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_us": round(statistics.median(self.cpu_us), 1),
            "wall_us": round(statistics.median(self.wall_us), 1),
        }


def operations(
    service: KeyService, key_id: str, blob: bytes
) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "Encrypt": lambda: service.encrypt(
            CALLER,
            key_id=key_id,
            plaintext=PLAINTEXT,
            encryption_context={},
            encryption_algorithm="",
        ),
        "Decrypt": lambda: service.decrypt(
            CALLER, ciphertext_blob=blob, encryption_context={}, key_id="", encryption_algorithm=""
        ),
        "DescribeKey": lambda: service.describe_key(CALLER, key_id),
    }


async def calls_figures(
    service: KeyService, pairs: list[tuple[str, bytes]], calls: int
) -> dict[str, Any]:
    """Hit and miss figures per operation and concurrency; each miss uses a fresh key."""
    unused = iter(pairs[1:])
    hot_key, hot_blob = pairs[0]
    result: dict[str, Any] = {}
    for at_once in CONCURRENCY:
        for name in ("Encrypt", "Decrypt", "DescribeKey"):
            hit, miss = Figures(), Figures()
            hot = operations(service, hot_key, hot_blob)[name]
            await hot()
            for _ in range(REPEATS):
                await hit.measure([hot] * calls, at_once)
                fresh = [next(unused) for _ in range(calls)]
                await miss.measure(
                    [operations(service, key_id, blob)[name] for key_id, blob in fresh], at_once
                )
            result[f"{name} x{at_once}"] = {"hit": hit.as_dict(), "miss": miss.as_dict()}
    return result


async def per_call(operation: Callable[[], Awaitable[object]], count: int) -> dict[str, float]:
    figures = Figures()
    for _ in range(REPEATS):
        await figures.measure([operation] * count, 1)
    return figures.as_dict()


async def parts_figures(
    service: KeyService, reader: SqliteRepository, database: Path, key_ids: list[str]
) -> dict[str, Any]:
    """The pieces of one miss, each alone, on keys not read before."""
    connection = reader.connection
    fresh = iter(key_ids)
    count = len(key_ids) // (3 * REPEATS)  # three reads, each on fresh keys

    async def one_statement() -> object:
        return await connection.execute_fetchall(_SELECT_KEY_WITH_CURRENT_VERSION, (next(fresh),))

    async def two_statements_through_cursors() -> object:
        key_id = next(fresh)
        async with cursors.execute(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ?",  # noqa: S608 - constant columns
            (key_id,),
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        async with cursors.execute(
            "SELECT created_at_us, wrapped_material FROM key_versions "
            "WHERE key_id = ? AND material_id = ?",
            (key_id, row[11]),
        ) as cursor:
            return await cursor.fetchone()

    # For comparison only (the node does not do this): the same statement run on the
    # event loop's own thread, through a connection of its own, without a hop.
    direct = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    # The node's reader refuses cursors (server/storage/reader.py: a statement left
    # active between jobs holds every request's reads in an old snapshot), so the read
    # as it was is timed on an aiosqlite connection of its own to the same database.
    cursors = await aiosqlite.connect(f"file:{database}?mode=ro", uri=True)

    async def one_statement_on_the_loop() -> object:
        return direct.execute(_SELECT_KEY_WITH_CURRENT_VERSION, (next(fresh),)).fetchall()

    rows = list(await connection.execute_fetchall(_SELECT_KEY_WITH_CURRENT_VERSION, (key_ids[0],)))
    row = rows[0]
    key = _key_from_row(row)
    wrapped, aad = bytes(row[-1]), _material_aad(key.key_id, key.current_material_id)
    root_key = service.root_key
    key_cache, materials = KeyCache(entries_max=1000), MaterialCache(entries_max=1000)
    material = await root_key.unwrap(wrapped, aad=aad)

    async def build_key() -> object:
        return _key_from_row(row)

    async def unwrap() -> object:
        return await root_key.unwrap(wrapped, aad=aad)

    async def cache_both() -> None:
        key_cache.put(key, key_cache.generation)
        materials.put(key.key_id, key.current_material_id, material)

    try:
        reads = {
            "read now: one statement (key + current version)": await per_call(one_statement, count),
            "read before: two statements through cursors": await per_call(
                two_statements_through_cursors, count
            ),
            "one statement on the loop's thread (no hop; not done)": await per_call(
                one_statement_on_the_loop, count
            ),
        }
    finally:
        direct.close()
        await cursors.close()
    return {
        **reads,
        "Key from the row": await per_call(build_key, 10_000),
        "unwrap (file root key, AES-256-GCM)": await per_call(unwrap, 10_000),
        "KeyCache.put + MaterialCache.put": await per_call(cache_both, 10_000),
    }


def node_config(work: Path) -> NodeConfig:
    pki_dir = work / "pki"
    pki.init_ca(pki_dir)
    pki.issue_node(pki_dir, "us-east-1", ips=["127.0.0.1"])
    cert, key = pki.node_paths(pki_dir, "us-east-1")
    data_dir = work / "data"
    return NodeConfig(
        region="us-east-1",
        account_id="000000000000",
        listen="127.0.0.1:0",
        data_dir=data_dir,
        tls=TlsConfig(ca_cert=pki_dir / "ca.pem", cert=cert, key=key),
        root_key=RootKeyConfig(provider="file", path=data_dir / "root.key"),
    )


async def run(keys: int, calls: int, work: Path) -> dict[str, Any]:
    config = node_config(work)
    first = Node(config=config, clock=FakeClock())
    await first.start()  # creates the store; seeding needs it stopped
    await first.stop()
    seeded = await seed_keys(
        config,
        SeedOptions(count=keys, sample=CiphertextSample(every_keys=1, plaintext=PLAINTEXT)),
    )
    node = Node(config=config, clock=FakeClock())
    await node.start()
    try:
        service = node.service
        assert service is not None
        reader = service.store.reader
        assert isinstance(reader, SqliteRepository)
        pairs = seeded.ciphertexts
        needed = len(CONCURRENCY) * 3 * REPEATS * calls + 1
        if len(pairs) < needed + 3 * REPEATS * 100:  # fresh keys for the three reads
            raise SystemExit(f"--keys must be at least {needed + 3 * REPEATS * 100} for --calls")
        return {
            "calls": await calls_figures(service, pairs[:needed], calls),
            "parts": await parts_figures(
                service, reader, config.database_path, [key_id for key_id, _ in pairs[needed:]]
            ),
        }
    finally:
        await node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=30_000, help="keys seeded (30000)")
    parser.add_argument("--calls", type=int, default=1_000, help="calls per measurement (1000)")
    parser.add_argument("--output", type=Path, default=Path("bench-results/cache-miss.json"))
    args = parser.parse_args()
    configure_logging("warning", region="us-east-1")
    with tempfile.TemporaryDirectory(prefix="meridian-cache-miss-") as work:
        figures = asyncio.run(run(args.keys, args.calls, Path(work)))
    document = {
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "keys": args.keys,
        "calls_per_measurement": args.calls,
        "repeats": REPEATS,
        **figures,
    }
    print(f"per call, microseconds (CPU of the process / wall), median of {REPEATS} runs")
    print(f"{'operation':<20}{'hit cpu':>10}{'hit wall':>10}{'miss cpu':>10}{'miss wall':>11}")
    for name, cell in figures["calls"].items():
        hit, miss = cell["hit"], cell["miss"]
        print(
            f"{name:<20}{hit['cpu_us']:>10.1f}{hit['wall_us']:>10.1f}"
            f"{miss['cpu_us']:>10.1f}{miss['wall_us']:>11.1f}"
        )
    print("\nthe parts of a miss, alone, one at a time")
    for name, cell in figures["parts"].items():
        print(f"  {name:<50}{cell['cpu_us']:>8.1f} cpu {cell['wall_us']:>8.1f} wall")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
