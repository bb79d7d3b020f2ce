"""SQL for grants and identity policies: the domain's AccessRepository/AccessWriter ports.

These share the node's two connections with the key tables, so an access change is
part of the same durable ``BEGIN IMMEDIATE … COMMIT`` as the key reads it depends on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from meridian.server.domain.access.grants import Grant, GrantConstraints
from meridian.server.domain.access.ports import AccessTransaction, UserPolicy
from meridian.server.storage.repository import from_us, to_us
from meridian.server.storage.store import SqliteStore

_GRANT_COLUMNS = (
    "grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, "
    "operations, constraints, created_at_us"
)
_POLICY_COLUMNS = "principal_arn, policy_name, document, created_at_us, updated_at_us"


def _constraints_json(constraints: GrantConstraints) -> str:
    document: dict[str, dict[str, str]] = {}
    if constraints.encryption_context_equals:
        document["EncryptionContextEquals"] = dict(constraints.encryption_context_equals)
    if constraints.encryption_context_subset:
        document["EncryptionContextSubset"] = dict(constraints.encryption_context_subset)
    return json.dumps(document, sort_keys=True)


def _grant_from_row(row: Any) -> Grant:
    constraints = json.loads(row[7])
    return Grant(
        grant_id=row[0],
        key_id=row[1],
        name=row[2],
        grantee_principal=row[3],
        retiring_principal=row[4],
        issuing_account=row[5],
        operations=tuple(json.loads(row[6])),
        constraints=GrantConstraints(
            encryption_context_equals=constraints.get("EncryptionContextEquals", {}),
            encryption_context_subset=constraints.get("EncryptionContextSubset", {}),
        ),
        created_at=from_us(row[8]),
    )


def _policy_from_row(row: Any) -> UserPolicy:
    return UserPolicy(
        principal_arn=row[0],
        policy_name=row[1],
        document=row[2],
        created_at=from_us(row[3]),
        updated_at=from_us(row[4]),
    )


class SqliteAccessRepository:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    # One hop to aiosqlite's thread per statement (a cursor costs three): grants and
    # identity policies are read on the authorizer's cache misses (storage/repository.py).
    async def _one(self, sql: str, parameters: Sequence[Any]) -> Any:
        rows = await self._db.execute_fetchall(sql, parameters)
        return next(iter(rows), None)

    async def _all(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, parameters))

    async def get_grant(self, grant_id: str) -> Grant | None:
        row = await self._one(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE grant_id = ?", (grant_id,)
        )
        return None if row is None else _grant_from_row(row)

    async def list_grants(
        self,
        key_id: str,
        *,
        grant_id: str | None,
        grantee_principal: str | None,
        after_grant_id: str | None,
        limit: int,
    ) -> list[Grant]:
        rows = await self._all(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE key_id = ? AND grant_id > ? "
            "AND (? IS NULL OR grant_id = ?) AND (? IS NULL OR grantee_principal = ?) "
            "ORDER BY grant_id LIMIT ?",
            (
                key_id,
                after_grant_id or "",
                grant_id,
                grant_id,
                grantee_principal,
                grantee_principal,
                limit,
            ),
        )
        return [_grant_from_row(row) for row in rows]

    async def grants_for(self, key_id: str, grantee_principal: str) -> list[Grant]:
        rows = await self._all(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE key_id = ? AND grantee_principal = ? "
            "ORDER BY grant_id",
            (key_id, grantee_principal),
        )
        return [_grant_from_row(row) for row in rows]

    async def grants_named(self, key_id: str, name: str) -> list[Grant]:
        rows = await self._all(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE key_id = ? AND name = ? ORDER BY grant_id",
            (key_id, name),
        )
        return [_grant_from_row(row) for row in rows]

    async def count_grants(self, key_id: str) -> int:
        row = await self._one("SELECT COUNT(*) FROM grants WHERE key_id = ?", (key_id,))
        return int(row[0])

    async def list_retirable_grants(
        self, retiring_principal: str, *, after_grant_id: str | None, limit: int
    ) -> list[Grant]:
        rows = await self._all(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE retiring_principal = ? AND grant_id > ? "
            "ORDER BY grant_id LIMIT ?",
            (retiring_principal, after_grant_id or "", limit),
        )
        return [_grant_from_row(row) for row in rows]

    async def user_policies(self, principal_arn: str) -> list[UserPolicy]:
        rows = await self._all(
            f"SELECT {_POLICY_COLUMNS} FROM user_policies WHERE principal_arn = ? "
            "ORDER BY policy_name",
            (principal_arn,),
        )
        return [_policy_from_row(row) for row in rows]

    async def get_user_policy(self, principal_arn: str, policy_name: str) -> UserPolicy | None:
        row = await self._one(
            f"SELECT {_POLICY_COLUMNS} FROM user_policies "
            "WHERE principal_arn = ? AND policy_name = ?",
            (principal_arn, policy_name),
        )
        return None if row is None else _policy_from_row(row)

    async def list_user_policy_names(
        self, principal_arn: str, *, after_name: str | None, limit: int
    ) -> list[str]:
        rows = await self._all(
            "SELECT policy_name FROM user_policies WHERE principal_arn = ? AND policy_name > ? "
            "ORDER BY policy_name LIMIT ?",
            (principal_arn, after_name or "", limit),
        )
        return [row[0] for row in rows]

    async def count_user_policies(self, principal_arn: str) -> int:
        row = await self._one(
            "SELECT COUNT(*) FROM user_policies WHERE principal_arn = ?", (principal_arn,)
        )
        return int(row[0])


class SqliteAccessWriter(SqliteAccessRepository):
    """The write half; used only inside the store's write transaction."""

    async def insert_grant(self, grant: Grant) -> None:
        await self._db.execute(
            f"INSERT INTO grants ({_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                grant.grant_id,
                grant.key_id,
                grant.name,
                grant.grantee_principal,
                grant.retiring_principal,
                grant.issuing_account,
                json.dumps(list(grant.operations)),
                _constraints_json(grant.constraints),
                to_us(grant.created_at),
            ),
        )

    async def delete_grant(self, grant_id: str) -> None:
        await self._db.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))

    async def put_user_policy(self, policy: UserPolicy) -> None:
        await self._db.execute(
            f"INSERT INTO user_policies ({_POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (principal_arn, policy_name) DO UPDATE SET "
            "document = excluded.document, updated_at_us = excluded.updated_at_us",
            (
                policy.principal_arn,
                policy.policy_name,
                policy.document,
                to_us(policy.created_at),
                to_us(policy.updated_at),
            ),
        )

    async def delete_user_policy(self, principal_arn: str, policy_name: str) -> None:
        await self._db.execute(
            "DELETE FROM user_policies WHERE principal_arn = ? AND policy_name = ?",
            (principal_arn, policy_name),
        )


class SqliteAccessStore:
    """The AccessStore port over the node's SqliteStore: same connections, same lock."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._reader = SqliteAccessRepository(store.reader.connection)

    @property
    def reader(self) -> SqliteAccessRepository:
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AccessTransaction]:
        async with self._store.write() as keys:
            yield AccessTransaction(keys=keys, access=SqliteAccessWriter(keys.connection))
