"""What the domain needs from storage, declared here and implemented by ``server/storage``.

Reads outside a transaction see only committed state. Writes happen inside
``KeyStore.write()``: one ``BEGIN IMMEDIATE … COMMIT`` per logical change, serialised
across the node, durable (fsync) before the context manager exits, rolled back if the
block raises. Reads made through the transaction see its own uncommitted writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from meridian.server.domain.model import Alias, Key, KeyVersion, Tag


class KeyRepository(Protocol):
    async def get_key(self, key_id: str) -> Key | None: ...

    async def list_keys(self, *, after_key_id: str | None, limit: int) -> list[Key]: ...

    async def get_version(self, key_id: str, material_id: bytes) -> KeyVersion | None: ...

    async def keys_due_for_deletion(self, now: datetime, *, limit: int) -> list[str]: ...

    async def get_alias(self, alias_name: str) -> Alias | None: ...

    async def list_aliases(
        self, *, key_id: str | None, after_alias_name: str | None, limit: int
    ) -> list[Alias]: ...

    async def count_aliases(self, key_id: str) -> int: ...

    async def get_tags(self, key_id: str) -> list[Tag]: ...


class KeyWriter(KeyRepository, Protocol):
    async def insert_key(self, key: Key, version: KeyVersion | None) -> None:
        """Store a new key with its first version (None: an EXTERNAL key, no material yet)."""
        ...

    async def update_key(self, key: Key) -> None:
        """Store every mutable field of ``key`` and bump its revision."""
        ...

    async def delete_key(self, key_id: str) -> None:
        """Remove the key with its versions, aliases and tags."""
        ...

    async def insert_alias(self, alias: Alias) -> None: ...

    async def update_alias(self, alias: Alias) -> None: ...

    async def delete_alias(self, alias_name: str) -> None: ...

    async def put_tags(self, key_id: str, tags: Sequence[Tag]) -> None: ...

    async def delete_tags(self, key_id: str, tag_keys: Sequence[str]) -> None: ...


class KeyStore(Protocol):
    @property
    def reader(self) -> KeyRepository: ...

    def write(self) -> AbstractAsyncContextManager[KeyWriter]: ...
