"""Records on the wire: the domain's shared state <-> ``meridian.replication.v1`` messages.

Reading is strict: a record from a peer is checked field by field, and then as a whole
(``check_state``), before anything looks at it. A malformed record raises WireError, and
the batch that carried it is refused whole.
"""

from __future__ import annotations

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import KeySpec, KeyState, KeyUsage, Origin, Tag
from meridian.server.domain.multi_region import (
    ABSENT,
    Holder,
    Membership,
    MultiRegionStateError,
    Record,
    ReplicaRequest,
    RotationMark,
    Settings,
    SharedState,
    VersionInfo,
    check_state,
)

_AUTHOR_STATES = frozenset({state.value for state in KeyState} | {ABSENT})
_UINT_MAX = 2**62


class WireError(ValueError):
    """A peer's message is malformed."""


def record_to_proto(record: Record) -> pb.KeyRecord:
    return pb.KeyRecord(
        author_region=record.author_region,
        author_key_state=record.author_key_state,
        state=state_to_proto(record.state),
    )


def record_from_proto(
    message: pb.KeyRecord, *, checked_requests: set[ReplicaRequest] | None = None
) -> Record:
    """``checked_requests``: replica requests already validated (and so skipped) by the
    caller, who shares one set across the records of a batch — see ``state_from_proto``."""
    if message.author_key_state not in _AUTHOR_STATES:
        raise WireError("unknown author key state")
    if not message.HasField("state"):
        raise WireError("a record without a state")
    record = Record(
        author_region=message.author_region,
        author_key_state=message.author_key_state,
        state=state_from_proto(message.state, checked_requests=checked_requests),
    )
    if record.author_region not in record.state.members:
        raise WireError("the author of a record is not a member of its key")
    return record


def state_to_proto(state: SharedState) -> pb.SharedState:
    settings = state.settings
    return pb.SharedState(
        key_id=state.key_id,
        key_spec=state.key_spec.value,
        key_usage=state.key_usage.value,
        origin=state.origin.value,
        created_at_us=state.created_at_us,
        settings=pb.Settings(
            epoch=settings.epoch,
            primary_region=settings.primary_region,
            revision=settings.revision,
            author_region=settings.author_region,
            current_material_id=settings.current_material_id,
            pending_material_id=settings.pending_material_id or b"",
            rotation_enabled=settings.rotation_enabled,
            rotation_period_days=settings.rotation_period_days or 0,
            next_rotation_us=settings.next_rotation_us,
        ),
        versions=[
            pb.VersionInfo(
                material_id=version.material_id,
                created_at_us=version.created_at_us,
                commitment=version.commitment,
                origin_region=version.origin_region,
                rotation_type="" if version.rotation_type is None else version.rotation_type.value,
            )
            for version in sorted(state.versions.values(), key=lambda v: v.material_id)
        ],
        members=[
            pb.Membership(
                region=region,
                incarnation=member.incarnation,
                deleted=member.deleted,
                author_region=member.author_region,
                request=None if member.request is None else _request_to_proto(member.request),
            )
            for region, member in sorted(state.members.items())
        ],
        holders=[
            pb.HolderSet(
                material_id=material_id,
                holders=[pb.Holder(region=r, incarnation=i) for r, i in sorted(holders)],
            )
            for material_id, holders in sorted(state.holders.items())
        ],
        rotations=[
            pb.RotationMark(
                material_id=material_id, rotated_at_us=mark.rotated_at_us, serial=mark.serial
            )
            for material_id, mark in sorted(state.rotations.items())
        ],
    )


def state_from_proto(
    message: pb.SharedState, *, checked_requests: set[ReplicaRequest] | None = None
) -> SharedState:
    """The view in ``message``, checked as untrusted input, replica requests included.

    A replica's initial description, policy and tags stay in every later view of its key,
    and checking a policy document is most of the cost of reading a view; with
    ``checked_requests`` each distinct request is checked once (and added to the set):
    the records of one batch share the set, so a batch of many views of keys replicated
    with the same policy checks that policy once.
    """
    if not message.HasField("settings"):
        raise WireError("a state without settings")
    settings = message.settings
    try:
        versions: dict[bytes, VersionInfo] = {}
        for item in message.versions:
            material_id = bytes(item.material_id)
            if material_id in versions:
                raise WireError("a version listed twice")
            versions[material_id] = VersionInfo(
                material_id=material_id,
                created_at_us=_bounded(item.created_at_us),
                commitment=bytes(item.commitment),
                origin_region=item.origin_region,
                rotation_type=RotationType(item.rotation_type) if item.rotation_type else None,
            )
        members: dict[str, Membership] = {}
        for entry in message.members:
            if entry.region in members:
                raise WireError("a member listed twice")
            members[entry.region] = Membership(
                incarnation=_bounded(entry.incarnation),
                deleted=entry.deleted,
                author_region=entry.author_region,
                request=_request_from_proto(entry.request) if entry.HasField("request") else None,
            )
        holders: dict[bytes, frozenset[Holder]] = {}
        for holder_set in message.holders:
            material_id = bytes(holder_set.material_id)
            if material_id in holders:
                raise WireError("a holder set listed twice")
            holders[material_id] = frozenset(
                (holder.region, _bounded(holder.incarnation)) for holder in holder_set.holders
            )
        rotations: dict[bytes, RotationMark] = {}
        for mark in message.rotations:
            material_id = bytes(mark.material_id)
            if material_id in rotations:
                raise WireError("a rotation listed twice")
            rotations[material_id] = RotationMark(
                rotated_at_us=_bounded(mark.rotated_at_us), serial=_bounded(mark.serial)
            )
        state = SharedState(
            key_id=message.key_id,
            key_spec=KeySpec(message.key_spec),
            key_usage=KeyUsage(message.key_usage),
            origin=Origin(message.origin),
            created_at_us=_bounded(message.created_at_us),
            settings=Settings(
                epoch=_bounded(settings.epoch),
                primary_region=settings.primary_region,
                revision=_bounded(settings.revision),
                author_region=settings.author_region,
                current_material_id=bytes(settings.current_material_id),
                pending_material_id=bytes(settings.pending_material_id) or None,
                rotation_enabled=settings.rotation_enabled,
                rotation_period_days=settings.rotation_period_days or None,
                next_rotation_us=_bounded(settings.next_rotation_us)
                if settings.HasField("next_rotation_us")
                else None,
            ),
            versions=versions,
            members=members,
            holders=holders,
            rotations=rotations,
        )
        requests = {m.request for m in members.values() if m.request is not None}
        if checked_requests is None:
            check_state(state, requests=True)
        elif requests <= checked_requests:
            check_state(state)
        else:
            check_state(state, requests=True)
            checked_requests |= requests
    except (ValueError, MultiRegionStateError) as error:
        if isinstance(error, WireError):
            raise
        raise WireError(f"malformed shared state: {error}") from None
    return state


def _bounded(value: int) -> int:
    if not 0 <= value < _UINT_MAX:
        raise WireError("a number out of range")
    return int(value)


def _request_to_proto(request: ReplicaRequest) -> pb.ReplicaRequest:
    return pb.ReplicaRequest(
        description=request.description,
        policy=request.policy,
        tags=[pb.Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in request.tags],
    )


def _request_from_proto(message: pb.ReplicaRequest) -> ReplicaRequest:
    return ReplicaRequest(
        description=message.description,
        policy=message.policy,
        tags=tuple(Tag(tag_key=tag.tag_key, tag_value=tag.tag_value) for tag in message.tags),
    )
