"""Numbered schema migrations, applied in order at start, each in its own transaction.

A migration is never edited once released: a change of schema is a new number.
"""

from __future__ import annotations

import aiosqlite

from meridian.server.storage.access_key_schema import ACCESS_KEY_SCHEMA
from meridian.server.storage.access_schema import ACCESS_SCHEMA
from meridian.server.storage.audit_schema import AUDIT_SCHEMA
from meridian.server.storage.idempotency import IDEMPOTENCY_SCHEMA
from meridian.server.storage.key_material_schema import KEY_MATERIAL_SCHEMA
from meridian.server.storage.replication_schema import REPLICATION_SCHEMA

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE keys (
            key_id TEXT PRIMARY KEY,
            arn TEXT NOT NULL,
            account_id TEXT NOT NULL,
            region TEXT NOT NULL,
            created_at_us INTEGER NOT NULL,
            description TEXT NOT NULL,
            key_spec TEXT NOT NULL,
            key_usage TEXT NOT NULL,
            origin TEXT NOT NULL,
            key_state TEXT NOT NULL,
            policy TEXT NOT NULL,
            current_material_id BLOB NOT NULL,
            multi_region INTEGER NOT NULL,
            deletion_date_us INTEGER,
            pending_window_days INTEGER,
            revision INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX keys_due_for_deletion ON keys (deletion_date_us)
            WHERE deletion_date_us IS NOT NULL;
        CREATE TABLE key_versions (
            key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            material_id BLOB NOT NULL,
            created_at_us INTEGER NOT NULL,
            wrapped_material BLOB NOT NULL,
            PRIMARY KEY (key_id, material_id)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE aliases (
            alias_name TEXT PRIMARY KEY,
            target_key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            created_at_us INTEGER NOT NULL,
            updated_at_us INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX aliases_by_key ON aliases (target_key_id, alias_name);
        CREATE TABLE tags (
            key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
            tag_key TEXT NOT NULL,
            tag_value TEXT NOT NULL,
            PRIMARY KEY (key_id, tag_key)
        ) STRICT, WITHOUT ROWID;
        """,
    ),
    # 2: multi-Region keys and the replication log (replication/DESIGN.md).
    (2, REPLICATION_SCHEMA),
    # 3: key types, rotation and imported material (docs/key-types.md).
    (3, KEY_MATERIAL_SCHEMA),
    # 4: access control's grants and identity policies (server/domain/access/DESIGN.md).
    (4, ACCESS_SCHEMA),
    # 5: the audit trail, its digests and the usage counters (server/audit/DESIGN.md).
    (5, AUDIT_SCHEMA),
    # 7: the SDK's idempotency tokens (server/storage/idempotency.py).
    (7, IDEMPOTENCY_SCHEMA),
    # 8: the AWS endpoint's access keys (server/gateway/DESIGN.md).
    (8, ACCESS_KEY_SCHEMA),
    # 9: scale. `meridian_keys` (metrics.py) counts keys by state every 15 s; without an
    # index that read the whole keys table (5 s at a million keys), with it only this
    # small index (0.4 s). Built once at the first start of an existing database.
    (9, "CREATE INDEX keys_by_state ON keys (key_state)"),
)


async def apply_migrations(connection: aiosqlite.Connection) -> int:
    """Bring the schema up to date; returns the resulting version."""
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY) STRICT"
    )
    async with connection.execute("SELECT version FROM schema_migrations") as cursor:
        applied = {int(row[0]) for row in await cursor.fetchall()}
    current = max(applied, default=0)
    # Sorted: features add their reserved numbers in parallel, in any order in the tuple.
    # A reserved number that lands after a higher one (a database made in between) is
    # still applied: what counts is the set applied, not the highest.
    for version, script in sorted(MIGRATIONS):
        if version in applied:
            continue
        # executescript would COMMIT on its own; run statement by statement inside one
        # explicit transaction so that a crash leaves either all or none of a migration.
        await connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO schema_migrations (version) VALUES (?)", (version,)
            )
            await connection.execute("COMMIT")
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
        current = max(current, version)
    return current


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]
