"""The pieces that make catch-up fast keep their meaning: bulk reads and writes of the
replication tables, replica requests checked once per batch, and the short retry cap for a
peer that was reachable a moment ago."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from test_multi_region_state import EU, US, _base, _replicated

from meridian.replication.core.shipper import PeerShipper, ShipperLimits
from meridian.replication.wire import WireError, record_from_proto, record_to_proto
from meridian.server.domain.model import Key, KeyState, KeyVersion
from meridian.server.domain.multi_region import LocalMeta, Record, ReplicaRequest, SharedState
from meridian.server.domain.multi_region_codec import decode_record
from meridian.server.storage.replication_repository import (
    KEY_IDS_PER_QUERY_MAX,
    SqliteReplicationWriter,
)
from meridian.server.storage.repository import from_us
from meridian.server.storage.store import SqliteStore

# ---- replica requests: each distinct one checked once per batch, never skipped ------------


def _record_with_policy(policy: str) -> Record:
    state = _replicated()
    member = state.members[EU]
    assert member.request is not None
    members = dict(state.members)
    members[EU] = replace(member, request=ReplicaRequest(description="eu", policy=policy))
    return Record(
        author_region=US, author_key_state="Enabled", state=replace(state, members=members)
    )


def test_a_shared_set_of_checked_requests_skips_only_what_it_checked() -> None:
    checked: set[ReplicaRequest] = set()
    good = _record_with_policy("")
    assert record_from_proto(record_to_proto(good), checked_requests=checked) == good
    assert {m.request for m in good.state.members.values() if m.request} <= checked
    # A request the set has not seen is checked, even in the same batch: a bad policy is
    # still refused, and nothing about it is remembered.
    bad = _record_with_policy("{not a policy")
    with pytest.raises(WireError):
        record_from_proto(record_to_proto(bad), checked_requests=checked)
    assert all(request.policy != "{not a policy" for request in checked)
    with pytest.raises(WireError):
        record_from_proto(record_to_proto(bad))


# ---- the retry cap of a peer seen a moment ago ---------------------------------------------


def test_a_peer_reached_recently_is_retried_within_the_short_cap() -> None:
    limits = ShipperLimits(
        backoff_initial_s=0.1, backoff_max_s=10.0, backoff_recent_max_s=1.0, recent_contact_s=60
    )
    shipper = PeerShipper(EU, limits, random.Random(3))
    shipper.next_action(0.0, retained_first_seq=1, head_seq=0)
    shipper.on_position(0.0, 0)  # reached at t=0
    now = 0.0
    delays = []
    for _ in range(10):
        shipper.next_action(now, retained_first_seq=1, head_seq=0)
        shipper.on_failure(now, "unreachable")
        delays.append(shipper.retry_at - now)
        now = shipper.retry_at
    assert max(delays) <= 1.0
    assert delays[-1] >= 0.5  # still exponential up to the cap, with equal jitter
    # Long after the last contact, the cap is the ordinary maximum again.
    now = 1000.0
    for _ in range(12):
        shipper.on_failure(now, "unreachable")
    assert shipper.retry_at - now > 1.0


def test_the_short_cap_never_exceeds_the_maximum() -> None:
    limits = ShipperLimits(backoff_initial_s=0.05, backoff_max_s=0.5)
    shipper = PeerShipper(EU, limits, random.Random(1))
    shipper.next_action(0.0, retained_first_seq=1, head_seq=0)
    shipper.on_position(0.0, 0)
    for _ in range(8):
        shipper.on_failure(0.1, "unreachable")
    assert shipper.retry_at - 0.1 <= 0.5
    with pytest.raises(ValueError, match="backoff_recent_max_s"):
        ShipperLimits(backoff_recent_max_s=0.0)


# ---- bulk reads and writes of the replication tables --------------------------------------


def _keyed(state: SharedState, index: int) -> SharedState:
    return replace(state, key_id=f"mrk-{index:032x}")


def _key(state: SharedState) -> Key:
    return Key(
        key_id=state.key_id,
        arn=f"arn:meridian:kms:{US}:000000000000:key/{state.key_id}",
        account_id="000000000000",
        region=US,
        created_at=from_us(state.created_at_us),
        description="",
        key_spec=state.key_spec,
        key_usage=state.key_usage,
        origin=state.origin,
        state=KeyState.ENABLED,
        policy="",
        current_material_id=state.settings.current_material_id,
        multi_region=True,
    )


async def test_bulk_writes_and_reads_match_one_at_a_time(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        # More keys than one IN (...) list takes: the reads go in chunks.
        states = [_keyed(_base(random.Random(i)), i) for i in range(KEY_IDS_PER_QUERY_MAX + 3)]
        meta = LocalMeta()
        async with store.write() as tx:
            writer = SqliteReplicationWriter(tx.connection)
            await writer.ensure_log(b"L" * 16)
            await writer.put_states([(state, meta) for state in states], now_us=5)
            records = [Record(US, "Enabled", state) for state in states[:3]]
            assert await writer.append_record(records[0], now_us=7) == 1
            assert await writer.append_records(records[1:], now_us=7) == [2, 3]
            assert await writer.append_records([], now_us=7) == []
            versions = [
                KeyVersion(
                    key_id=state.key_id,
                    material_id=material_id,
                    created_at=from_us(9),
                    wrapped_material=b"w" * 40,
                )
                for state in states
                for material_id in state.versions
            ]
            # Key rows (the key service's table) for all but the last state; versions
            # belong to keys, so they go in for those keys only.
            keys = [_key(state) for state in states[:-1]]
            for key in keys:
                await tx.insert_key(key, None)
            await writer.insert_versions(versions[:-1])
            await writer.insert_versions(versions[:2])  # again: ignored, not an error
        reader = SqliteReplicationWriter(store.reader.connection)
        found = await reader.states_of(state.key_id for state in states)
        assert len(found) == len(states)
        for state in states:
            assert found[state.key_id] == await reader.get_state(state.key_id)
            assert found[state.key_id][0] == state
        held = await reader.held_material_ids_of([s.key_id for s in states] + ["mrk-" + "f" * 32])
        one_by_one = {s.key_id: await reader.held_material_ids(s.key_id) for s in states}
        # A key without versions is absent from the bulk answer (callers default to empty).
        assert held == {key_id: ids for key_id, ids in one_by_one.items() if ids}
        assert states[-1].key_id not in held
        stored = await reader.versions_of([states[0].key_id])
        assert stored == {states[0].key_id: await reader.versions(states[0].key_id)}
        found_keys = await reader.keys_of([s.key_id for s in states])
        assert found_keys == {key.key_id: await store.reader.get_key(key.key_id) for key in keys}
        bounds = await reader.log_bounds()
        assert bounds is not None and bounds.head_seq == 3
        rows = await reader.outbox(1, 3)
        assert [row.seq for row in rows] == [1, 2, 3]
        assert [decode_record(row.record) for row in rows] == records
    finally:
        await store.close()
