"""Re-wrapping stored key versions from the key file into SoftHSM2 (server/rewrap.py).

The store and the key service are the real ones; the "crash" here is an exception in the
middle of a batch (the kill -9 of a real process is in tests/e2e/test_hsm.py). Throughout,
a key service with both root keys decrypts every ciphertext, as a serving node does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest

from conftest import node_config
from meridian.server.config import NodeConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import (
    FileRootKeyProvider,
    RootKeyError,
    RootKeyProvider,
)
from meridian.server.domain.crypto.rootkey_ring import RootKeyRing, wrapped_by
from meridian.server.domain.model import Caller
from meridian.server.domain.service import CreateKeyRequest
from meridian.server.node import Node
from meridian.server.rewrap import (
    KEY_MATERIAL,
    StoredSecrets,
    present,
    rewrap,
    stored_secrets,
    verify,
)
from meridian.server.rootkeys import open_pkcs11
from meridian.server.storage.wrapped_material import WrappedMaterialStore

CALLER = Caller(principal_arn="arn:meridian:iam::111122223333:user/admin")
KEYS = 23
CONTEXT = {"purpose": "rewrap-test"}


@dataclass
class Stored:
    config: NodeConfig
    file_key: FileRootKeyProvider
    ciphertexts: list[tuple[bytes, bytes]]

    @property
    def database(self) -> Path:
        return self.config.database_path


@asynccontextmanager
async def serving(config: NodeConfig, root_keys: RootKeyRing | None = None) -> AsyncIterator:
    """The real node (its composition root), in process; its key service is what we call."""
    node = Node(config=config, clock=FakeClock(), root_keys=root_keys)
    await node.start()
    try:
        assert node.service is not None
        yield node.service
    finally:
        await node.stop()


@pytest.fixture
async def stored(test_pki, tmp_path) -> Stored:
    """A node's database with KEYS keys under its key file, and a ciphertext under each."""
    config = node_config(test_pki, tmp_path / "data")
    ciphertexts = []
    async with serving(config) as service:
        for _ in range(KEYS):
            key = await service.create_key(CALLER, CreateKeyRequest())
            plaintext = os.urandom(24)
            result = await service.encrypt(
                CALLER,
                key_id=key.key_id,
                plaintext=plaintext,
                encryption_context=CONTEXT,
                encryption_algorithm="SYMMETRIC_DEFAULT",
            )
            ciphertexts.append((result.ciphertext_blob, plaintext))
    file_key = FileRootKeyProvider.open_or_create(config.root_key.path)
    return Stored(config, file_key, ciphertexts)


@pytest.fixture
async def hsm_key(softhsm) -> AsyncIterator[RootKeyProvider]:
    provider = await open_pkcs11(softhsm.pkcs11_config())
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def table(stored) -> AsyncIterator[WrappedMaterialStore]:
    opened = await WrappedMaterialStore.open(stored.database)
    try:
        yield opened
    finally:
        await opened.close()


async def decrypt_all(stored: Stored, root_keys: RootKeyRing) -> None:
    """Every ciphertext decrypts through a freshly started node (an empty material cache).

    The ring's providers belong to the test's fixtures, so the node gets a ring without
    closers: stopping it leaves them open.
    """
    ring = RootKeyRing(root_keys.current, root_keys.previous)
    async with serving(stored.config, ring) as service:
        for blob, plaintext in stored.ciphertexts:
            result = await service.decrypt(
                CALLER,
                ciphertext_blob=blob,
                encryption_context=CONTEXT,
                key_id="",
                encryption_algorithm="",
            )
            assert result.plaintext == plaintext


async def providers_by_row(table: WrappedMaterialStore) -> list[str | None]:
    rows = await table.page(KEY_MATERIAL.column, None, limit=1000)
    return [wrapped_by(row.wrapped) for row in rows]


@pytest.fixture
async def everything(table) -> tuple[list[StoredSecrets], int]:
    """Every wrapped column of a node's database, and how many blobs are not key material
    (the other features' secrets: replication identity, audit signing key, ...)."""
    secrets = await present(table, stored_secrets())
    others = sum([await table.count(item.column) for item in secrets if item != KEY_MATERIAL])
    return secrets, others


async def test_rewrap_moves_everything_and_verifies(stored, table, hsm_key, everything) -> None:
    secrets, others = everything
    report = await rewrap(table, stored.file_key, hsm_key, secrets=secrets, batch_rows=5)
    assert report.rewrapped == KEYS + others
    assert report.verified == KEYS + others
    assert report.remaining_under_source == 0
    assert report.complete
    assert await providers_by_row(table) == ["pkcs11"] * KEYS
    # The key file is no longer needed: the HSM alone serves every key.
    await decrypt_all(stored, RootKeyRing(hsm_key))
    again = await rewrap(table, stored.file_key, hsm_key, secrets=secrets, batch_rows=5)
    assert (again.rewrapped, again.already_under_target) == (0, KEYS + others)
    assert again.complete


class CrashingProvider:
    """The HSM provider, except that the process "dies" after a number of wraps."""

    def __init__(self, inner: RootKeyProvider, wraps_before_crash: int) -> None:
        self.inner = inner
        self.wraps_left = wraps_before_crash

    @property
    def name(self) -> str:
        return self.inner.name

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        if self.wraps_left == 0:
            raise KeyboardInterrupt("killed")
        self.wraps_left -= 1
        return await self.inner.wrap(material, aad=aad)

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        return await self.inner.unwrap(wrapped, aad=aad)


