"""The shortcuts that make catch-up cheaper per entry give the very same bytes and messages
as the long way round: the canonical JSON written by orjson, a record's JSON made from
its view's, stored records turned straight into messages, and the live-member question
answered by SQLite (issue 9)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_multi_region_state import AP, EU, REGIONS, US, _branch, _replicated, _version

from meridian.replication.wire import record_to_proto, stored_record_to_proto
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import Tag
from meridian.server.domain.multi_region import (
    LocalMeta,
    MultiRegionStateError,
    Record,
    ReplicaRequest,
    SharedState,
    mark_deleted,
    set_rotation,
    stage_version,
)
from meridian.server.domain.multi_region_codec import (
    decode_record,
    encode_record,
    encode_state,
    state_document,
)
from meridian.server.storage.replication_repository import SqliteReplicationWriter
from meridian.server.storage.store import SqliteStore

ARN = f"arn:meridian:kms:{US}:111122223333:key/mrk-" + "0" * 32


def _reference(document: object) -> bytes:
    """The canonical form as it was always written (json, ASCII only)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _with_request(state: SharedState, region: str, request: ReplicaRequest) -> SharedState:
    members = dict(state.members)
    members[region] = replace(members[region], request=request)
    return replace(state, members=members)


def _varied_states(seed: int) -> list[SharedState]:
    """Views with every part filled in some way: several versions and holders, pending
    and rotated versions, a rotation schedule, deleted members, replica requests with
    tags, quotes, non-ASCII text and control characters."""
    rng = random.Random(seed)
    base = _replicated()
    states = [_branch(base, region, rng, rng.randrange(1, 7)) for region in REGIONS]
    scheduled = set_rotation(
        base, region=US, arn=ARN, enabled=True, period_days=365, next_rotation_us=123_456
    )
    staged = stage_version(
        scheduled,
        region=US,
        version=replace(_version(US, rng), rotation_type=RotationType.ON_DEMAND),
    )
    states += [scheduled, staged, mark_deleted(staged, region=AP)]
    texts = ['"quoted" \\u0041 back\\slash', "caf\u00e9 \u2603", "tab\tnew\nline\x01\x7f", ""]
    for text in texts:
        request = ReplicaRequest(
            description=text[:256],
            policy='{"Version": "2012-10-17", "Statement": []}',
            tags=(Tag(tag_key="team", tag_value=text), Tag(tag_key="a", tag_value="b")),
        )
        states.append(_with_request(staged, EU, request))
    # A request with nothing in it is still a request (present on the wire).
    states.append(_with_request(staged, AP, ReplicaRequest()))
    return states


# ---- canonical JSON --------------------------------------------------------------------


_TEXT = st.text(
    alphabet=st.sampled_from(
        [chr(i) for i in range(0x00, 0x100)] + ["\u2028", "\u2603", "\U0001f600"]
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(_TEXT, st.integers(min_value=-(2**62), max_value=2**62))
def test_canonical_json_is_the_reference_encoding(text: str, number: int) -> None:
    """Whatever the strings hold, the bytes are the reference's: orjson's where they
    agree, the reference's own where orjson would differ (non-ASCII, DEL, \\u escapes)."""
    from meridian.server.domain.multi_region_codec import _canonical

    document = {text: [text, number, None, True, {"b": text, "a": False}], "z": text}
    assert _canonical(document) == _reference(document)


@pytest.mark.parametrize("seed", range(6))
def test_views_and_records_encode_as_they_always_did(seed: int) -> None:
    for state in _varied_states(seed):
        assert encode_state(state) == _reference(state_document(state))
        record = Record(author_region=EU, author_key_state="Enabled", state=state)
        whole = _reference(
            {
                "author_region": record.author_region,
                "author_key_state": record.author_key_state,
                "state": state_document(state),
            }
        )
        # A record made from its view's bytes, or on its own: the same bytes.
        assert encode_record(record) == whole
        assert encode_record(record, state_bytes=encode_state(state)) == whole
        assert decode_record(whole) == record


# ---- stored records straight to messages -----------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_stored_record_becomes_the_message_of_its_record(seed: int) -> None:
    for state in _varied_states(seed):
        record = Record(author_region=US, author_key_state="Updating", state=state)
        stored = stored_record_to_proto(encode_record(record))
        assert stored.message == record_to_proto(record)
        assert stored.key_id == state.key_id
        assert stored.material_ids == frozenset(state.versions)
        assert stored.live_members == frozenset(state.alive_regions())


def test_records_stored_before_rotation_fields_existed_still_convert() -> None:
    state = _replicated()
    document = {
        "author_region": US,
        "author_key_state": "Enabled",
        "state": state_document(state),
    }
    # Records written before rotation of multi-Region keys lack these fields.
    del document["state"]["rotations"]  # type: ignore[attr-defined]
    del document["state"]["settings"]["next_rotation_us"]  # type: ignore[index]
    for version in document["state"]["versions"]:  # type: ignore[index]
        del version["rotation_type"]
    old = _reference(document)
    expected = record_to_proto(decode_record(old))
    assert stored_record_to_proto(old).message == expected


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[]",
        b'{"author_region": "us-east-1"}',
        # A number where a hex id belongs.
        _reference({"author_region": US, "author_key_state": "Enabled", "state": {"settings": 1}}),
    ],
)
def test_a_row_that_is_not_a_record_is_refused(data: bytes) -> None:
    with pytest.raises(MultiRegionStateError):
        stored_record_to_proto(data)


