"""What the audit trail needs from storage; ``server/storage/audit_store.py`` implements it.

Every method that writes is one durable SQLite transaction (``synchronous=FULL``):
when it returns, the change survives SIGKILL and power loss; when it raises, nothing
of it was written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from meridian.server.audit.chain import ChainHead, StoredRecord
from meridian.server.audit.digests import SignedDigest
from meridian.server.audit.events import AuditEvent


@dataclass(frozen=True, slots=True)
class TrailState:
    chain_id: str
    region: str
    tracking_start_us: int
    head: ChainHead
    pruned_through_seq: int
    pruned_through_hash: bytes


@dataclass(frozen=True, slots=True)
class Intent:
    """Written before a state-changing call runs; replaced by its record when it ends."""

    request_id: str
    created_at_us: int
    body: str


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    key_id: str
    created_at_us: int
    public_key: bytes
    wrapped_private_key: bytes


@dataclass(frozen=True, slots=True)
class NewRecord:
    seq: int
    prev_hash: bytes
    hash: bytes
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class UsageIncrement:
    day: str  # YYYY-MM-DD, UTC
    key_arn: str  # "" for calls that name no key
    operation: str
    requests: int
    failures: int


@dataclass(frozen=True, slots=True)
class LastUse:
    key_arn: str
    operation: str
    used_at_us: int
    event_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class NewDigest:
    digest: SignedDigest
    last_seq: int
    sealed_at_us: int


@dataclass
class CommitBatch:
    """Everything one group commit writes, in one transaction."""

    head: ChainHead
    records: list[NewRecord] = field(default_factory=list)
    intents_put: list[Intent] = field(default_factory=list)
    intents_done: list[str] = field(default_factory=list)
    usage: list[UsageIncrement] = field(default_factory=list)
    last_uses: list[LastUse] = field(default_factory=list)
    digest: NewDigest | None = None
    # Set when pruning: the new anchor (records at or below it are no longer part of
    # the verifiable trail and are deleted afterwards).
    prune_anchor: tuple[int, bytes] | None = None


@dataclass(frozen=True, slots=True)
class RecordQuery:
    after_seq: int = 0
    limit: int = 1000
    key_arn: str = ""
    principal_arn: str = ""
    event_name: str = ""
    outcome: str = ""
    error_code: str = ""
    start_us: int | None = None
    end_us: int | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    key_arn: str
    operation: str
    requests: int
    failures: int


@dataclass(frozen=True, slots=True)
class KeyInventoryRow:
    key_arn: str
    key_state: str
    created_at_us: int


class GroupCommitConnection(Protocol):
    """The writer thread's own connection: synchronous, used only on that thread."""

    @property
    def connection(self) -> Any: ...

    def commit(self, batch: CommitBatch) -> None:
        """Write ``batch`` in one durable transaction, or raise and write nothing."""
        ...

    def commit_on_chain(self, build: Callable[[ChainHead, NewDigest | None], CommitBatch]) -> None:
        """Like ``commit``, for the batch ``build`` makes from the chain head and last
        digest stored in the database, read inside the same transaction."""
        ...

    def intents(self) -> list[Intent]: ...

    def close(self) -> None: ...


class AuditStorage(Protocol):
    def open_group_commit(self) -> GroupCommitConnection:
        """A new connection for the group-commit thread (called on that thread)."""
        ...

    async def load_state(self) -> TrailState | None: ...

    async def create_state(self, state: TrailState) -> TrailState:
        """Insert the trail's state unless one exists; returns the stored one."""
        ...

    async def signing_keys(self) -> list[SigningKeyRow]: ...

    async def add_signing_key(self, row: SigningKeyRow) -> None: ...

    async def intents(self) -> list[Intent]: ...

    async def last_digest(self) -> NewDigest | None: ...

    async def digests(self, *, after_number: int, limit: int) -> list[SignedDigest]: ...

    async def records(self, query: RecordQuery) -> list[StoredRecord]: ...

    async def last_record(self) -> StoredRecord | None: ...

    async def prunable_digest(self, cutoff_us: int) -> NewDigest | None:
        """The newest digest whose last record is older than ``cutoff_us``."""
        ...

    async def delete_pruned(self, through_seq: int, *, rows_max: int) -> int:
        """Delete up to ``rows_max`` records at or below ``through_seq``; returns how many."""
        ...

    async def peer_position(self, peer_region: str) -> int: ...

    async def set_peer_position(self, peer_region: str, acked_number: int, now_us: int) -> None: ...

    async def store_peer_digests(
        self,
        origin_region: str,
        keys: Sequence[tuple[str, bytes]],
        digests: Sequence[SignedDigest],
        now_us: int,
    ) -> None: ...

    async def peer_digests(
        self, origin_region: str, *, after_number: int, limit: int
    ) -> list[SignedDigest]: ...

    async def peer_keys(self, origin_region: str) -> list[tuple[str, bytes]]: ...

    async def peer_regions(self) -> list[str]:
        """Regions whose digests this region holds."""
        ...

    async def usage_rows(self, *, first_day: str, last_day: str) -> list[UsageRow]: ...

    async def last_use(self, key_arn: str) -> LastUse | None: ...

    async def last_uses(self) -> list[LastUse]: ...

    async def key_inventory(self) -> list[KeyInventoryRow]: ...

    async def close(self) -> None: ...
