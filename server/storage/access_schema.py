"""Migration 4: access control's tables (grants and identity policies). Additive only.

Key policies need no table: each key's policy is the ``keys.policy`` column it always
had. Grants belong to a key and go when it goes (ON DELETE CASCADE); identity policies
belong to a principal, which Meridian does not store (principals are named by their
certificates), so they stay until an administrator deletes them.
"""

from __future__ import annotations

ACCESS_SCHEMA = """
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    grantee_principal TEXT NOT NULL,
    retiring_principal TEXT NOT NULL,
    issuing_account TEXT NOT NULL,
    operations TEXT NOT NULL,
    constraints TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
) STRICT;
CREATE INDEX grants_by_key ON grants (key_id, grant_id);
CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal);
CREATE INDEX grants_by_name ON grants (key_id, name) WHERE name != '';
CREATE INDEX grants_by_retiring_principal ON grants (retiring_principal, grant_id)
    WHERE retiring_principal != '';
CREATE TABLE user_policies (
    principal_arn TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    PRIMARY KEY (principal_arn, policy_name)
) STRICT, WITHOUT ROWID;
"""
