"""Verification of a region's audit trail: the chain, the digests, the peers' copies.

Pure: the caller streams records in ascending ``seq`` from any source (the SQLite file,
a node over gRPC) and hands over the digests, the trusted public keys and the trail's
head and prune anchor. Verification never stops at the first problem, but the report
names the first broken record, which is where an investigation starts.

What each kind of tampering looks like:

- a field edited: the record's hash no longer matches its text (``record-edited``);
  if the attacker re-computed the hashes after it, the sealed digest that covers it no
  longer matches (``digest-mismatch``);
- a column edited to hide a record from queries: ``column-edited``;
- a record deleted: a gap in the numbering (``record-missing``), or, renumbered, a
  broken link (``chain-broken``);
- records reordered: hashes cover the position, so ``record-edited``/``chain-broken``;
- the tail truncated: the trail's head or a digest names records that are gone
  (``tail-truncated``);
- a digest replaced or edited: its signature or the digest chain fails
  (``digest-signature``, ``digest-chain``); one forged with a stolen key still differs
  from the copies other regions hold (``peer-mismatch``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meridian.server.audit.chain import ChainHead, StoredRecord, genesis_hash, record_hash
from meridian.server.audit.digests import ZERO_HASH, DigestContent, SignedDigest, digest_hash
from meridian.server.audit.events import (
    AuditFormatError,
    ServiceEventName,
    index_of,
    parse_document,
)
from meridian.server.domain.crypto import audit_signing

_RECORD_KINDS = frozenset(
    {"record-edited", "record-missing", "record-order", "chain-broken", "column-edited"}
)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    message: str
    seq: int | None = None
    digest_number: int | None = None


@dataclass(frozen=True, slots=True)
class TrailFacts:
    """What the store says about the trail as a whole (itself subject to checking)."""

    region: str
    chain_id: str
    head: ChainHead
    pruned_through_seq: int = 0
    pruned_through_hash: bytes | None = None  # None: nothing pruned (genesis)


@dataclass
class VerifyReport:
    region: str
    records_checked: int = 0
    digests_checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    sealed_through_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        """The earliest broken record: a problem of one record is more precise than a
        digest's "somewhere in this range", so those come first, by position."""
        if not self.problems:
            return None
        for kinds in (_RECORD_KINDS, None):
            candidates = [
                problem
                for problem in self.problems
                if problem.seq is not None and (kinds is None or problem.kind in kinds)
            ]
            if candidates:
                return min(candidates, key=lambda problem: problem.seq or 0)
        return self.problems[0]


