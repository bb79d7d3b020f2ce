"""Rotation in the shared state of a multi-Region key: the rotation marks that make
ListKeyRotations equal in every region, the shared schedule, the on-demand count, and
their encodings (canonical JSON and the wire) and join."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_multi_region_state import ARN, EU, US, _replicated, _version

from meridian.replication.core.merge import join
from meridian.replication.wire import WireError, state_from_proto, state_to_proto
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region import (
    LocalMeta,
    MultiRegionStateError,
    RotationMark,
    SharedState,
    add_holder,
    check_state,
    force_promote,
    promote_ready,
    set_rotation,
    stage_version,
)
from meridian.server.domain.multi_region_codec import decode_state, encode_state

AP = "ap-south-1"


def _staged(
    state: SharedState, rng: random.Random, rotation_type: RotationType = RotationType.ON_DEMAND
) -> tuple[SharedState, bytes]:
    version = replace(_version(US, rng), rotation_type=rotation_type)
    return stage_version(state, region=US, version=version), version.material_id


def test_a_promotion_marks_the_rotation_with_its_time_and_serial() -> None:
    rng = random.Random(1)
    state, first = _staged(_replicated(), rng)
    assert first in state.staged_not_rotated() and not state.rotations
    held = add_holder(
        add_holder(state, region=EU, material_ids=[first]), region=AP, material_ids=[first]
    )
    promoted = promote_ready(held, region=US, now_us=5_000)
    assert promoted is not None
    assert promoted.rotations == {first: RotationMark(rotated_at_us=5_000, serial=1)}
    assert not promoted.staged_not_rotated()

    second_state, second = _staged(promoted, rng, RotationType.AUTOMATIC)
    everyone = add_holder(
        add_holder(second_state, region=EU, material_ids=[second]), region=AP, material_ids=[second]
    )
    again = promote_ready(everyone, region=US, now_us=5_000)
    assert again is not None
    # Equal times (a clock that did not move) still order by serial.
    assert again.rotations[second] == RotationMark(rotated_at_us=5_000, serial=2)
    # The on-demand count comes from the shared versions, pending ones included.
    assert again.on_demand_rotations() == 1
    assert _staged(again, rng)[0].on_demand_rotations() == 2


def test_without_replicas_a_version_is_current_and_marked_when_staged() -> None:
    rng = random.Random(2)
    alone = _replicated()
    for region in (EU, AP):
        alone = replace(
            alone, members={**alone.members, region: replace(alone.members[region], deleted=True)}
        )
    state, material_id = _staged(alone, rng)
    assert state.settings.current_material_id == material_id
    mark = state.rotations[material_id]
    assert mark == RotationMark(state.versions[material_id].created_at_us, 1)


def test_the_join_keeps_the_earlier_mark() -> None:
    rng = random.Random(3)
    state, material_id = _staged(_replicated(), rng)
    early = replace(state, rotations={material_id: RotationMark(10, 1)})
    late = replace(state, rotations={material_id: RotationMark(20, 1)})
    assert join(early, late).rotations == join(late, early).rotations == early.rotations
    assert join(state, late).rotations == late.rotations


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_marks_made_on_both_sides_of_a_split_join_alike(seed: int) -> None:
    """US and EU (promoted by force) both complete rotations at different times; every
    order of joining gives one history."""
    # A string seed: never the stream that made the base state's first version.
    rng = random.Random(f"split-{seed}")
    base, staged = _staged(_replicated(), rng)
    base = add_holder(base, region=EU, material_ids=[staged])
    forced, _ = force_promote(
        base,
        LocalMeta(),
        region=EU,
        arn=ARN.replace(US, EU),
        key_state=KeyState.ENABLED,
        current_material_id=base.settings.current_material_id,
    )
    sides = []
    for side, region in ((base, US), (forced, EU)):
        side = add_holder(side, region=AP, material_ids=list(side.versions))
        side = add_holder(side, region=US, material_ids=list(side.versions))
        side = add_holder(side, region=EU, material_ids=list(side.versions))
        promoted = promote_ready(side, region=region, now_us=rng.randrange(1, 2**40))
        sides.append(promoted or side)
    a, b = sides
    assert join(a, b) == join(b, a)
    assert join(join(a, b), b) == join(a, b)
    merged = join(a, b)
    assert set(merged.rotations) == set(a.rotations) | set(b.rotations)
    check_state(merged)


def test_the_schedule_is_shared_and_only_while_enabled() -> None:
    state = set_rotation(
        _replicated(), region=US, arn=ARN, enabled=True, period_days=90, next_rotation_us=77
    )
    assert (state.settings.rotation_enabled, state.settings.next_rotation_us) == (True, 77)
    off = set_rotation(
        state, region=US, arn=ARN, enabled=False, period_days=90, next_rotation_us=77
    )
    assert off.settings.next_rotation_us is None
    with pytest.raises(MultiRegionStateError):
        check_state(replace(off, settings=replace(off.settings, next_rotation_us=5)))
    with pytest.raises(MultiRegionStateError):
        check_state(replace(state, rotations={b"\x00" * 32: RotationMark(1, 1)}))
    with pytest.raises(MultiRegionStateError):
        check_state(replace(state, rotations={next(iter(state.versions)): RotationMark(1, 0)}))


def _rich_state() -> SharedState:
    rng = random.Random(4)
    state, material_id = _staged(_replicated(), rng, RotationType.AUTOMATIC)
    state = set_rotation(
        state, region=US, arn=ARN, enabled=True, period_days=365, next_rotation_us=123_456
    )
    return replace(state, rotations={material_id: RotationMark(99, 1)})


def test_the_encodings_carry_rotation() -> None:
    state = _rich_state()
    assert decode_state(encode_state(state)) == state
    assert state_from_proto(state_to_proto(state)) == state


def test_views_stored_before_rotation_of_multi_region_keys_still_decode() -> None:
    state = _replicated()
    document = json.loads(encode_state(state))
    del document["rotations"]
    del document["settings"]["next_rotation_us"]
    for version in document["versions"]:
        del version["rotation_type"]
    assert decode_state(json.dumps(document).encode()) == state


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: setattr(m.versions[0], "rotation_type", "SOMETIMES"),
        lambda m: m.rotations.append(m.rotations[0]),
        lambda m: setattr(m.rotations[0], "material_id", b"\x01" * 32),
        lambda m: setattr(m.rotations[0], "serial", 0),
        lambda m: setattr(m.settings, "rotation_enabled", False),
    ],
)
def test_malformed_rotation_on_the_wire_is_refused(damage: object) -> None:
    message = state_to_proto(_rich_state())
    damage(message)  # type: ignore[operator]
    with pytest.raises(WireError):
        state_from_proto(message)
