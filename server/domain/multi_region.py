"""Multi-Region keys: the shared state of one MRK as a region knows it, and its rules.

Every region that holds a related key keeps a :class:`SharedState` for it. The state is
built so that two regions' views can always be *joined* (``replication/core/merge.py``)
into one that contains both, whatever order, duplication or delay the log suffers:

- ``settings`` — which region is primary, at which epoch, the current and pending key
  version, the rotation setting. Last writer wins by ``Settings.order``: the epoch first
  (it only grows), then the primary region (two forced promotions at one epoch are decided
  by region name), then the revision (each settings change at a primary bumps it), then
  the author (so that two regions can never write different settings with one order).
- ``versions`` — every key version's metadata (id, creation time, origin, a commitment to
  its material). Grow-only: a version is never dropped, so a ciphertext that named it
  always finds it.
- ``members`` — for each region that ever held a related key: an incarnation number and
  whether that incarnation is deleted. Last writer wins by (incarnation, deleted, author),
  so a deletion beats the creation it deletes and a later re-replication beats both.
- ``holders`` — for each version, the (region, incarnation) pairs that hold its material.
  Grow-only. A region adds itself once the material is stored; the primary promotes a
  pending version to current only when every live member holds it (two-phase rotation).
- ``rotations`` — for each version that a rotation made current: when, and its place in
  the order of rotations (what ListKeyRotations shows, the same in every region). Joined
  per version by the earlier mark, so two sides of a split that both promoted one
  version agree afterwards.

Independent properties (description, policy, grants, aliases, tags, enabled state) are not
here: they live in each region's own key row. A new replica's *initial* description,
policy and tags travel once, inside its membership entry.

:class:`LocalMeta` is what one region remembers about a key for itself and never ships:
an unfinished primary hand-over and the last key state each peer reported.

The transitions below are pure: they take a state and return a new one, raising the
KmsError AWS would for an operation that is not allowed. The node's service applies them
inside storage transactions; the deterministic simulation applies them to in-memory state.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from meridian.server.domain import identifiers, validation
from meridian.server.domain.errors import (
    AlreadyExistsException,
    DisabledException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import (
    KeySpec,
    KeyState,
    KeyUsage,
    MultiRegionConfiguration,
    MultiRegionKey,
    Origin,
    Tag,
)

PRIMARY = "PRIMARY"
REPLICA = "REPLICA"
# What a region reports as its key state when it holds no key row (deleted, or not yet
# created because no material has arrived).
ABSENT = "Absent"

MATERIAL_ID_BYTES = 32
COMMITMENT_BYTES = 32
# Bounds on one key's shared state, so that a record always fits one replication message:
# AWS allows 25 on-demand rotations and yearly automatic ones, far below these.
VERSIONS_PER_KEY_MAX = 1000
MEMBERS_PER_KEY_MAX = 64
ROTATION_PERIOD_DAYS_MIN = 90
ROTATION_PERIOD_DAYS_MAX = 2560

_MRK_ID = re.compile(r"^mrk-[0-9a-f]{32}$")

Holder = tuple[str, int]


class MultiRegionStateError(ValueError):
    """A shared state breaks an invariant: a bug here, or a malformed record from a peer."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    material_id: bytes
    created_at_us: int
    commitment: bytes
    origin_region: str
    # The kind of rotation that staged this version; None for a key's first version. It
    # is part of the version (immutable), so the 25 on-demand rotations of a key are
    # counted from the shared versions, the same way in every region.
    rotation_type: RotationType | None = None


@dataclass(frozen=True, slots=True)
class RotationMark:
    """A staged version became the current one: when, and as the how-manieth rotation."""

    rotated_at_us: int
    serial: int

    @property
    def order(self) -> tuple[int, int]:
        return (self.rotated_at_us, self.serial)


@dataclass(frozen=True, slots=True)
class ReplicaRequest:
    """The independent properties a new replica starts with (ReplicateKey's arguments)."""

    description: str = ""
    policy: str = ""
    tags: tuple[Tag, ...] = ()


