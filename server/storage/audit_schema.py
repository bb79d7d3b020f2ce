"""Migration 5: the audit trail, its sealed digests, peers' digests and usage counters.

Only new tables (server/audit/DESIGN.md describes each). A migration is never edited
once released: a change of schema is a new number. Statements are separated by
semicolons and contain none themselves (``migrations._statements`` splits on them).
"""

from __future__ import annotations

AUDIT_SCHEMA = """
    CREATE TABLE audit_state (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        chain_id TEXT NOT NULL,
        region TEXT NOT NULL,
        tracking_start_us INTEGER NOT NULL,
        head_seq INTEGER NOT NULL,
        head_hash BLOB NOT NULL,
        pruned_through_seq INTEGER NOT NULL,
        pruned_through_hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_records (
        seq INTEGER PRIMARY KEY,
        event_time_us INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        event_name TEXT NOT NULL,
        principal_arn TEXT NOT NULL,
        key_arn TEXT NOT NULL,
        related_key_arn TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error_code TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    ) STRICT;
    CREATE INDEX audit_records_by_time ON audit_records (event_time_us);
    CREATE INDEX audit_records_by_key ON audit_records (key_arn, event_time_us)
        WHERE key_arn != '';
    CREATE INDEX audit_records_by_related_key ON audit_records (related_key_arn, event_time_us)
        WHERE related_key_arn != '';
    CREATE INDEX audit_records_by_principal ON audit_records (principal_arn, event_time_us);
    CREATE TABLE audit_intents (
        request_id TEXT PRIMARY KEY,
        created_at_us INTEGER NOT NULL,
        body TEXT NOT NULL
    ) STRICT;
    CREATE TABLE audit_signing_keys (
        key_id TEXT PRIMARY KEY,
        created_at_us INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        wrapped_private_key BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_digests (
        number INTEGER PRIMARY KEY,
        last_seq INTEGER NOT NULL,
        sealed_at_us INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        body TEXT NOT NULL,
        signature BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_peer_keys (
        origin_region TEXT NOT NULL,
        key_id TEXT NOT NULL,
        public_key BLOB NOT NULL,
        first_seen_us INTEGER NOT NULL,
        PRIMARY KEY (origin_region, key_id)
    ) STRICT;
    CREATE TABLE audit_peer_digests (
        origin_region TEXT NOT NULL,
        number INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        body TEXT NOT NULL,
        signature BLOB NOT NULL,
        received_at_us INTEGER NOT NULL,
        PRIMARY KEY (origin_region, number)
    ) STRICT;
    CREATE TABLE audit_peer_positions (
        peer_region TEXT PRIMARY KEY,
        acked_number INTEGER NOT NULL,
        updated_at_us INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key_arn TEXT NOT NULL,
        operation TEXT NOT NULL,
        requests INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (day, key_arn, operation)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE key_last_usage (
        key_arn TEXT PRIMARY KEY,
        operation TEXT NOT NULL,
        used_at_us INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        request_id TEXT NOT NULL
    ) STRICT
"""
