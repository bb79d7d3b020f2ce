"""Migration 8: the AWS endpoint's access keys (server/gateway/DESIGN.md).

One new table. Each secret is stored wrapped by the region's root key, bound to its
access key id, because SigV4 is an HMAC: the verifier needs the secret itself, so a
one-way hash of it could not verify anything. A revoked key keeps its row (with the
secret erased) so that audit records naming it can still be traced to its principal.
Statements contain no semicolons (``migrations._statements`` splits on them).
"""

from __future__ import annotations

ACCESS_KEY_SCHEMA = """
    CREATE TABLE aws_access_keys (
        access_key_id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        revoked_at_us INTEGER,
        wrapped_secret BLOB,
        CHECK ((revoked_at_us IS NULL) = (wrapped_secret IS NOT NULL))
    ) STRICT;
    CREATE INDEX aws_access_keys_by_principal ON aws_access_keys (principal, access_key_id)
"""
