"""Canonical encoding of multi-Region key views: storage (``mrk_state``, the outbox) and
digests. Canonical JSON (sorted keys, no spaces, bytes as hex), so equal views have equal
bytes and equal digests — replicas that converged can be compared by digest. The wire
between nodes is protobuf (``replication/wire.py``), not this.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import KeySpec, KeyUsage, Origin, Tag
from meridian.server.domain.multi_region import (
    Handover,
    LocalMeta,
    Membership,
    MultiRegionStateError,
    PeerReport,
    Record,
    ReplicaRequest,
    RotationMark,
    Settings,
    SharedState,
    VersionInfo,
    check_state,
)


def encode_state(state: SharedState) -> bytes:
    """Canonical JSON: sorted keys, no spaces, bytes as hex. Equal states, equal bytes."""
    return _canonical(state_document(state))


def state_digest(state: SharedState) -> str:
    """SHA-256 of the canonical encoding: replicas that converged have equal digests."""
    return hashlib.sha256(encode_state(state)).hexdigest()


def state_document(state: SharedState) -> dict[str, Any]:
    settings = state.settings
    return {
        "format": 1,
        "key_id": state.key_id,
        "key_spec": state.key_spec.value,
        "key_usage": state.key_usage.value,
        "origin": state.origin.value,
        "created_at_us": state.created_at_us,
        "settings": {
            "epoch": settings.epoch,
            "primary_region": settings.primary_region,
            "revision": settings.revision,
            "author_region": settings.author_region,
            "current": settings.current_material_id.hex(),
            "pending": None
            if settings.pending_material_id is None
            else settings.pending_material_id.hex(),
            "rotation_enabled": settings.rotation_enabled,
            "rotation_period_days": settings.rotation_period_days,
            "next_rotation_us": settings.next_rotation_us,
        },
        "versions": [
            {
                "id": version.material_id.hex(),
                "created_at_us": version.created_at_us,
                "commitment": version.commitment.hex(),
                "origin_region": version.origin_region,
                "rotation_type": None
                if version.rotation_type is None
                else version.rotation_type.value,
            }
            for version in sorted(state.versions.values(), key=lambda v: v.material_id)
        ],
        "members": {
            region: {
                "incarnation": member.incarnation,
                "deleted": member.deleted,
                "author_region": member.author_region,
                "request": None if member.request is None else _request_document(member.request),
            }
            for region, member in state.members.items()
        },
        "holders": {
            material_id.hex(): sorted([region, incarnation] for region, incarnation in holders)
            for material_id, holders in state.holders.items()
        },
        "rotations": {
            material_id.hex(): [mark.rotated_at_us, mark.serial]
            for material_id, mark in state.rotations.items()
        },
    }


def decode_state(data: bytes) -> SharedState:
    """The inverse of :func:`encode_state`; raises MultiRegionStateError if malformed."""
    try:
        document = _loads(data)
    except ValueError as error:
        raise MultiRegionStateError(f"undecodable shared state: {error}") from None
    return _state_from_document(document)


def _state_from_document(document: Any) -> SharedState:
    try:
        settings = document["settings"]
        state = SharedState(
            key_id=str(document["key_id"]),
            key_spec=KeySpec(document["key_spec"]),
            key_usage=KeyUsage(document["key_usage"]),
            origin=Origin(document["origin"]),
            created_at_us=int(document["created_at_us"]),
            settings=Settings(
                epoch=int(settings["epoch"]),
                primary_region=str(settings["primary_region"]),
                revision=int(settings["revision"]),
                author_region=str(settings["author_region"]),
                current_material_id=bytes.fromhex(settings["current"]),
                pending_material_id=None
                if settings["pending"] is None
                else bytes.fromhex(settings["pending"]),
                rotation_enabled=bool(settings["rotation_enabled"]),
                rotation_period_days=settings["rotation_period_days"],
                # Views stored before rotation of multi-Region keys have no such field.
                next_rotation_us=_optional_int(settings.get("next_rotation_us")),
            ),
            versions={
                bytes.fromhex(item["id"]): VersionInfo(
                    material_id=bytes.fromhex(item["id"]),
                    created_at_us=int(item["created_at_us"]),
                    commitment=bytes.fromhex(item["commitment"]),
                    origin_region=str(item["origin_region"]),
                    rotation_type=None
                    if item.get("rotation_type") is None
                    else RotationType(item["rotation_type"]),
                )
                for item in document["versions"]
            },
            members={
                str(region): Membership(
                    incarnation=int(item["incarnation"]),
                    deleted=bool(item["deleted"]),
                    author_region=str(item["author_region"]),
                    request=None if item["request"] is None else _request(item["request"]),
                )
                for region, item in document["members"].items()
            },
            holders={
                bytes.fromhex(material_id): frozenset(
                    (str(region), int(incarnation)) for region, incarnation in holders
                )
                for material_id, holders in document["holders"].items()
            },
            rotations={
                bytes.fromhex(material_id): RotationMark(
                    rotated_at_us=int(mark[0]), serial=int(mark[1])
                )
                for material_id, mark in document.get("rotations", {}).items()
            },
        )
    except (ValueError, KeyError, TypeError) as error:
        raise MultiRegionStateError(f"undecodable shared state: {error}") from None
    check_state(state)
    return state


def encode_record(record: Record, *, state_bytes: bytes | None = None) -> bytes:
    """Canonical JSON of ``record``. ``state_bytes``: ``encode_state(record.state)`` if the
    caller has it already (a receiver writes the same view to ``mrk_state`` and to its own
    record): the view is then encoded once, not twice.

    The record's keys sort before its view's ("author_key_state" < "author_region" <
    "state"), so the canonical record is these two strings and the view's own canonical
    bytes, in that order: the same bytes as encoding the whole document.
    """
    if state_bytes is None:
        state_bytes = encode_state(record.state)
    return b"".join(
        (
            b'{"author_key_state":',
            _canonical(record.author_key_state),
            b',"author_region":',
            _canonical(record.author_region),
            b',"state":',
            state_bytes,
            b"}",
        )
    )


def decode_record(data: bytes) -> Record:
    try:
        document = _loads(data)
        author = str(document["author_region"])
        author_state = str(document["author_key_state"])
        # The parsed document itself, not parsed again from its re-encoding: a shipper
        # decodes every record it sends, and that was a third of its time.
        state = _state_from_document(document["state"])
    except (ValueError, KeyError, TypeError) as error:
        raise MultiRegionStateError(f"undecodable record: {error}") from None
    return Record(author_region=author, author_key_state=author_state, state=state)


def decode_document(data: bytes) -> Any:
    """A stored record's or view's JSON, parsed but not checked (``decode_record`` checks):
    for a reader that only passes it on (a shipper: the receiver checks every record)."""
    try:
        return _loads(data)
    except ValueError as error:
        raise MultiRegionStateError(f"undecodable record: {error}") from None


def encode_meta(meta: LocalMeta) -> bytes:
    handover = meta.handover
    return _canonical(
        {
            "handover": None
            if handover is None
            else {"direction": handover.direction, "peer": handover.peer, "epoch": handover.epoch},
            "reports": {
                region: {"key_state": r.key_state, "epoch": r.epoch, "at_us": r.at_us}
                for region, r in meta.reports.items()
            },
        }
    )


def decode_meta(data: bytes) -> LocalMeta:
    try:
        document = _loads(data)
        handover = document["handover"]
        return LocalMeta(
            handover=None
            if handover is None
            else Handover(
                direction=str(handover["direction"]),
                peer=str(handover["peer"]),
                epoch=int(handover["epoch"]),
            ),
            reports={
                str(region): PeerReport(
                    key_state=str(item["key_state"]),
                    epoch=int(item["epoch"]),
                    at_us=int(item["at_us"]),
                )
                for region, item in document["reports"].items()
            },
        )
    except (ValueError, KeyError, TypeError) as error:
        raise MultiRegionStateError(f"undecodable local meta: {error}") from None


def _request_document(request: ReplicaRequest) -> dict[str, Any]:
    return {
        "description": request.description,
        "policy": request.policy,
        "tags": [[tag.tag_key, tag.tag_value] for tag in request.tags],
    }


def _request(document: dict[str, Any]) -> ReplicaRequest:
    return ReplicaRequest(
        description=str(document["description"]),
        policy=str(document["policy"]),
        tags=tuple(Tag(tag_key=str(k), tag_value=str(v)) for k, v in document["tags"]),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# The reference encoder of the canonical form (``json.dumps`` with options builds a new
# encoder per call). It holds no state between calls.
_REFERENCE_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def _canonical(document: Any) -> bytes:
    """The reference encoding, written by orjson where that gives the very same bytes.

    orjson writes what these documents hold (strings, integers below 2^63, booleans,
    null, lists, objects with string keys sorted by ``OPT_SORT_KEYS``) exactly as the
    reference does, escapes of quotes, backslashes and \\n-style controls included; it
    differs only where the reference writes ``\\uXXXX`` (non-ASCII, DEL, other control
    characters). Output holding non-ASCII, DEL or a ``\\u`` is written again by the
    reference, so the bytes (and digests) never depend on which encoder ran
    (tests/unit/test_replication_codec_speed.py holds the two to each other). Encoding a view was a
    fifth of a receiver's time per entry; orjson takes a tenth of that.
    """
    try:
        data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        data = b""
    if data and data.isascii() and b"\\u" not in data and b"\x7f" not in data:
        return data
    return _REFERENCE_ENCODER.encode(document).encode()


def _loads(data: bytes) -> Any:
    """JSON to Python (orjson, ~3x faster than ``json``); what orjson refuses (numbers
    beyond 64 bits, ...) is left to ``json``, which decides as it always did."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
