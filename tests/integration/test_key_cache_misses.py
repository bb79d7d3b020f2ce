"""A key cache miss costs one statement: the key row and its current version together.

A region whose callers spread over more keys than the caches hold misses on most calls
(docs/performance.md, "Scale"); each statement is a hop to aiosqlite's thread, so a miss
of Encrypt, Decrypt or GenerateDataKey must read the key and the version it needs at
once. The version so kept is committed state like the key: a commit must drop it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

import conftest
from conftest import RunningNode, node_config, secure_channel
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.cache_settings import CacheSettings
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.model import Key, KeySpec, KeyState, KeyUsage, KeyVersion, Origin
from meridian.server.node import Node
from meridian.server.storage.repository import SqliteRepository, to_us
from meridian.server.storage.store import SqliteStore

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


@contextmanager
def counted_statements(
    connection: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Every statement sent to ``connection`` meanwhile (its SQL text)."""
    statements: list[str] = []
    for name in ("execute", "execute_fetchall", "executemany"):
        original = getattr(connection, name)

        def counting(sql: str, *args: Any, _original: Any = original) -> Any:
            statements.append(sql)
            return _original(sql, *args)

        monkeypatch.setattr(connection, name, counting)
    try:
        yield statements
    finally:
        monkeypatch.undo()


def _key(key_id: str, material_id: bytes, origin: Origin = Origin.AWS_KMS) -> Key:
    return Key(
        key_id=key_id,
        arn=f"arn:meridian:kms:us-east-1:000000000000:key/{key_id}",
        account_id="000000000000",
        region="us-east-1",
        created_at=CREATED,
        description="",
        key_spec=KeySpec.SYMMETRIC_DEFAULT,
        key_usage=KeyUsage.ENCRYPT_DECRYPT,
        origin=origin,
        state=KeyState.ENABLED if origin is Origin.AWS_KMS else KeyState.PENDING_IMPORT,
        policy="{}",
        current_material_id=material_id,
    )


def _version(key_id: str, material_id: bytes) -> KeyVersion:
    return KeyVersion(
        key_id=key_id, material_id=material_id, created_at=CREATED, wrapped_material=b"w" * 62
    )


async def test_the_current_version_comes_with_the_key_and_leaves_with_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteStore.open(tmp_path / "meridian.sqlite3")
    try:
        current, older = b"c" * 32, b"o" * 32
        async with store.write() as tx:
            await tx.insert_key(_key("k", current), _version("k", current))
            # An older version, as a rotation leaves it.
            await tx.connection.execute(
                "INSERT INTO key_versions (key_id, material_id, created_at_us, wrapped_material)"
                " VALUES (?, ?, ?, ?)",
                ("k", older, to_us(CREATED), b"w" * 62),
            )
        reader = store.reader
        with counted_statements(reader.connection, monkeypatch) as statements:
            key = await reader.get_key("k")
            assert key is not None and len(statements) == 1
            assert await reader.get_version("k", current) == _version("k", current)
            assert len(statements) == 1  # no second read
            # An older version is not kept with the key: it is read.
            assert await reader.get_version("k", older) == _version("k", older)
            assert len(statements) == 2
        async with store.write_connection() as connection:
            await connection.execute(
                "DELETE FROM key_versions WHERE key_id = ? AND material_id = ?", ("k", current)
            )
        # The commit dropped the version kept with the key: it is gone, not served stale.
        assert await reader.get_version("k", current) is None
        key = await reader.get_key("k")
        assert key is not None and await reader.get_version("k", current) is None
    finally:
        await store.close()


async def test_a_key_without_material_reads_as_before(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "meridian.sqlite3")
    try:
        async with store.write() as tx:
            await tx.insert_key(_key("e", b"", Origin.EXTERNAL), None)
        assert await store.reader.get_key("e") == _key("e", b"", Origin.EXTERNAL)
        assert await store.reader.get_version("e", b"") is None
        assert await store.reader.get_key("missing") is None
    finally:
        await store.close()


async def test_encrypt_decrypt_and_describe_of_an_uncached_key_read_once(
    running_node: RunningNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, node = running_node.stub, running_node.node
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    blob = (await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))).ciphertext_blob
    reader = node.service.store.reader
    assert isinstance(reader, SqliteRepository)

    async def forget_everything() -> None:
        await stub.CreateKey(pb.CreateKeyRequest())  # a commit: the key cache misses
        node.service.forget_all_materials()

    calls = {
        "Encrypt": lambda: stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x")),
        "Decrypt": lambda: stub.Decrypt(pb.DecryptRequest(ciphertext_blob=blob)),
        "GenerateDataKey": lambda: stub.GenerateDataKey(
            pb.GenerateDataKeyRequest(key_id=key_id, key_spec="AES_256")
        ),
        "DescribeKey": lambda: stub.DescribeKey(pb.DescribeKeyRequest(key_id=key_id)),
    }
    for operation, call in calls.items():
        await forget_everything()
        with counted_statements(reader.connection, monkeypatch) as statements:
            await call()
        assert len(statements) == 1, (operation, statements)
        # And a call that finds everything cached runs none.
        with counted_statements(reader.connection, monkeypatch) as statements:
            await call()
        assert statements == [], (operation, statements)


async def test_the_configured_cache_sizes_bound_both_caches(
    test_pki: conftest.TestPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = replace(
        node_config(test_pki, tmp_path / "data"),
        caches=CacheSettings(keys_max=1, materials_max=1),
    )
    node = Node(config=config, clock=FakeClock())
    port = await node.start()
    channel = secure_channel(test_pki, f"127.0.0.1:{port}")
    try:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        first, second = [
            (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id for _ in range(2)
        ]
        reader = node.service.store.reader
        assert isinstance(reader, SqliteRepository)
        for key_id in (first, second):
            await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"x"))
        with counted_statements(reader.connection, monkeypatch) as statements:
            # The second key pushed the first out of both one-entry caches.
            await stub.Encrypt(pb.EncryptRequest(key_id=first, plaintext=b"x"))
            assert len(statements) == 1
            # The first is now the one held.
            await stub.Encrypt(pb.EncryptRequest(key_id=first, plaintext=b"x"))
            assert len(statements) == 1
    finally:
        await channel.close()
        await node.stop()