@dataclass(frozen=True, slots=True)
class Membership:
    incarnation: int
    deleted: bool
    author_region: str
    request: ReplicaRequest | None = None

    @property
    def order(self) -> tuple[int, bool, str]:
        return (self.incarnation, self.deleted, self.author_region)

    @property
    def alive(self) -> bool:
        return not self.deleted


@dataclass(frozen=True, slots=True)
class Settings:
    epoch: int
    primary_region: str
    revision: int
    author_region: str
    current_material_id: bytes
    pending_material_id: bytes | None = None
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    # The next automatic rotation (set exactly while rotation is enabled): shared, so a
    # replica reports it and a region that becomes primary keeps the schedule.
    next_rotation_us: int | None = None

    @property
    def order(self) -> tuple[int, str, int, str]:
        return (self.epoch, self.primary_region, self.revision, self.author_region)


@dataclass(frozen=True, slots=True)
class SharedState:
    key_id: str
    key_spec: KeySpec
    key_usage: KeyUsage
    origin: Origin
    created_at_us: int
    settings: Settings
    versions: Mapping[bytes, VersionInfo]
    members: Mapping[str, Membership]
    holders: Mapping[bytes, frozenset[Holder]]
    rotations: Mapping[bytes, RotationMark] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return self.settings.epoch

    @property
    def primary_region(self) -> str:
        return self.settings.primary_region

    def is_alive_member(self, region: str) -> bool:
        member = self.members.get(region)
        return member is not None and member.alive

    def alive_regions(self) -> list[str]:
        return sorted(region for region, member in self.members.items() if member.alive)

    def replica_regions(self) -> list[str]:
        return [region for region in self.alive_regions() if region != self.primary_region]

    def holds(self, region: str, material_id: bytes) -> bool:
        member = self.members.get(region)
        if member is None:
            return False
        return (region, member.incarnation) in self.holders.get(material_id, frozenset())

    def missing_holders(self, material_id: bytes) -> list[str]:
        """Live member regions that have not reported holding ``material_id``."""
        return [region for region in self.alive_regions() if not self.holds(region, material_id)]

    def role(self, region: str) -> str:
        return PRIMARY if region == self.primary_region else REPLICA

    def on_demand_rotations(self) -> int:
        """On-demand rotations requested (completed or pending), counted from the shared
        versions so that every region, and any later primary, counts the same."""
        return sum(
            1
            for version in self.versions.values()
            if version.rotation_type is RotationType.ON_DEMAND
        )

    def staged_not_rotated(self) -> frozenset[bytes]:
        """Versions a rotation staged that have not (yet) become current by rotating."""
        return frozenset(
            material_id
            for material_id, version in self.versions.items()
            if version.rotation_type is not None and material_id not in self.rotations
        )


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of the replication log: a region's view of one key right after it changed,
    with the author's own key state (independent, reported for hand-overs and status)."""

    author_region: str
    author_key_state: str
    state: SharedState


@dataclass(frozen=True, slots=True)
class Handover:
    """An unfinished primary move as this region sees it.

    ``direction`` "to": this region handed the key to ``peer`` and waits for ``peer`` to
    accept. "from": this region took the key over from ``peer`` and waits for ``peer`` to
    confirm that it has stepped down. Both keys are Updating meanwhile (AWS's semantics).
    """

    direction: str
    peer: str
    epoch: int


@dataclass(frozen=True, slots=True)
class PeerReport:
    key_state: str
    epoch: int
    at_us: int


@dataclass(frozen=True, slots=True)
class LocalMeta:
    handover: Handover | None = None
    reports: Mapping[str, PeerReport] = field(default_factory=dict)


# ---- configuration as DescribeKey shows it ------------------------------------------------


def configuration(state: SharedState, *, region: str, account_id: str) -> MultiRegionConfiguration:
    def ref(name: str) -> MultiRegionKey:
        return MultiRegionKey(arn=identifiers.key_arn(name, account_id, state.key_id), region=name)

    return MultiRegionConfiguration(
        multi_region_key_type=state.role(region),
        primary_key=ref(state.primary_region),
        replica_keys=tuple(ref(name) for name in state.replica_regions()),
    )


