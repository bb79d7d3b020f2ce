"""The hash chain: each record's hash covers its position, its predecessor and its text.

    genesis  = SHA-256("meridian/audit-genesis/v1" 0x00 || chain_id)
    hash(n)  = SHA-256("meridian/audit-record/v1" 0x00 || uint64_be(n) || hash(n-1) || body)

``body`` is the record's canonical JSON text in UTF-8. Covering the position ``n`` as
well as the predecessor means a record cannot be moved, dropped or duplicated without
changing every hash after it; a sealed digest pins the hash at its last record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from meridian.server.audit.events import RecordIndex

HASH_BYTES = 32
_GENESIS_LABEL = b"meridian/audit-genesis/v1\x00"
_RECORD_LABEL = b"meridian/audit-record/v1\x00"


def genesis_hash(chain_id: str) -> bytes:
    return hashlib.sha256(_GENESIS_LABEL + chain_id.encode("utf-8")).digest()


def record_hash(seq: int, prev_hash: bytes, body: str) -> bytes:
    if seq < 1:
        raise ValueError("records are numbered from 1")
    if len(prev_hash) != HASH_BYTES:
        raise ValueError("a previous hash is 32 bytes")
    digest = hashlib.sha256(_RECORD_LABEL)
    digest.update(seq.to_bytes(8, "big"))
    digest.update(prev_hash)
    digest.update(body.encode("utf-8"))
    return digest.digest()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as the store holds it: chain fields, text, and the columns beside it."""

    seq: int
    prev_hash: bytes
    hash: bytes
    body: str
    columns: RecordIndex


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: bytes
