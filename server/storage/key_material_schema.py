"""Migration 3: key types, rotation and imported material (docs/key-types.md).

Only new tables, plus a backfill that gives every existing key version its record. A
migration is never edited once released: a change of schema is a new number. Statements
are separated by semicolons and contain none themselves (``migrations._statements``
splits on them).
"""

from __future__ import annotations

KEY_MATERIAL_SCHEMA = """
    CREATE TABLE key_material (
        key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        material_id BLOB NOT NULL,
        created_at_us INTEGER NOT NULL,
        public_key BLOB,
        rotation_type TEXT,
        rotation_date_us INTEGER,
        rotation_serial INTEGER,
        pending_rotation INTEGER NOT NULL,
        imported INTEGER NOT NULL,
        import_state TEXT,
        expiration_model TEXT,
        valid_to_us INTEGER,
        description TEXT NOT NULL,
        PRIMARY KEY (key_id, material_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX key_material_expiring ON key_material (valid_to_us)
        WHERE valid_to_us IS NOT NULL AND import_state = 'IMPORTED';
    CREATE TABLE key_rotation (
        key_id TEXT PRIMARY KEY REFERENCES keys (key_id) ON DELETE CASCADE,
        enabled INTEGER NOT NULL,
        period_days INTEGER NOT NULL,
        next_rotation_us INTEGER,
        on_demand_rotations INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX key_rotation_due ON key_rotation (next_rotation_us)
        WHERE next_rotation_us IS NOT NULL;
    INSERT INTO key_material (
        key_id, material_id, created_at_us, public_key, rotation_type, rotation_date_us,
        rotation_serial, pending_rotation, imported, import_state, expiration_model,
        valid_to_us, description
    )
    SELECT key_id, material_id, created_at_us, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, ''
    FROM key_versions
"""
