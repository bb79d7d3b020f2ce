"""Records on the wire: the domain's shared state <-> ``meridian.replication.v1`` messages.

Reading is strict: a record from a peer is checked field by field, and then as a whole
(``check_state``), before anything looks at it. A malformed record raises WireError, and
the batch that carried it is refused whole.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from meridian.server.domain.multi_region_codec import decode_document

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


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An outbox record as a shipper needs it: the message, and what choosing its key
    materials asks (its key, the versions its view names, the view's live members)."""

    message: pb.KeyRecord
    key_id: str
    material_ids: frozenset[bytes]
    live_members: frozenset[str]


def stored_record_to_proto(data: bytes) -> StoredRecord:
    """An outbox record (canonical JSON, ``multi_region_codec.encode_record``) straight to
    its message: the same message as ``record_to_proto(decode_record(data))``, without
    building and checking the domain objects in between — a shipper only passes records
    on, and the receiver checks each one field by field (``record_from_proto``). That
    detour was a third of a sender's time per entry. Raises MultiRegionStateError for a
    row that is not a record.
    """
    document = decode_document(data)
    try:
        state = document["state"]
        settings = state["settings"]
        # Built in place (``add``, attribute assignment): a message passed to a
        # constructor is copied into its parent, which made building a third slower.
        message = pb.KeyRecord(
            author_region=document["author_region"],
            author_key_state=document["author_key_state"],
        )
        view = message.state
        view.key_id = state["key_id"]
        view.key_spec = state["key_spec"]
        view.key_usage = state["key_usage"]
        view.origin = state["origin"]
        view.created_at_us = state["created_at_us"]
        shared = view.settings
        shared.epoch = settings["epoch"]
        shared.primary_region = settings["primary_region"]
        shared.revision = settings["revision"]
        shared.author_region = settings["author_region"]
        shared.current_material_id = bytes.fromhex(settings["current"])
        if settings["pending"] is not None:
            shared.pending_material_id = bytes.fromhex(settings["pending"])
        shared.rotation_enabled = settings["rotation_enabled"]
        shared.rotation_period_days = settings["rotation_period_days"] or 0
        # Records stored before rotation of multi-Region keys have no such field.
        if settings.get("next_rotation_us") is not None:
            shared.next_rotation_us = settings["next_rotation_us"]
        # The stored lists and objects are in canonical (sorted) order already, the
        # order ``state_to_proto`` writes (hex sorts as the bytes it encodes); sorting
        # them again costs next to nothing and does not depend on that.
        material_ids = []
        add_version = view.versions.add
        for item in state["versions"]:
            material_id = bytes.fromhex(item["id"])
            material_ids.append(material_id)
            add_version(
                material_id=material_id,
                created_at_us=item["created_at_us"],
                commitment=bytes.fromhex(item["commitment"]),
                origin_region=item["origin_region"],
                rotation_type=item.get("rotation_type") or "",
            )
        live_members = []
        add_member = view.members.add
        for region, item in sorted(state["members"].items()):
            member = add_member(
                region=region,
                incarnation=item["incarnation"],
                deleted=item["deleted"],
                author_region=item["author_region"],
            )
            request = item["request"]
            if request is not None:
                member.request.SetInParent()  # present, even if every field is empty
                member.request.description = request["description"]
                member.request.policy = request["policy"]
                add_tag = member.request.tags.add
                for tag_key, tag_value in request["tags"]:
                    add_tag(tag_key=tag_key, tag_value=tag_value)
            if not item["deleted"]:
                live_members.append(region)
        add_holders = view.holders.add
        for material_id_hex, holders in sorted(state["holders"].items()):
            add_holder = add_holders(material_id=bytes.fromhex(material_id_hex)).holders.add
            for region, incarnation in sorted(holders):
                add_holder(region=region, incarnation=incarnation)
        add_mark = view.rotations.add
        for material_id_hex, mark in sorted(state.get("rotations", {}).items()):
            add_mark(
                material_id=bytes.fromhex(material_id_hex), rotated_at_us=mark[0], serial=mark[1]
            )
        return StoredRecord(
            message=message,
            key_id=view.key_id,
            material_ids=frozenset(material_ids),
            live_members=frozenset(live_members),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MultiRegionStateError(f"undecodable record: {error}") from None


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