# ---- which keys have a live member, asked of SQLite -------------------------------------


async def test_live_members_are_found_in_the_stored_views(tmp_path: Path) -> None:
    def keyed(state: SharedState, index: int) -> SharedState:
        return replace(state, key_id=f"mrk-{index:032x}")

    replicated = _replicated()
    member = keyed(replicated, 1)
    deleted = keyed(mark_deleted(replicated, region=EU), 2)
    alone = keyed(replace(replicated, members={US: replicated.members[US]}, holders={}), 3)
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        async with store.write() as tx:
            writer = SqliteReplicationWriter(tx.connection)
            await writer.put_states(
                [(state, LocalMeta()) for state in (member, deleted, alone)], now_us=1
            )
        reader = SqliteReplicationWriter(store.reader.connection)
        ids = [member.key_id, deleted.key_id, alone.key_id, "mrk-" + "f" * 32]
        assert await reader.keys_with_live_member(ids, EU) == {member.key_id}
        assert await reader.keys_with_live_member(ids, US) == {
            member.key_id,
            deleted.key_id,
            alone.key_id,
        }
        assert await reader.keys_with_live_member(ids, "sa-east-1") == set()
        with pytest.raises(ValueError, match="region"):
            await reader.keys_with_live_member(ids, "x'); DROP TABLE mrk_state; --")
    finally:
        await store.close()


# ---- new replica keys written with the batch's other writes -----------------------------


async def test_new_keys_are_written_at_flush_before_what_refers_to_them(tmp_path: Path) -> None:
    from test_replication_throughput import _key

    from meridian.replication.inbound import _BatchWork
    from meridian.server.domain.model import KeyState, KeyVersion
    from meridian.server.storage.repository import from_us

    states = [replace(_replicated(), key_id=f"mrk-{index:032x}") for index in range(3)]
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        async with store.write() as tx:
            work = _BatchWork(tx, SqliteReplicationWriter(tx.connection))
            for state in states:
                material_id = state.settings.current_material_id
                version = KeyVersion(
                    key_id=state.key_id,
                    material_id=material_id,
                    created_at=from_us(9),
                    wrapped_material=b"w" * 40,
                )
                tags = [Tag(tag_key="team", tag_value=state.key_id[-4:])]
                work.insert_key(_key(state), version, tags if state is states[0] else [])
                work.put_state(state, LocalMeta())
            assert work.inserting(states[1].key_id) and work.keys_created == 3
            assert await tx.get_key(states[1].key_id) is None  # queued, not written yet
            await work.flush(now_us=10)
            assert not work.inserting(states[1].key_id)
            # Written, so the key service can update it (as a later record may).
            key = work.keys[states[1].key_id]
            key.state = KeyState.DISABLED
            await tx.update_key(key)
        reader = SqliteReplicationWriter(store.reader.connection)
        assert set(await reader.held_material_ids_of(s.key_id for s in states)) == {
            s.key_id for s in states
        }
        found = await store.reader.get_key(states[1].key_id)
        assert found is not None and found.state is KeyState.DISABLED
        assert await store.reader.get_tags(states[0].key_id) == [
            Tag(tag_key="team", tag_value=states[0].key_id[-4:])
        ]
        assert len(await reader.states_of(s.key_id for s in states)) == 3
    finally:
        await store.close()
