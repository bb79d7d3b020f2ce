"""The sans-IO protocol core: apply decisions, the shipper, the receiver's bookkeeping."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from test_multi_region_state import AP, ARN, EU, US, _base, _replicated, _version

from meridian.replication.core.apply import LocalKey, Outcome, apply_record
from meridian.replication.core.receiver import (
    ApplyFrom,
    Duplicate,
    Gap,
    InboundPosition,
    plan_entries,
    position_after_snapshot,
)
from meridian.replication.core.shipper import (
    ConnectionState,
    Hello,
    Idle,
    PeerShipper,
    SendEntries,
    SendSnapshot,
    ShipperLimits,
    prune_through,
    wants_material,
)
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region import (
    Handover,
    LocalMeta,
    Record,
    SharedState,
    add_holder,
    force_promote,
    mark_deleted,
    stage_version,
)

# ---- apply ---------------------------------------------------------------------------


def _key(state: SharedState, held: set[bytes], key_state: KeyState = KeyState.ENABLED) -> LocalKey:
    """The local key row of a region holding ``held``, encrypting with the shared current."""
    current = state.settings.current_material_id
    assert current in held
    return LocalKey(state=key_state, current_material_id=current, held=frozenset(held))


def test_a_new_member_creates_its_replica_with_the_material() -> None:
    state = _replicated()
    record = Record(author_region=US, author_key_state="Enabled", state=state)
    everything = frozenset(state.versions)
    decision = apply_record(
        region=EU, state=None, meta=None, key=None, record=record, attached=everything, now_us=5
    )
    assert decision.outcome is Outcome.APPLIED
    assert decision.create_replica is not None and decision.create_replica.description == EU
    assert decision.key_state is KeyState.ENABLED
    assert decision.store_materials == everything
    assert decision.emit  # tells the primary it holds the versions
    # Without the material of every version, the replica is Creating.
    state2 = stage_version(state, region=US, version=_version(US, random.Random(3)))
    partial = frozenset(state.versions)
    decision = apply_record(
        region=EU,
        state=None,
        meta=None,
        key=None,
        record=Record(US, "Enabled", state2),
        attached=partial,
        now_us=5,
    )
    assert decision.key_state is KeyState.CREATING
    # A region that is not a member stores nothing, not even the view.
    outsider = apply_record(
        region="sa-east-1",
        state=None,
        meta=None,
        key=None,
        record=record,
        attached=everything,
        now_us=5,
    )
    assert outsider.outcome is Outcome.IGNORED and outsider.state is None


def test_records_of_an_older_epoch_are_refused_whole() -> None:
    state = _replicated()
    newer, _ = force_promote(
        state,
        LocalMeta(),
        region=EU,
        arn=ARN,
        key_state=KeyState.ENABLED,
        current_material_id=state.settings.current_material_id,
    )
    old_record = Record(
        US, "Enabled", stage_version(state, region=US, version=_version(US, random.Random(4)))
    )
    decision = apply_record(
        region=EU,
        state=newer,
        meta=LocalMeta(),
        key=_key(newer, set(state.versions)),
        record=old_record,
        attached=frozenset(),
        now_us=5,
    )
    assert decision.outcome is Outcome.REFUSED and "stale epoch" in decision.reason
    assert decision.state is None and not decision.emit


def test_a_duplicate_changes_nothing() -> None:
    state = _replicated()
    key = _key(state, set(state.versions))
    decision = apply_record(
        region=EU,
        state=state,
        meta=LocalMeta(),
        key=key,
        record=Record(US, "Enabled", state),
        attached=frozenset(state.versions),
        now_us=5,
    )
    assert decision.outcome is Outcome.UNCHANGED and not decision.emit


def test_the_hand_over_window_on_both_sides() -> None:
    state = _replicated()
    held = set(state.versions)
    moved = replace(
        state,
        settings=replace(state.settings, epoch=2, primary_region=EU, revision=9, author_region=US),
    )
    # The new primary: Updating until the old one says it stepped down.
    taking = apply_record(
        region=EU,
        state=state,
        meta=LocalMeta(),
        key=_key(state, held),
        record=Record(US, "Updating", moved),
        attached=frozenset(),
        now_us=5,
    )
    assert taking.key_state is KeyState.UPDATING
    assert taking.meta is not None and taking.meta.handover == Handover("from", US, 2)
    # The old primary: Updating until the new one says it is primary.
    old_meta = LocalMeta(handover=Handover("to", EU, 2))
    accepted = apply_record(
        region=US,
        state=moved,
        meta=old_meta,
        key=_key(moved, held, KeyState.UPDATING),
        record=Record(EU, "Updating", moved),
        attached=frozenset(),
        now_us=6,
    )
    assert accepted.key_state is KeyState.ENABLED
    assert accepted.meta is not None and accepted.meta.handover is None and accepted.emit
    done = apply_record(
        region=EU,
        state=moved,
        meta=taking.meta,
        key=_key(moved, held, KeyState.UPDATING),
        record=Record(US, "Enabled", moved),
        attached=frozenset(),
        now_us=7,
    )
    assert done.key_state is KeyState.ENABLED


def test_the_primary_promotes_when_the_last_holder_reports() -> None:
    state = _replicated()
    version = _version(US, random.Random(5))
    staged = add_holder(
        stage_version(state, region=US, version=version),
        region=EU,
        material_ids=[version.material_id],
    )
    from_ap = add_holder(staged, region=AP, material_ids=[version.material_id])
    decision = apply_record(
        region=US,
        state=staged,
        meta=LocalMeta(),
        key=_key(staged, set(staged.versions)),
        record=Record(AP, "Enabled", from_ap),
        attached=frozenset(),
        now_us=5,
    )
    assert decision.state is not None
    assert decision.state.settings.current_material_id == version.material_id
    assert decision.current_material_id == version.material_id


def test_the_primary_starts_its_deletion_window_when_the_last_replica_is_gone() -> None:
    state = _replicated()
    only_eu = mark_deleted(state, region=AP)
    gone = mark_deleted(only_eu, region=EU)
    decision = apply_record(
        region=US,
        state=only_eu,
        meta=LocalMeta(),
        key=_key(state, set(state.versions), KeyState.PENDING_REPLICA_DELETION),
        record=Record(EU, "Absent", gone),
        attached=frozenset(),
        now_us=5,
    )
    assert decision.key_state is KeyState.PENDING_DELETION and decision.start_deletion_window


def test_material_only_for_live_members() -> None:
    state = _replicated()
    assert wants_material(EU, state)
    assert not wants_material("sa-east-1", state)
    assert wants_material(EU, mark_deleted(state, region=EU), state)
    assert not wants_material(EU, mark_deleted(state, region=EU), None)
    assert _base() is not None


# ---- the shipper ---------------------------------------------------------------------


def _shipper(**limits: object) -> PeerShipper:
    return PeerShipper(EU, ShipperLimits(**limits), random.Random(1))  # type: ignore[arg-type]


def test_the_shipper_says_hello_then_ships_bounded_batches() -> None:
    shipper = _shipper(batch_entries_max=10)
    assert shipper.next_action(0.0, retained_first_seq=1, head_seq=25) == Hello()
    assert shipper.next_action(0.0, retained_first_seq=1, head_seq=25) == Idle(None)  # in flight
    shipper.on_position(0.1, 0)
    assert shipper.state is ConnectionState.CONNECTED
    assert shipper.next_action(0.1, retained_first_seq=1, head_seq=25) == SendEntries(1, 10)
    shipper.on_position(0.2, 10)
    assert shipper.next_action(0.2, retained_first_seq=1, head_seq=25) == SendEntries(11, 20)
    shipper.on_position(0.3, 7)  # the peer says it has less (a gap): resend from there
    assert shipper.next_action(0.3, retained_first_seq=1, head_seq=25) == SendEntries(8, 17)
    shipper.on_position(0.4, 25)
    assert shipper.next_action(0.4, retained_first_seq=1, head_seq=25) == Idle(None)


def test_a_peer_behind_the_tail_gets_a_snapshot_in_chunks() -> None:
    shipper = _shipper()
    shipper.next_action(0.0, retained_first_seq=50, head_seq=60)
    shipper.on_position(0.0, 10)
    assert shipper.next_action(0.0, retained_first_seq=50, head_seq=60) == SendSnapshot(60, "")
    shipper.on_snapshot_chunk(0.1, next_after_key_id="mrk-5", position=10)
    assert shipper.next_action(0.1, retained_first_seq=50, head_seq=61) == SendSnapshot(60, "mrk-5")
    shipper.on_snapshot_chunk(0.2, next_after_key_id=None, position=60)
    assert not shipper.snapshotting
    assert shipper.next_action(0.2, retained_first_seq=50, head_seq=61) == SendEntries(61, 61)


def test_failures_back_off_exponentially_with_jitter_and_reset() -> None:
    shipper = _shipper(backoff_initial_s=1.0, backoff_max_s=8.0)
    delays = []
    now = 0.0
    for _ in range(6):
        shipper.next_action(now, retained_first_seq=1, head_seq=3)
        shipper.on_failure(now, "unreachable")
        delays.append(shipper.retry_at - now)
        assert shipper.next_action(now, retained_first_seq=1, head_seq=3) == Idle(shipper.retry_at)
        now = shipper.retry_at
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert shipper.state is ConnectionState.BACKING_OFF and shipper.position is None
    assert shipper.next_action(now, retained_first_seq=1, head_seq=3) == Hello()
    shipper.on_position(now, 3)
    assert shipper.failures == 0 and shipper.retry_at == 0.0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="batch sizes"):
        ShipperLimits(batch_entries_max=0)
    with pytest.raises(ValueError, match="backoff"):
        ShipperLimits(backoff_initial_s=5.0, backoff_max_s=1.0)


def test_pruning_keeps_what_a_peer_has_not_acknowledged_up_to_the_limit() -> None:
    assert prune_through([10, 4], head_seq=20, retained_entries_max=100) == 4
    assert prune_through([10, 0], head_seq=200, retained_entries_max=100) == 100
    assert prune_through([], head_seq=20, retained_entries_max=100) == 20


# ---- the receiver --------------------------------------------------------------------

LOG = b"L" * 16


def test_the_receiver_applies_each_entry_once_in_order() -> None:
    at_5 = InboundPosition(LOG, 5)
    assert plan_entries(at_5, log_id=LOG, first_seq=6, last_seq=9) == ApplyFrom(5)
    assert plan_entries(at_5, log_id=LOG, first_seq=3, last_seq=9) == ApplyFrom(5)
    assert plan_entries(at_5, log_id=LOG, first_seq=2, last_seq=5) == Duplicate(5)
    assert plan_entries(at_5, log_id=LOG, first_seq=8, last_seq=9) == Gap(5)
    # Another log id (the origin's database was replaced): it starts over.
    assert plan_entries(at_5, log_id=b"M" * 16, first_seq=1, last_seq=2) == ApplyFrom(0)
    assert plan_entries(None, log_id=LOG, first_seq=2, last_seq=2) == Gap(0)
    with pytest.raises(ValueError, match="first_seq"):
        plan_entries(at_5, log_id=LOG, first_seq=0, last_seq=1)
    assert position_after_snapshot(at_5, log_id=LOG, through_seq=50, last_chunk=False) == 5
    assert position_after_snapshot(at_5, log_id=LOG, through_seq=50, last_chunk=True) == 50
    assert position_after_snapshot(at_5, log_id=LOG, through_seq=2, last_chunk=True) == 5
