"""Migration 2: multi-Region keys and the replication log (replication/DESIGN.md).

Only new tables. A migration is never edited once released: a change of schema is a new
number. Statements are separated by semicolons and contain none themselves
(``migrations._statements`` splits on them).

- ``replication_log``: this region's log: its id (random, made on first use) and counters.
- ``replication_outbox``: the transactional outbox. Appended in the same transaction as
  the change it records; read by the shippers; pruned only behind what every peer has
  acknowledged (or past the retention limit, after which a peer gets a snapshot).
- ``mrk_state``: this region's view of each multi-Region key it holds or held (the shared
  state, as canonical JSON) and what it remembers locally (hand-over, peer reports). Not
  tied to ``keys`` by a foreign key: a deleted replica's view stays as its tombstone.
- ``replication_inbound``: per origin region, the origin's log id and the highest sequence
  number applied, written in the same transaction as the entries.
- ``replication_peers``: per peer, its pinned public keys and what it acknowledged of this
  region's log.
- ``replication_identity``: this node's signing and wrapping key seeds, wrapped by the
  region root key (a column of ``server/rewrap.py``'s ``stored_secrets``).
"""

from __future__ import annotations

REPLICATION_SCHEMA = """
    CREATE TABLE replication_log (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        log_id BLOB NOT NULL,
        head_seq INTEGER NOT NULL,
        first_retained_seq INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE replication_outbox (
        seq INTEGER PRIMARY KEY,
        key_id TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        created_at_us INTEGER NOT NULL,
        record BLOB NOT NULL
    ) STRICT;
    CREATE TABLE mrk_state (
        key_id TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        primary_region TEXT NOT NULL,
        pending INTEGER NOT NULL,
        state BLOB NOT NULL,
        meta BLOB NOT NULL,
        updated_at_us INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX mrk_state_pending ON mrk_state (key_id) WHERE pending = 1;
    CREATE TABLE replication_inbound (
        origin_region TEXT PRIMARY KEY,
        log_id BLOB NOT NULL,
        applied_seq INTEGER NOT NULL,
        applied_at_us INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE replication_peers (
        region TEXT PRIMARY KEY,
        signing_public_key BLOB,
        wrap_x25519_public_key BLOB,
        wrap_mlkem_public_key BLOB,
        pinned_at_us INTEGER,
        acked_log_id BLOB,
        acked_seq INTEGER NOT NULL,
        acked_at_us INTEGER
    ) STRICT;
    CREATE TABLE replication_identity (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        wrapped_seeds BLOB NOT NULL,
        created_at_us INTEGER NOT NULL
    ) STRICT
"""