class TrailVerifier:
    """Feed records in ascending seq, then call :meth:`finish`."""

    def __init__(
        self,
        facts: TrailFacts,
        *,
        digests: Sequence[SignedDigest],
        trusted_keys: Mapping[str, bytes],
    ) -> None:
        self._facts = facts
        self._report = VerifyReport(region=facts.region)
        self._anchor_seq = facts.pruned_through_seq
        self._expected_seq = facts.pruned_through_seq + 1
        self._previous_hash = facts.pruned_through_hash or genesis_hash(facts.chain_id)
        self._last_seen: StoredRecord | None = None
        self._prune_events_through = 0
        self._sealed: dict[int, DigestContent] = {}
        self._check_digests(digests, trusted_keys)

    # ---- digests --------------------------------------------------------------------

    def _check_digests(
        self, digests: Sequence[SignedDigest], trusted_keys: Mapping[str, bytes]
    ) -> None:
        previous: SignedDigest | None = None
        for digest in sorted(digests, key=lambda item: item.number):
            self._report.digests_checked += 1
            number = digest.number
            try:
                content = digest.content
            except AuditFormatError as error:
                self._problem(
                    "digest-format", f"digest {number} is malformed: {error}", None, number
                )
                previous = None
                continue
            public_key = trusted_keys.get(digest.key_id)
            if public_key is None or content.signing_key_id != digest.key_id:
                self._problem(
                    "digest-signature",
                    f"digest {number} is signed by key {digest.key_id}, which is not trusted",
                    None,
                    number,
                )
            else:
                try:
                    audit_signing.verify(public_key, digest.body.encode("utf-8"), digest.signature)
                except audit_signing.AuditSignatureError:
                    self._problem(
                        "digest-signature",
                        f"digest {number}: the signature does not verify (digest replaced or "
                        "edited)",
                        None,
                        number,
                    )
            if content.number != number or content.chain_id != self._facts.chain_id:
                self._problem(
                    "digest-chain",
                    f"digest {number} belongs to another chain or position",
                    None,
                    number,
                )
            expected_previous = ZERO_HASH if number == 1 else None
            if previous is not None and previous.number == number - 1:
                expected_previous = digest_hash(previous.body)
            if expected_previous is None:
                self._problem("digest-chain", f"digest {number - 1} is missing", None, number - 1)
            elif content.previous_digest_hash != expected_previous:
                self._problem(
                    "digest-chain",
                    f"digest {number} does not follow digest {number - 1}",
                    None,
                    number,
                )
            self._sealed.setdefault(content.last_seq, content)
            self._report.sealed_through_seq = max(self._report.sealed_through_seq, content.last_seq)
            previous = digest
        if self._anchor_seq > 0:
            anchor = self._sealed.get(self._anchor_seq)
            if anchor is None or anchor.last_hash != self._facts.pruned_through_hash:
                self._problem(
                    "prune-anchor",
                    f"records up to {self._anchor_seq} are said to be pruned, but no sealed "
                    "digest attests that boundary",
                    self._anchor_seq,
                )

    # ---- records ----------------------------------------------------------------------

    def feed(self, record: StoredRecord) -> None:
        report = self._report
        report.records_checked += 1
        seq = record.seq
        if report.first_seq is None:
            report.first_seq = seq
        report.last_seq = seq
        if self._last_seen is not None and seq <= self._last_seen.seq:
            self._problem(
                "record-order", f"record {seq} comes after record {self._last_seen.seq}", seq
            )
            return
        if seq > self._expected_seq:
            missing = _range(self._expected_seq, seq - 1)
            self._problem("record-missing", f"{missing} missing (deleted)", self._expected_seq)
        elif record.prev_hash != self._previous_hash:
            self._problem(
                "chain-broken",
                f"record {seq} does not follow record {seq - 1} (a record was removed, "
                "reordered or edited before it)",
                seq,
            )
        if record_hash(seq, record.prev_hash, record.body) != record.hash:
            self._problem(
                "record-edited",
                f"record {seq}: its text does not match its hash (edited, moved or replaced)",
                seq,
            )
        self._check_columns(record)
        sealed = self._sealed.get(seq)
        if sealed is not None and sealed.last_hash != record.hash:
            self._problem(
                "digest-mismatch",
                f"records {sealed.first_seq}-{seq} do not match sealed digest {sealed.number} "
                "(history rewritten)",
                sealed.first_seq,
                sealed.number,
            )
        self._expected_seq = seq + 1
        self._previous_hash = record.hash
        self._last_seen = record

    def _check_columns(self, record: StoredRecord) -> None:
        try:
            document = parse_document(record.body)
            derived = index_of(document)
        except AuditFormatError as error:
            self._problem("record-edited", f"record {record.seq} is malformed: {error}", record.seq)
            return
        if derived != record.columns:
            changed = [
                name
                for name in derived.__slots__
                if getattr(derived, name) != getattr(record.columns, name)
            ]
            self._problem(
                "column-edited",
                f"record {record.seq}: column(s) {', '.join(changed)} disagree with its text",
                record.seq,
            )
        if derived.event_name == ServiceEventName.PRUNE_AUDIT_RECORDS.value:
            details = document.get("additionalEventData") or {}
            through = details.get("throughSeq") if isinstance(details, dict) else None
            if isinstance(through, int):
                self._prune_events_through = max(self._prune_events_through, through)

    # ---- the end --------------------------------------------------------------------

    def finish(self) -> VerifyReport:
        report = self._report
        head = self._facts.head
        last_seq = self._last_seen.seq if self._last_seen else self._anchor_seq
        if head.seq > last_seq:
            self._problem(
                "tail-truncated",
                f"{_range(last_seq + 1, head.seq)} missing: the trail's head is record "
                f"{head.seq} (tail truncated)",
                last_seq + 1,
            )
        elif (
            self._last_seen is not None
            and head.seq == last_seq
            and head.hash != self._last_seen.hash
        ):
            self._problem(
                "tail-truncated", f"record {last_seq} is not the head the trail recorded", last_seq
            )
        for content in sorted(self._sealed.values(), key=lambda item: item.number):
            if content.last_seq > last_seq:
                self._problem(
                    "tail-truncated",
                    f"sealed digest {content.number} covers records up to {content.last_seq}, "
                    f"but the trail ends at {last_seq}",
                    last_seq + 1,
                    content.number,
                )
                break
        if self._anchor_seq > self._prune_events_through:
            self._problem(
                "prune-anchor",
                f"records up to {self._anchor_seq} are gone, but no PruneAuditRecords event "
                "says they were pruned",
                self._anchor_seq,
            )
        return report

    def _problem(
        self, kind: str, message: str, seq: int | None, digest_number: int | None = None
    ) -> None:
        self._report.problems.append(Problem(kind, message, seq, digest_number))


def verify_trail(
    facts: TrailFacts,
    records: Iterable[StoredRecord],
    *,
    digests: Sequence[SignedDigest],
    trusted_keys: Mapping[str, bytes],
) -> VerifyReport:
    verifier = TrailVerifier(facts, digests=digests, trusted_keys=trusted_keys)
    for record in records:
        verifier.feed(record)
    return verifier.finish()


def compare_peer_copies(
    own: Sequence[SignedDigest], copies: Mapping[str, Sequence[SignedDigest]]
) -> list[Problem]:
    """Digests other regions hold for this region must be exactly this region's digests."""
    by_number = {digest.number: digest for digest in own}
    problems: list[Problem] = []
    for peer, held in sorted(copies.items()):
        for copy in sorted(held, key=lambda item: item.number):
            mine = by_number.get(copy.number)
            if mine is None:
                problems.append(
                    Problem(
                        "peer-mismatch",
                        f"digest {copy.number} is held by {peer} but missing here (deleted?)",
                        None,
                        copy.number,
                    )
                )
            elif (mine.body, mine.signature) != (copy.body, copy.signature):
                problems.append(
                    Problem(
                        "peer-mismatch",
                        f"digest {copy.number} differs from the copy {peer} holds (replaced?)",
                        None,
                        copy.number,
                    )
                )
    return problems


def _range(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}-{last}"