# ---- transitions ---------------------------------------------------------------------------


def new_primary_state(
    *,
    key_id: str,
    key_spec: KeySpec,
    key_usage: KeyUsage,
    origin: Origin,
    created_at_us: int,
    region: str,
    version: VersionInfo,
) -> SharedState:
    """The state of a multi-Region primary key just created in ``region``."""
    state = SharedState(
        key_id=key_id,
        key_spec=key_spec,
        key_usage=key_usage,
        origin=origin,
        created_at_us=created_at_us,
        settings=Settings(
            epoch=1,
            primary_region=region,
            revision=1,
            author_region=region,
            current_material_id=version.material_id,
        ),
        versions={version.material_id: version},
        members={region: Membership(incarnation=1, deleted=False, author_region=region)},
        holders={version.material_id: frozenset({(region, 1)})},
    )
    check_state(state)
    return state


def require_primary(state: SharedState, *, region: str, arn: str, action: str) -> None:
    """Shared properties change only at the primary, in its region (AWS's rule)."""
    if state.primary_region != region:
        raise UnsupportedOperationException(
            f"{arn} is a replica key; {action} only on its primary key, in {state.primary_region}"
        )


def replicate(
    state: SharedState,
    *,
    region: str,
    arn: str,
    key_state: KeyState,
    target: str,
    known_regions: Iterable[str],
    request: ReplicaRequest,
) -> SharedState:
    """ReplicateKey called in ``region``: make ``target`` a live member."""
    require_primary(state, region=region, arn=arn, action="you can call ReplicateKey")
    if key_state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise KMSInvalidStateException(f"{arn} is pending deletion and cannot be replicated.")
    if key_state in (KeyState.CREATING, KeyState.UPDATING):
        raise KMSInvalidStateException(f"{arn} is {key_state.value.lower()}.")
    if not identifiers.is_valid_region(target):
        raise ValidationException(f"ReplicaRegion {target!r} is not a valid region name")
    if target == region:
        raise ValidationException(
            f"ReplicaRegion {target} is the region of the primary key; choose another region"
        )
    if target not in set(known_regions):
        raise UnsupportedOperationException(
            f"ReplicaRegion {target} is not a region of this Meridian cluster"
        )
    if state.is_alive_member(target):
        raise AlreadyExistsException(
            f"{identifiers.key_arn(target, arn.split(':')[4], state.key_id)} already exists"
        )
    if len(state.members) >= MEMBERS_PER_KEY_MAX and target not in state.members:
        raise LimitExceededException(
            f"A multi-Region key has at most {MEMBERS_PER_KEY_MAX} regions"
        )
    previous = state.members.get(target)
    incarnation = 1 if previous is None else previous.incarnation + 1
    members = dict(state.members)
    members[target] = Membership(
        incarnation=incarnation, deleted=False, author_region=region, request=request
    )
    return _checked(replace(state, members=members))


def hand_over(
    state: SharedState,
    meta: LocalMeta,
    *,
    region: str,
    arn: str,
    key_state: KeyState,
    target: str,
) -> tuple[SharedState, LocalMeta]:
    """UpdatePrimaryRegion called in ``region`` (the primary): move the primary to ``target``."""
    require_primary(state, region=region, arn=arn, action="you can call UpdatePrimaryRegion")
    if not identifiers.is_valid_region(target):
        raise ValidationException(f"PrimaryRegion {target!r} is not a valid region name")
    if target == region:
        raise UnsupportedOperationException(f"{arn} is already the primary key")
    _require_enabled(key_state, arn)
    if not state.is_alive_member(target):
        raise NotFoundException(f"{arn} has no replica key in {target}")
    target_arn = arn.replace(f":{region}:", f":{target}:", 1)
    report = meta.reports.get(target)
    if report is None or report.key_state == ABSENT:
        raise KMSInvalidStateException(
            f"{target_arn} is creating; its region has not confirmed the replica yet."
        )
    if report.key_state == KeyState.DISABLED.value:
        raise DisabledException(f"{target_arn} is disabled.")
    if report.key_state != KeyState.ENABLED.value:
        raise KMSInvalidStateException(
            f"{target_arn} is {_phrase(report.key_state)} and cannot become the primary key."
        )
    epoch = state.epoch + 1
    settings = replace(
        state.settings,
        epoch=epoch,
        primary_region=target,
        revision=state.settings.revision + 1,
        author_region=region,
    )
    new_meta = replace(meta, handover=Handover(direction="to", peer=target, epoch=epoch))
    return _checked(replace(state, settings=settings)), new_meta


