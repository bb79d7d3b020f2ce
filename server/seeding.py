"""Bulk seeding: put many keys into a stopped node's store (`meridian node seed-keys`).

An operator and benchmark tool. Measuring a region with a million keys through
CreateKey would take about twenty minutes of API calls; this writes the same rows
directly, tens of thousands of keys per second:

- Each key is made by ``KeyService.new_symmetric_key``, the very code CreateKey runs
  (fresh material, wrapped by the region's root key with the AAD that binds it to its
  key id and material id, the default key policy), and written by
  ``SqliteWriter.insert_keys``, which builds the same rows as ``insert_key``. A seeded
  key is indistinguishable from one CreateKey made, except for its description.
- Keys are written in batches of ``batch_keys`` per ``BEGIN IMMEDIATE … COMMIT``, each
  batch sorted by key id so the B-tree inserts stay local, with a page cache large
  enough for the pages a batch touches. A batch is atomic: an interrupted run leaves
  whole batches, every one of them usable.
- The node must be stopped: its committed-key cache is cleared only by its own commits
  (storage/store.py), so rows written behind its back could be served stale. The
  data directory's lock (data_dir_lock.py) is held for the whole run, which refuses a
  running node and makes a node started meanwhile refuse to start.
- Audit: seeded keys are not API calls, so they get no per-key records; the run is
  one ``SeedKeys`` service event in the node's own trail (an intent first, so a run
  killed half-way shows as ``Unknown``), with the counts and the key spec. The trail is
  opened without its peers: this tool never talks to the network.

Only SYMMETRIC_DEFAULT keys of single-region, Meridian-made material are seeded:
multi-Region keys would need replication state, and other specs their own material
records (``key_context.create_key``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from meridian.server.audit.events import ServiceEvent, ServiceEventName
from meridian.server.audit_runtime import AuditRuntime
from meridian.server.config import NodeConfig
from meridian.server.data_dir_lock import DataDirLock
from meridian.server.domain import validation
from meridian.server.domain.clock import Clock, SystemClock
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.model import Key, KeySpec, KeyVersion
from meridian.server.domain.service import KeyService
from meridian.server.rootkeys import open_root_keys
from meridian.server.storage.key_material_repository import SqliteKeyMaterialStore
from meridian.server.storage.store import SqliteStore

SEEDABLE_SPECS = (KeySpec.SYMMETRIC_DEFAULT,)
SEED_KEYS_MAX = 10_000_000
BATCH_KEYS_DEFAULT = 50_000
BATCH_KEYS_MAX = 200_000
# The writer's page cache while seeding (SQLite's default is 2 MiB). Key ids are random,
# so a batch dirties leaf pages all over the key indexes; with a small cache they are
# spilled to the WAL mid-transaction and read back again, and seeding slowed down as the
# store grew. Only this tool's connection: the node opens its own with the default.
SEED_PAGE_CACHE_KIB = 256 * 1024


@dataclass(frozen=True)
class CiphertextSample:
    """Seal ``plaintext`` under one key in every ``every_keys`` (benchmarks need blobs).

    The bench decrypts under keys it never used through the API, so that Decrypt meets
    the cold caches a large region really has. Only ciphertexts leave this module.
    """

    every_keys: int
    plaintext: bytes


@dataclass
class SeedReport:
    keys_requested: int
    keys_seeded: int = 0
    elapsed_s: float = 0.0
    # (key id, ciphertext blob) pairs for a CiphertextSample, in seeding order.
    ciphertexts: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def keys_per_s(self) -> float:
        return self.keys_seeded / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class SeedOptions:
    count: int
    key_spec: KeySpec = KeySpec.SYMMETRIC_DEFAULT
    description: str = ""
    batch_keys: int = BATCH_KEYS_DEFAULT
    sample: CiphertextSample | None = None
    # Called after each committed batch with the report so far (progress display).
    progress: Callable[[SeedReport], None] | None = None
    # Called after each committed batch with its key ids (benchmarks pick keys from them).
    key_ids: Callable[[Sequence[str]], None] | None = None

    def check(self) -> None:
        """Raise ValueError naming the first bad option."""
        if not 1 <= self.count <= SEED_KEYS_MAX:
            raise ValueError(f"the count must be 1 to {SEED_KEYS_MAX}")
        if not 1 <= self.batch_keys <= BATCH_KEYS_MAX:
            raise ValueError(f"the batch size must be 1 to {BATCH_KEYS_MAX}")
        if self.key_spec not in SEEDABLE_SPECS:
            names = ", ".join(spec.value for spec in SEEDABLE_SPECS)
            raise ValueError(f"only {names} keys can be seeded, not {self.key_spec.value}")
        if self.sample is not None and self.sample.every_keys < 1:
            raise ValueError("a ciphertext sample needs every_keys >= 1")
        # The same limit as CreateKey's Description (raises ValidationException).
        validation.validate_description(self.description)


async def seed_keys(
    config: NodeConfig,
    options: SeedOptions,
    *,
    clock: Clock | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
    monotonic: Callable[[], float] = time.monotonic,
) -> SeedReport:
    """Write ``options.count`` new keys into the stopped node's store described by ``config``.

    Raises ``DataDirBusy`` if the node (or another tool) holds the data directory,
    ``RootKeyError`` if the root key cannot be opened, ``AuditUnavailable`` if the
    trail cannot take the event, and ValueError for bad options.
    """
    options.check()
    clock = clock or SystemClock()
    lock = DataDirLock.acquire(config.data_dir, role="seed-keys")
    try:
        root_keys = await open_root_keys(config.root_key, randbytes=randbytes)
        try:
            store = await SqliteStore.open(config.database_path)
            try:
                return await _seed_audited(
                    config, options, store, root_keys, clock, randbytes, monotonic
                )
            finally:
                await store.close()
        finally:
            await root_keys.aclose()
    finally:
        lock.release()


async def _seed_audited(
    config: NodeConfig,
    options: SeedOptions,
    store: SqliteStore,
    root_key: RootKeyProvider,
    clock: Clock,
    randbytes: Callable[[int], bytes],
    monotonic: Callable[[], float],
) -> SeedReport:
    # Without peers: digests are shipped by the node when it next runs, not from here.
    audit = await AuditRuntime.open(
        replace(config, peers=()),
        root_key=root_key,
        clock=clock,
        keys=store.reader,
        randbytes=randbytes,
    )
    report = SeedReport(keys_requested=options.count)
    failure: BaseException | None = None
    try:
        await audit.start()
        event = ServiceEvent(
            ServiceEventName.SEED_KEYS,
            details={"keySpec": options.key_spec.value, "keysRequested": options.count},
        )
        async with audit.sink.service_action(event) as action:
            try:
                await _seed(config, options, store, root_key, clock, randbytes, monotonic, report)
            except Exception as error:
                # Recorded with the count that did commit, then raised: a failed body
                # would withdraw the intent, and the committed batches would go unrecorded.
                failure = error
            action.add_details(keysSeeded=report.keys_seeded, complete=failure is None)
    finally:
        await audit.close()
    if failure is not None:
        raise failure
    return report


async def _seed(
    config: NodeConfig,
    options: SeedOptions,
    store: SqliteStore,
    root_key: RootKeyProvider,
    clock: Clock,
    randbytes: Callable[[int], bytes],
    monotonic: Callable[[], float],
    report: SeedReport,
) -> None:
    service = KeyService(
        region=config.region,
        account_id=config.account_id,
        store=store,
        root_key=root_key,
        clock=clock,
        key_materials=SqliteKeyMaterialStore(store),
        randbytes=randbytes,
        # Nothing is served: the cache would only hold material this tool never uses.
        material_cache_entries_max=1,
    )
    # One string for every key: CreateKey's default policy, built once, not per key.
    policy = validation.default_key_policy(config.account_id)
    async with store.write_connection() as connection:
        await connection.execute(f"PRAGMA cache_size = -{SEED_PAGE_CACHE_KIB}")
    started = monotonic()
    while report.keys_seeded < options.count:
        size = min(options.batch_keys, options.count - report.keys_seeded)
        batch: list[tuple[Key, KeyVersion]] = []
        for index in range(size):
            key, version, material = await service.new_symmetric_key(
                description=options.description, policy=policy
            )
            batch.append((key, version))
            sample = options.sample
            if sample is not None and (report.keys_seeded + index) % sample.every_keys == 0:
                report.ciphertexts.append((key.key_id, _seal(key, material, sample, randbytes)))
        batch.sort(key=lambda item: item[0].key_id)
        async with store.write() as tx:
            await tx.insert_keys(batch)
        report.keys_seeded += size
        report.elapsed_s = monotonic() - started
        if options.key_ids is not None:
            options.key_ids([key.key_id for key, _ in batch])
        if options.progress is not None:
            options.progress(report)


def _seal(
    key: Key, material: bytes, sample: CiphertextSample, randbytes: Callable[[int], bytes]
) -> bytes:
    return blob_recipe.seal(
        material,
        key_id=key.key_id,
        key_material_id=key.current_material_id,
        plaintext=sample.plaintext,
        encryption_context={},
        randbytes=randbytes,
    )
