"""Records and batches on the wire, and the node identity kept under the root key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_multi_region_state import US, _replicated

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.replication.codec import BatchError, OutgoingEntry, open_batch, seal_batch
from meridian.replication.identity import (
    IdentityError,
    LazyIdentity,
    NodeIdentity,
    load_or_create,
    verify_identity,
)
from meridian.replication.wire import (
    WireError,
    record_from_proto,
    record_to_proto,
    state_from_proto,
    state_to_proto,
)
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider
from meridian.server.domain.multi_region import Record
from meridian.server.storage.store import SqliteStore

EU = "eu-west-1"


def test_states_and_records_round_trip() -> None:
    state = _replicated()
    assert state_from_proto(state_to_proto(state)) == state
    record = Record(author_region=EU, author_key_state="Enabled", state=state)
    assert record_from_proto(record_to_proto(record)) == record


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: setattr(m.state, "key_spec", "NOT_A_SPEC"),
        lambda m: setattr(m.state.settings, "epoch", 0),
        lambda m: m.state.versions.append(m.state.versions[0]),
        lambda m: m.state.members.append(m.state.members[0]),
        lambda m: setattr(m.state.members[0], "incarnation", 2**63),
        lambda m: setattr(m, "author_key_state", "Sleeping"),
        lambda m: setattr(m, "author_region", "sa-east-1"),
        lambda m: m.ClearField("state"),
        lambda m: m.state.ClearField("settings"),
    ],
)
def test_malformed_records_are_refused(damage: object) -> None:
    message = record_to_proto(
        Record(author_region=EU, author_key_state="Enabled", state=_replicated())
    )
    damage(message)  # type: ignore[operator]
    with pytest.raises(WireError):
        record_from_proto(message)


def test_a_batch_opens_only_for_its_destination_with_its_senders_key() -> None:
    origin, destination = NodeIdentity(US, os.urandom(128)), NodeIdentity(EU, os.urandom(128))
    state = _replicated()
    material_id = next(iter(state.versions))
    request = seal_batch(
        origin,
        destination.public,
        log_id=b"L" * 16,
        created_at_us=5,
        entries=[OutgoingEntry(1, Record(US, "Enabled", state), {material_id: b"m" * 32})],
    )
    assert b"m" * 32 not in request.body  # the material is sealed, never in the clear
    with pytest.raises(BatchError, match="does not match its version"):
        # The material does not match the version's commitment.
        open_batch(request, sender=origin.public, receiver=destination)
    third = NodeIdentity("ap-south-1", os.urandom(128))
    with pytest.raises(BatchError, match="signature"):
        open_batch(request, sender=third.public, receiver=destination)
    # Another key pair of the destination region cannot open the material either.
    with pytest.raises(BatchError, match="does not open"):
        open_batch(request, sender=origin.public, receiver=NodeIdentity(EU, os.urandom(128)))
    with pytest.raises(BatchError, match="another region"):
        open_batch(request, sender=origin.public, receiver=third)


def test_identities_verify_and_refuse_tampering() -> None:
    identity = NodeIdentity(US, os.urandom(128))
    message = identity.to_proto()
    assert verify_identity(message) == identity.public
    tampered = pb.NodeIdentity()
    tampered.CopyFrom(message)
    tampered.region = EU
    with pytest.raises(IdentityError):
        verify_identity(tampered)
    assert "seed" not in repr(identity)


async def test_the_identity_is_made_once_and_kept_under_the_root_key(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    root_key = FileRootKeyProvider(os.urandom(32))
    try:
        first = await load_or_create(store, US, root_key, now_us=1)
        again = await load_or_create(store, US, root_key, now_us=2)
        assert first.public == again.public
        wrong = LazyIdentity(store, US, FileRootKeyProvider(os.urandom(32)), now_us=lambda: 3)
        with pytest.raises(IdentityError):
            await wrong.get()
        assert wrong.loaded is None
        lazy = LazyIdentity(store, US, root_key, now_us=lambda: 3)
        assert (await lazy.get()).public == first.public
    finally:
        await store.close()