def force_promote(
    state: SharedState,
    meta: LocalMeta,
    *,
    region: str,
    arn: str,
    key_state: KeyState | None,
    current_material_id: bytes,
) -> tuple[SharedState, LocalMeta]:
    """An operator's forced promotion of the replica in ``region`` (its primary is lost).

    The new epoch is one above the highest this region knows; if another promotion used
    the same epoch, the join decides by region name and both sides learn the winner.
    """
    if state.primary_region == region and meta.handover is None:
        raise UnsupportedOperationException(f"{arn} is already the primary key")
    if key_state is None or not state.is_alive_member(region):
        raise NotFoundException(f"{arn} does not exist")
    if key_state in (
        KeyState.CREATING,
        KeyState.PENDING_DELETION,
        KeyState.PENDING_REPLICA_DELETION,
    ):
        raise KMSInvalidStateException(
            f"{arn} is {_phrase(key_state.value)} and cannot become the primary key."
        )
    return _promote(state, region=region, current_material_id=current_material_id), replace(
        meta, handover=None
    )


def orphan_successor(state: SharedState) -> str | None:
    """The region that takes the primary role of an orphaned key, or None if not orphaned.

    A key is orphaned when its primary region deleted its key while live replicas remain
    (possible only in a race: a primary moved to a replica whose deletion completed
    before it learned of the move). Deletion is a definitive event authored by the
    deleted region itself, not a suspicion of failure, so taking over is safe: the live
    member with the smallest region name that holds material does it, at a new epoch.
    """
    primary = state.members.get(state.primary_region)
    if primary is not None and primary.alive:
        return None
    holding = [
        region
        for region in state.alive_regions()
        if any(state.holds(region, material_id) for material_id in state.versions)
    ]
    return min(holding) if holding else None


def adopt_orphan(state: SharedState, *, region: str, current_material_id: bytes) -> SharedState:
    """``region`` (the ``orphan_successor``) becomes primary of an orphaned key."""
    if orphan_successor(state) != region:
        raise MultiRegionStateError("only the orphan's successor adopts it")
    return _promote(state, region=region, current_material_id=current_material_id)


def _promote(state: SharedState, *, region: str, current_material_id: bytes) -> SharedState:
    if current_material_id not in state.versions:
        raise MultiRegionStateError("the local current version is not in the shared state")
    pending = state.settings.pending_material_id
    if pending is not None and (pending == current_material_id or not state.holds(region, pending)):
        # A pending version that has not reached this region is dropped as pending (the
        # version itself is kept: versions only grow); one it holds stays pending.
        pending = None
    settings = replace(
        state.settings,
        epoch=state.epoch + 1,
        primary_region=region,
        revision=state.settings.revision + 1,
        author_region=region,
        current_material_id=current_material_id,
        pending_material_id=pending,
    )
    return _checked(replace(state, settings=settings))


def stage_version(state: SharedState, *, region: str, version: VersionInfo) -> SharedState:
    """Two-phase rotation, phase one: add ``version`` as pending at the primary.

    With no live replica the version is current at once (nothing to wait for).
    """
    if version.material_id in state.versions:
        raise MultiRegionStateError("a key version id was reused")
    if len(state.versions) >= VERSIONS_PER_KEY_MAX:
        raise LimitExceededException(
            f"A multi-Region key has at most {VERSIONS_PER_KEY_MAX} key versions"
        )
    versions = dict(state.versions)
    versions[version.material_id] = version
    holders = dict(state.holders)
    holders[version.material_id] = frozenset({(region, state.members[region].incarnation)})
    settings = replace(
        state.settings,
        revision=state.settings.revision + 1,
        author_region=region,
        pending_material_id=version.material_id,
    )
    staged = replace(state, settings=settings, versions=versions, holders=holders)
    return promote_ready(staged, region=region) or _checked(staged)


