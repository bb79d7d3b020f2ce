"""The shared state of a multi-Region key: transitions, invariants, encoding, and the join.

The join must be a semilattice join (commutative, associative, idempotent) on any views
that grew from one key, or replicas would not converge whatever the order of delivery:
hypothesis builds such views by letting several regions change one key independently.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.replication.core.merge import MergeConflict, join
from meridian.server.domain.crypto.peer_wrap import material_commitment
from meridian.server.domain.errors import (
    AlreadyExistsException,
    DisabledException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.model import KeySpec, KeyState, KeyUsage, Origin
from meridian.server.domain.multi_region import (
    DeletionVerdict,
    LocalMeta,
    MultiRegionStateError,
    PeerReport,
    ReplicaRequest,
    SharedState,
    VersionInfo,
    add_holder,
    check_state,
    deletion_verdict,
    force_promote,
    hand_over,
    mark_deleted,
    new_primary_state,
    orphan_successor,
    promote_ready,
    replicate,
    stage_version,
)
from meridian.server.domain.multi_region_codec import (
    decode_state,
    encode_state,
    state_digest,
)

US, EU, AP = "us-east-1", "eu-west-1", "ap-south-1"
REGIONS = (US, EU, AP)
KEY_ID = "mrk-" + "0" * 32
ARN = f"arn:meridian:kms:{US}:111122223333:key/{KEY_ID}"


def _version(region: str, rng: random.Random) -> VersionInfo:
    material, material_id = rng.randbytes(32), rng.randbytes(32)
    return VersionInfo(
        material_id=material_id,
        created_at_us=rng.randrange(1, 2**40),
        commitment=material_commitment(material, key_id=KEY_ID, material_id=material_id),
        origin_region=region,
    )


def _base(rng: random.Random | None = None) -> SharedState:
    return new_primary_state(
        key_id=KEY_ID,
        key_spec=KeySpec.SYMMETRIC_DEFAULT,
        key_usage=KeyUsage.ENCRYPT_DECRYPT,
        origin=Origin.AWS_KMS,
        created_at_us=1,
        region=US,
        version=_version(US, rng or random.Random(0)),
    )


def _replicated() -> SharedState:
    state = _base()
    for target in (EU, AP):
        state = replicate(
            state,
            region=US,
            arn=ARN,
            key_state=KeyState.ENABLED,
            target=target,
            known_regions=REGIONS,
            request=ReplicaRequest(description=target),
        )
    return add_holder(
        add_holder(state, region=EU, material_ids=state.versions),
        region=AP,
        material_ids=state.versions,
    )


# ---- transitions ---------------------------------------------------------------------


def test_replicate_rules() -> None:
    state = _base()

    def call(**changes: object) -> SharedState:
        arguments: dict[str, object] = {
            "region": US,
            "arn": ARN,
            "key_state": KeyState.ENABLED,
            "target": EU,
            "known_regions": REGIONS,
            "request": ReplicaRequest(),
        }
        arguments.update(changes)
        return replicate(state, **arguments)  # type: ignore[arg-type]

    replicated = call()
    assert replicated.replica_regions() == [EU]
    assert replicated.members[EU].incarnation == 1
    with pytest.raises(UnsupportedOperationException, match="primary"):
        call(region=EU)
    with pytest.raises(ValidationException):
        call(target=US)
    with pytest.raises(ValidationException):
        call(target="Not-A-Region")
    with pytest.raises(UnsupportedOperationException, match="not a region of this"):
        call(target="sa-east-1")
    with pytest.raises(KMSInvalidStateException):
        call(key_state=KeyState.PENDING_DELETION)
    with pytest.raises(KMSInvalidStateException):
        call(key_state=KeyState.UPDATING)
    state = replicated
    with pytest.raises(AlreadyExistsException):
        call()
    # A deleted replica can be replicated again: a new incarnation.
    state = mark_deleted(replicated, region=EU)
    again = call()
    assert again.members[EU].incarnation == 2 and again.members[EU].alive


def test_hand_over_needs_an_enabled_replica_that_reported() -> None:
    state = _replicated()
    meta = LocalMeta()

    def move(report: str | None, key_state: KeyState = KeyState.ENABLED) -> object:
        reports = {} if report is None else {EU: PeerReport(report, 1, 0)}
        return hand_over(
            state,
            replace(meta, reports=reports),
            region=US,
            arn=ARN,
            key_state=key_state,
            target=EU,
        )

    with pytest.raises(KMSInvalidStateException, match="creating"):
        move(None)
    with pytest.raises(DisabledException):
        move("Disabled")
    with pytest.raises(KMSInvalidStateException):
        move("PendingDeletion")
    with pytest.raises(DisabledException):
        move("Enabled", KeyState.DISABLED)
    moved, new_meta = move("Enabled")  # type: ignore[misc]
    assert moved.primary_region == EU and moved.epoch == 2
    assert new_meta.handover is not None and new_meta.handover.peer == EU
    with pytest.raises(NotFoundException):
        hand_over(
            mark_deleted(state, region=AP),
            LocalMeta(reports={AP: PeerReport("Enabled", 1, 0)}),
            region=US,
            arn=ARN,
            key_state=KeyState.ENABLED,
            target=AP,
        )


def test_two_phase_rotation_waits_for_every_live_member() -> None:
    state = _replicated()
    version = _version(US, random.Random(7))
    staged = stage_version(state, region=US, version=version)
    assert staged.settings.pending_material_id == version.material_id
    assert staged.settings.current_material_id != version.material_id
    assert staged.missing_holders(version.material_id) == [AP, EU]
    assert promote_ready(staged, region=US) is None
    eu = add_holder(staged, region=EU, material_ids=[version.material_id])
    assert promote_ready(eu, region=US) is None
    both = add_holder(eu, region=AP, material_ids=[version.material_id])
    assert promote_ready(both, region=EU) is None  # only the primary promotes
    promoted = promote_ready(both, region=US)
    assert promoted is not None
    assert promoted.settings.current_material_id == version.material_id
    assert promoted.settings.pending_material_id is None
    # A deleted replica is not waited for.
    deleted = mark_deleted(eu, region=AP)
    assert promote_ready(deleted, region=US) is not None
    # Without replicas a version is current at once.
    alone = stage_version(_base(), region=US, version=version)
    assert alone.settings.current_material_id == version.material_id


def test_forced_promotion_bumps_the_epoch_and_keeps_a_held_pending_version() -> None:
    state = _replicated()
    version = _version(US, random.Random(9))
    staged = add_holder(
        stage_version(state, region=US, version=version),
        region=EU,
        material_ids=[version.material_id],
    )
    current = state.settings.current_material_id
    promoted, meta = force_promote(
        staged,
        LocalMeta(),
        region=EU,
        arn=ARN,
        key_state=KeyState.ENABLED,
        current_material_id=current,
    )
    assert (promoted.primary_region, promoted.epoch) == (EU, 2)
    assert promoted.settings.pending_material_id == version.material_id
    assert meta.handover is None
    not_held, _ = force_promote(
        staged,
        LocalMeta(),
        region=AP,
        arn=ARN,
        key_state=KeyState.ENABLED,
        current_material_id=current,
    )
    assert not_held.settings.pending_material_id is None
    assert version.material_id in not_held.versions  # versions are never dropped
    with pytest.raises(UnsupportedOperationException):
        force_promote(
            state,
            LocalMeta(),
            region=US,
            arn=ARN,
            key_state=KeyState.ENABLED,
            current_material_id=current,
        )
    with pytest.raises(KMSInvalidStateException):
        force_promote(
            state,
            LocalMeta(),
            region=EU,
            arn=ARN,
            key_state=KeyState.CREATING,
            current_material_id=current,
        )
    with pytest.raises(NotFoundException):
        force_promote(
            state, LocalMeta(), region=EU, arn=ARN, key_state=None, current_material_id=current
        )


def test_deletion_waits_for_replicas_and_for_lone_versions() -> None:
    state = _replicated()
    assert deletion_verdict(state, region=US) is DeletionVerdict.WAIT_FOR_REPLICAS
    assert deletion_verdict(state, region=EU) is DeletionVerdict.DELETE
    # EU alone holds a version (made while it was cut off): it must not delete it.
    lone = _version(EU, random.Random(11))
    grown = replace(
        state,
        versions={**state.versions, lone.material_id: lone},
        holders={**state.holders, lone.material_id: frozenset({(EU, 1)})},
    )
    assert deletion_verdict(grown, region=EU) is DeletionVerdict.WAIT_FOR_VERSIONS
    shared = add_holder(grown, region=AP, material_ids=[lone.material_id])
    assert deletion_verdict(shared, region=EU) is DeletionVerdict.DELETE
    only = mark_deleted(mark_deleted(state, region=EU), region=AP)
    assert deletion_verdict(only, region=US) is DeletionVerdict.DELETE


def test_an_orphaned_key_is_adopted_by_the_smallest_live_holder() -> None:
    state = _replicated()
    assert orphan_successor(state) is None
    orphaned = mark_deleted(state, region=US)
    assert orphan_successor(orphaned) == AP  # "ap-south-1" < "eu-west-1"


# ---- invariants and encoding ------------------------------------------------------------


def test_encoding_round_trips_and_digests_are_canonical() -> None:
    state = _replicated()
    assert decode_state(encode_state(state)) == state
    assert state_digest(state) == state_digest(decode_state(encode_state(state)))
    assert state_digest(state) != state_digest(mark_deleted(state, region=EU))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: replace(s, key_id="not-an-mrk"),
        lambda s: replace(s, settings=replace(s.settings, epoch=0)),
        lambda s: replace(s, settings=replace(s.settings, primary_region="sa-east-1")),
        lambda s: replace(s, settings=replace(s.settings, current_material_id=os.urandom(32))),
        lambda s: replace(s, settings=replace(s.settings, rotation_period_days=10)),
        lambda s: replace(s, members={}),
        lambda s: replace(s, holders={os.urandom(32): frozenset({(US, 1)})}),
        lambda s: replace(s, holders={next(iter(s.versions)): frozenset({("sa-east-1", 1)})}),
    ],
)
def test_impossible_states_are_refused(breakage: object) -> None:
    with pytest.raises(MultiRegionStateError):
        check_state(breakage(_replicated()))  # type: ignore[operator]
    with pytest.raises(MultiRegionStateError):
        decode_state(b"{not json")


# ---- the join ---------------------------------------------------------------------------


def _branch(state: SharedState, region: str, rng: random.Random, steps: int) -> SharedState:
    """``region`` changes its own view of the key ``steps`` times (any legal change)."""
    for _ in range(steps):
        choice = rng.randrange(5)
        try:
            if choice == 0:
                state = stage_version(state, region=region, version=_version(region, rng))
            elif choice == 1:
                state = add_holder(state, region=region, material_ids=list(state.versions))
            elif choice == 2:
                state, _ = force_promote(
                    state,
                    LocalMeta(),
                    region=region,
                    arn=ARN,
                    key_state=KeyState.ENABLED,
                    current_material_id=state.settings.current_material_id,
                )
            elif choice == 3:
                state = mark_deleted(state, region=region)
            else:
                state = promote_ready(state, region=region) or state
        except Exception:  # an illegal change for this region: skip it
            continue
    return state


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=6))
def test_the_join_is_a_semilattice_join(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    base = _replicated()
    a, b, c = (_branch(base, region, rng, steps) for region in REGIONS)
    assert join(a, a) == a
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    merged = join(join(a, b), c)
    # Nothing is lost: every version any view had is in the join.
    assert set(a.versions) | set(b.versions) | set(c.versions) == set(merged.versions)
    assert merged.settings.order == max(v.settings.order for v in (a, b, c))


def test_contradictions_are_conflicts() -> None:
    state = _replicated()
    with pytest.raises(MergeConflict):
        join(state, replace(state, key_spec=KeySpec.HMAC_256))
    version = next(iter(state.versions.values()))
    forged = replace(version, commitment=os.urandom(32))
    with pytest.raises(MergeConflict):
        join(state, replace(state, versions={version.material_id: forged}))
    with pytest.raises(MergeConflict):
        join(state, replace(state, settings=replace(state.settings, rotation_enabled=True)))