async def test_interrupted_rewrap_leaves_whole_batches_and_resumes(
    stored, table, hsm_key, everything
) -> None:
    secrets, others = everything
    assert secrets[0] == KEY_MATERIAL
    crashing = CrashingProvider(hsm_key, 12)
    with pytest.raises(KeyboardInterrupt):
        await rewrap(table, stored.file_key, crashing, secrets=secrets, batch_rows=5)
    # Two batches of five committed; the third died half-way and rolled back entirely.
    assert (await providers_by_row(table)).count("pkcs11") == 10
    # Mid-migration, a node with both root keys serves every key.
    await decrypt_all(stored, RootKeyRing(hsm_key, stored.file_key))
    report = await rewrap(table, stored.file_key, hsm_key, secrets=secrets, batch_rows=5)
    assert (report.rewrapped, report.already_under_target) == (KEYS + others - 10, 10)
    assert report.complete
    await decrypt_all(stored, RootKeyRing(hsm_key))


async def test_a_row_changed_meanwhile_is_left_alone(stored, hsm_key) -> None:
    class RacingTable(WrappedMaterialStore):
        """Deletes one key version (as the node's deletion sweeper would) before a write."""

        raced = False

        async def replace(self, column, replacements):  # type: ignore[no-untyped-def]
            if replacements and not self.raced:
                self.raced = True
                row = replacements[0].row
                async with aiosqlite.connect(stored.database) as other:
                    await other.execute(
                        "DELETE FROM key_versions WHERE key_id = ? AND material_id = ?",
                        row.key,
                    )
                    await other.commit()
            return await super().replace(column, replacements)

    table = await RacingTable.open(stored.database)
    try:
        report = await rewrap(table, stored.file_key, hsm_key, batch_rows=100)
        assert report.skipped_concurrent == 1
        assert report.rewrapped == KEYS - 1
        assert report.complete
    finally:
        await table.close()


async def test_a_row_that_does_not_unwrap_is_reported_and_kept(stored, table, hsm_key) -> None:
    rows = await table.page(KEY_MATERIAL.column, None, limit=1)
    damaged = bytearray(rows[0].wrapped)
    damaged[-1] ^= 0x01
    async with aiosqlite.connect(stored.database) as other:
        await other.execute(
            "UPDATE key_versions SET wrapped_material = ? WHERE key_id = ?",
            (bytes(damaged), rows[0].key[0]),
        )
        await other.commit()
    report = await rewrap(table, stored.file_key, hsm_key)
    assert report.rewrapped == KEYS - 1
    assert report.problem_count == 1
    assert rows[0].key[0] in report.problems[0]
    assert not report.complete
    assert report.remaining_under_source == 1
    assert (await table.page(KEY_MATERIAL.column, None, limit=1))[0].wrapped == bytes(damaged)


async def test_verify_finds_rows_still_under_the_old_key(stored, table, hsm_key) -> None:
    report = await verify(table, hsm_key, _report(stored, hsm_key))
    assert (report.verified, report.remaining_under_source) == (0, KEYS)
    assert not report.complete


async def test_ring_needs_the_previous_key_for_rows_still_under_it(table, hsm_key) -> None:
    row = (await table.page(KEY_MATERIAL.column, None, limit=1))[0]
    with pytest.raises(RootKeyError, match=r"wrapped by a file root key.*\[root_key\.previous\]"):
        await RootKeyRing(hsm_key).unwrap(row.wrapped, aad=KEY_MATERIAL.aad(row.key))


def test_ring_refuses_two_providers_of_one_kind(tmp_path) -> None:
    first = FileRootKeyProvider.open_or_create(tmp_path / "a.key")
    second = FileRootKeyProvider.open_or_create(tmp_path / "b.key")
    with pytest.raises(ValueError, match="another kind"):
        RootKeyRing(first, second)


def _report(stored: Stored, target: RootKeyProvider):  # type: ignore[no-untyped-def]
    from meridian.server.rewrap import RewrapReport

    return RewrapReport(source=stored.file_key.name, target=target.name)


async def test_a_whole_node_moves_into_the_hsm(stored, softhsm) -> None:
    """Everything a real node stores under its root key (key material and the other
    features' secrets) moves; afterwards the node starts and serves without the key file."""
    hsm_root_key = softhsm.root_key_config(stored.config.data_dir)
    store = await WrappedMaterialStore.open(stored.database)
    hsm_key = await open_pkcs11(hsm_root_key.pkcs11)
    try:
        secrets = await present(store, stored_secrets())
        # Every column the code knows is in a node's schema (a renamed table would be
        # silently skipped otherwise).
        assert [item.column for item in secrets] == [item.column for item in stored_secrets()]
        report = await rewrap(store, stored.file_key, hsm_key, secrets=secrets)
        assert report.complete
        assert report.rewrapped >= KEYS  # plus whatever other features stored
    finally:
        await hsm_key.aclose()
        await store.close()

    stored.config.root_key.path.rename(stored.config.data_dir / "root.key.retired")
    await decrypt_all_with_config(stored, dataclasses.replace(stored.config, root_key=hsm_root_key))


async def decrypt_all_with_config(stored: Stored, config: NodeConfig) -> None:
    async with serving(config) as service:
        for blob, plaintext in stored.ciphertexts:
            result = await service.decrypt(
                CALLER,
                ciphertext_blob=blob,
                encryption_context=CONTEXT,
                key_id="",
                encryption_algorithm="",
            )
            assert result.plaintext == plaintext