def promote_ready(
    state: SharedState, *, region: str, now_us: int | None = None
) -> SharedState | None:
    """Two-phase rotation, phase two: at the primary, make the pending version current
    once every live member holds it. None when there is nothing to promote.

    The promotion is the rotation's completion: it is marked at ``now_us`` (by default the
    version's creation, i.e. a version current in the step that staged it) with the next
    serial number, so that every region lists the same rotations in the same order.
    """
    pending = state.settings.pending_material_id
    if pending is None or state.primary_region != region or state.missing_holders(pending):
        return None
    settings = replace(
        state.settings,
        revision=state.settings.revision + 1,
        author_region=region,
        current_material_id=pending,
        pending_material_id=None,
    )
    rotations = dict(state.rotations)
    if pending not in rotations:
        rotated_at_us = state.versions[pending].created_at_us if now_us is None else now_us
        serial = 1 + max((mark.serial for mark in rotations.values()), default=0)
        rotations[pending] = RotationMark(rotated_at_us=rotated_at_us, serial=serial)
    return _checked(replace(state, settings=settings, rotations=rotations))


def set_rotation(
    state: SharedState,
    *,
    region: str,
    arn: str,
    enabled: bool,
    period_days: int | None,
    next_rotation_us: int | None = None,
) -> SharedState:
    """A change of the rotation setting (a shared property) at the primary."""
    require_primary(state, region=region, arn=arn, action="you can change rotation")
    settings = replace(
        state.settings,
        revision=state.settings.revision + 1,
        author_region=region,
        rotation_enabled=enabled,
        rotation_period_days=period_days,
        next_rotation_us=next_rotation_us if enabled else None,
    )
    return _checked(replace(state, settings=settings))


def add_holder(state: SharedState, *, region: str, material_ids: Iterable[bytes]) -> SharedState:
    """Record that ``region``'s current incarnation holds the material of ``material_ids``."""
    member = state.members[region]
    holder = (region, member.incarnation)
    holders = dict(state.holders)
    for material_id in material_ids:
        if material_id in state.versions:
            holders[material_id] = holders.get(material_id, frozenset()) | {holder}
    return _checked(replace(state, holders=holders))


def mark_deleted(state: SharedState, *, region: str) -> SharedState:
    """``region`` deleted its key: its incarnation ends (a tombstone that beats the creation)."""
    member = state.members.get(region)
    if member is None or member.deleted:
        return state
    members = dict(state.members)
    members[region] = Membership(
        incarnation=member.incarnation, deleted=True, author_region=region, request=None
    )
    return _checked(replace(state, members=members))


def deletion_state(state: SharedState, *, region: str) -> KeyState:
    """ScheduleKeyDeletion: a primary with live replicas waits in PendingReplicaDeletion."""
    if state.primary_region == region and state.replica_regions():
        return KeyState.PENDING_REPLICA_DELETION
    return KeyState.PENDING_DELETION


class DeletionVerdict(StrEnum):
    DELETE = "delete"
    # The region is (now) the primary and has live replicas: PendingReplicaDeletion.
    WAIT_FOR_REPLICAS = "wait-for-replicas"
    # The region holds the only copy of a version some live member lacks (a version made
    # on a primary cut off from the others): deleting now would lose it. Retry later.
    WAIT_FOR_VERSIONS = "wait-for-versions"


def deletion_verdict(state: SharedState, *, region: str) -> DeletionVerdict:
    """Whether ``region`` may delete its key now that its waiting period is over."""
    others = [other for other in state.alive_regions() if other != region]
    if not others:
        return DeletionVerdict.DELETE
    if state.primary_region == region:
        return DeletionVerdict.WAIT_FOR_REPLICAS
    member = state.members.get(region)
    if member is None:
        return DeletionVerdict.DELETE
    for holders in state.holders.values():
        if (region, member.incarnation) in holders and not any(
            (other, state.members[other].incarnation) in holders for other in others
        ):
            return DeletionVerdict.WAIT_FOR_VERSIONS
    return DeletionVerdict.DELETE


