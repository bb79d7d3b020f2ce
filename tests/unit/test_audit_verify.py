"""The verifier against every kind of tampering, on a synthetic trail (no node, no SQLite).

Each test builds the same trail (records chained, digests signed), changes one thing
the way an attacker with write access to the file would, and checks that verification
fails and names the place. The untouched trail verifies.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from meridian.server.audit.chain import ChainHead, StoredRecord, genesis_hash, record_hash
from meridian.server.audit.digests import ZERO_HASH, SignedDigest, digest_hash, new_digest_content
from meridian.server.audit.events import (
    AuditEvent,
    ServiceEvent,
    ServiceEventName,
    service_event_document,
)
from meridian.server.audit.verify import TrailFacts, compare_peer_copies, verify_trail
from meridian.server.domain.crypto.audit_signing import AuditSigner

CHAIN = "8d5a7f10-5b7c-4d8e-9b61-0c1f7b2a3e44"
REGION = "us-east-1"
START = datetime(2026, 1, 1, tzinfo=UTC)


def _event(n: int) -> AuditEvent:
    document = service_event_document(
        ServiceEvent(ServiceEventName.ROTATE_KEY, key_arn=f"arn:meridian:kms:{REGION}:1:key/k{n}"),
        region=REGION,
        account_id="111122223333",
        when=START + timedelta(seconds=n),
        event_id=f"event-{n}",
    )
    return AuditEvent.from_document(document)


@dataclasses.dataclass
class Trail:
    records: list[StoredRecord]
    digests: list[SignedDigest]
    keys: dict[str, bytes]
    facts: TrailFacts

    def verify(self):  # type: ignore[no-untyped-def]
        return verify_trail(self.facts, self.records, digests=self.digests, trusted_keys=self.keys)


def build_trail(count: int = 12, seal_every: int = 4) -> Trail:
    signer = AuditSigner(bytes(range(32)))
    records: list[StoredRecord] = []
    digests: list[SignedDigest] = []
    previous = genesis_hash(CHAIN)
    for seq in range(1, count + 1):
        event = _event(seq)
        value = record_hash(seq, previous, event.body)
        records.append(StoredRecord(seq, previous, value, event.body, event.index))
        previous = value
        if seq % seal_every == 0:
            last = digests[-1] if digests else None
            content = new_digest_content(
                region=REGION,
                chain_id=CHAIN,
                number=len(digests) + 1,
                first_seq=seq - seal_every + 1,
                last_seq=seq,
                last_hash=value,
                previous_digest_hash=digest_hash(last.body) if last else ZERO_HASH,
                sealed_at=START,
                signing_key_id=signer.key_id,
            )
            body = content.to_body()
            digests.append(
                SignedDigest(len(digests) + 1, body, signer.sign(body.encode()), signer.key_id)
            )
    facts = TrailFacts(region=REGION, chain_id=CHAIN, head=ChainHead(count, previous))
    return Trail(records, digests, {signer.key_id: signer.public_key}, facts)


def _edit(record: StoredRecord, body: str) -> StoredRecord:
    return dataclasses.replace(record, body=body)


def test_an_untouched_trail_verifies() -> None:
    report = build_trail().verify()
    assert report.ok, report.problems
    assert (report.records_checked, report.digests_checked, report.sealed_through_seq) == (
        12,
        3,
        12,
    )


def test_an_edited_field_is_named() -> None:
    trail = build_trail()
    victim = trail.records[5]
    trail.records[5] = _edit(victim, victim.body.replace('"RotateKey"', '"DeleteKey"'))
    report = trail.verify()
    assert not report.ok
    assert report.first_problem is not None
    assert report.first_problem.seq == 6
    assert "record-edited" in {problem.kind for problem in report.problems}


def test_an_edit_with_recomputed_hashes_is_caught_by_the_digest() -> None:
    trail = build_trail()
    tampered = trail.records[5].body.replace("event-6", "event-x")
    previous = trail.records[4].hash
    for index in range(5, len(trail.records)):
        record = trail.records[index]
        body = tampered if index == 5 else record.body
        value = record_hash(record.seq, previous, body)
        columns = AuditEvent.from_document(json.loads(body)).index
        trail.records[index] = StoredRecord(record.seq, previous, value, body, columns)
        previous = value
    trail.facts = dataclasses.replace(trail.facts, head=ChainHead(12, previous))
    report = trail.verify()
    assert {problem.kind for problem in report.problems} == {"digest-mismatch"}
    assert report.first_problem is not None
    assert report.first_problem.seq == 5  # the first record the broken digest covers


def test_a_deleted_record_is_named() -> None:
    trail = build_trail()
    del trail.records[6]
    report = trail.verify()
    assert report.first_problem is not None
    assert report.first_problem.kind == "record-missing"
    assert report.first_problem.seq == 7


def test_reordered_records_are_caught() -> None:
    trail = build_trail()
    a, b = trail.records[2], trail.records[3]
    # Swap the two rows' contents, keeping their positions (seq is the primary key).
    trail.records[2] = dataclasses.replace(b, seq=3)
    trail.records[3] = dataclasses.replace(a, seq=4)
    report = trail.verify()
    assert report.first_problem is not None
    assert report.first_problem.seq == 3


def test_a_truncated_tail_is_caught() -> None:
    trail = build_trail()
    del trail.records[9:]
    report = trail.verify()
    assert report.first_problem is not None
    assert report.first_problem.kind == "tail-truncated"
    assert report.first_problem.seq == 10


def test_a_truncated_unsealed_tail_is_caught_by_the_head() -> None:
    trail = build_trail(count=14)  # records 13 and 14 are not sealed yet
    del trail.records[12:]
    report = trail.verify()
    assert [problem.kind for problem in report.problems] == ["tail-truncated"]


def test_a_replaced_digest_is_caught() -> None:
    trail = build_trail()
    forged = trail.digests[1].body.replace('"recordCount":4', '"recordCount":4 ')
    trail.digests[1] = dataclasses.replace(trail.digests[1], body=forged)
    kinds = {problem.kind for problem in trail.verify().problems}
    assert "digest-format" in kinds or "digest-signature" in kinds


def test_a_digest_signed_by_another_key_is_caught() -> None:
    trail = build_trail()
    other = AuditSigner(bytes(32))
    digest = trail.digests[0]
    trail.digests[0] = SignedDigest(
        digest.number, digest.body, other.sign(digest.body.encode()), digest.key_id
    )
    problems = trail.verify().problems
    assert [problem.kind for problem in problems] == ["digest-signature"]
    assert problems[0].digest_number == 1


def test_a_column_edited_to_hide_a_record_is_caught() -> None:
    trail = build_trail()
    record = trail.records[2]
    hidden = dataclasses.replace(record.columns, principal_arn="arn:meridian:iam::1:user/nobody")
    trail.records[2] = dataclasses.replace(record, columns=hidden)
    problems = trail.verify().problems
    assert [problem.kind for problem in problems] == ["column-edited"]
    assert "principal_arn" in problems[0].message


def test_pruning_without_a_prune_event_is_caught() -> None:
    trail = build_trail()
    anchor = trail.records[3]
    trail.records = trail.records[4:]
    trail.facts = dataclasses.replace(
        trail.facts, pruned_through_seq=4, pruned_through_hash=anchor.hash
    )
    assert [problem.kind for problem in trail.verify().problems] == ["prune-anchor"]


def test_peer_copies_must_match() -> None:
    trail = build_trail()
    held = list(trail.digests)  # what another region received
    changed = dataclasses.replace(held[2], signature=bytes(3309))
    assert compare_peer_copies(trail.digests, {"eu-west-1": held}) == []
    problems = compare_peer_copies(trail.digests[:2], {"eu-west-1": held})
    assert [problem.digest_number for problem in problems] == [3]
    assert "missing here" in problems[0].message
    problems = compare_peer_copies(trail.digests, {"eu-west-1": [changed]})
    assert "differs" in problems[0].message


@pytest.mark.parametrize("seq", [0, -1])
def test_record_numbers_start_at_one(seq: int) -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        record_hash(seq, bytes(32), "{}")