# ---- invariants --------------------------------------------------------------------------


def check_state(state: SharedState, *, requests: bool = False) -> None:
    """Raise MultiRegionStateError if ``state`` is impossible.

    Checked after every transition and join. ``requests=True`` also validates each new
    replica's initial description, policy and tags, as for a request: for views read from
    a peer (untrusted input), not after each internal change (they cannot change there).
    """
    if not _MRK_ID.fullmatch(state.key_id):
        raise MultiRegionStateError("key id is not a multi-Region key id")
    settings = state.settings
    if settings.epoch < 1 or settings.revision < 1:
        raise MultiRegionStateError("epoch and revision start at 1")
    for name in (settings.primary_region, settings.author_region, *state.members):
        if not _valid_region(name):
            raise MultiRegionStateError("bad region name")
    if not state.versions or len(state.versions) > VERSIONS_PER_KEY_MAX:
        raise MultiRegionStateError("bad number of versions")
    if not state.members or len(state.members) > MEMBERS_PER_KEY_MAX:
        raise MultiRegionStateError("bad number of members")
    if settings.primary_region not in state.members:
        raise MultiRegionStateError("the primary region is not a member")
    if settings.current_material_id not in state.versions:
        raise MultiRegionStateError("the current version is unknown")
    pending = settings.pending_material_id
    if pending is not None and (
        pending not in state.versions or pending == settings.current_material_id
    ):
        raise MultiRegionStateError("the pending version is unknown or current")
    if settings.rotation_period_days is not None and not (
        ROTATION_PERIOD_DAYS_MIN <= settings.rotation_period_days <= ROTATION_PERIOD_DAYS_MAX
    ):
        raise MultiRegionStateError("bad rotation period")
    if settings.next_rotation_us is not None and (
        not settings.rotation_enabled or settings.next_rotation_us < 0
    ):
        raise MultiRegionStateError("a next rotation date without rotation enabled")
    for material_id, version in state.versions.items():
        if (
            material_id != version.material_id
            or len(material_id) != MATERIAL_ID_BYTES
            or len(version.commitment) != COMMITMENT_BYTES
            or version.created_at_us < 0
            or not _valid_region(version.origin_region)
        ):
            raise MultiRegionStateError("bad version")
    for material_id, mark in state.rotations.items():
        if material_id not in state.versions or mark.serial < 1 or mark.rotated_at_us < 0:
            raise MultiRegionStateError("a rotation mark names an unknown version")
    for member in state.members.values():
        if member.incarnation < 1 or not _valid_region(member.author_region):
            raise MultiRegionStateError("bad membership")
        if requests and member.request is not None:
            _check_request(member.request)
    for material_id, holders in state.holders.items():
        if material_id not in state.versions:
            raise MultiRegionStateError("a holder names an unknown version")
        for region, incarnation in holders:
            if region not in state.members or incarnation < 1:
                raise MultiRegionStateError("a holder names an unknown region")


@functools.lru_cache(maxsize=256)
def _valid_region(name: str) -> bool:
    """``identifiers.is_valid_region``, remembered: a cluster has a handful of region
    names, and a view names each several times (members, authors, holders, origins), so
    the regular expression was a tenth of checking a view read from a peer."""
    return identifiers.is_valid_region(name)


def _check_request(request: ReplicaRequest) -> None:
    try:
        validation.validate_description(request.description)
        validation.validate_tags(request.tags)
        validation.validate_tag_count(len(request.tags))
        if request.policy:
            validation.validate_policy_document(request.policy)
    except Exception as error:
        raise MultiRegionStateError("bad replica request") from error


def _checked(state: SharedState) -> SharedState:
    check_state(state)
    return state


def _require_enabled(key_state: KeyState, arn: str) -> None:
    if key_state is KeyState.DISABLED:
        raise DisabledException(f"{arn} is disabled.")
    if key_state is not KeyState.ENABLED:
        raise KMSInvalidStateException(f"{arn} is {_phrase(key_state.value)}.")


def _phrase(key_state: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r" \1", key_state).lower()
