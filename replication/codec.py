"""Batches on the wire: signed by the origin, key material wrapped to the destination.

Sending: every key material a batch carries is sealed into one peer-wrap bundle to the
destination's pinned wrapping key (hybrid X25519 + ML-KEM-768, HKDF-SHA256, AES-256-GCM),
each material bound by its associated data to its key and version, the bundle bound to
origin, destination and log. The serialized batch — entries, sealed materials, bundle
header — is then signed with the origin's ML-DSA-65 key, so every entry is signed and a
relay can neither read material nor change, add, drop or reorder anything.

Receiving (``open_batch``) checks, before anything is applied: the signature against the
origin's *pinned* key; that the batch is from the calling node to this one; that entry
sequence numbers are contiguous; every record field by field; that every material belongs
to a version its record names and matches that version's commitment. Any failure refuses
the whole batch with BatchError (the caller logs it); nothing is applied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from meridian.proto.replication.v1 import replication_pb2 as pb
from meridian.replication.identity import NodeIdentity, PublicIdentity
from meridian.replication.wire import WireError, record_from_proto, record_to_proto
from meridian.server.domain.crypto import signing
from meridian.server.domain.crypto.peer_wrap import (
    PeerWrapError,
    check_commitment,
    seal_bundle,
)
from meridian.server.domain.multi_region import Record, ReplicaRequest

BATCH_CONTEXT = b"meridian/replication/v1/batch"
LOG_ID_BYTES = 16
ENTRIES_PER_BATCH_MAX = 10_000
MATERIALS_PER_BATCH_MAX = 100_000


class BatchError(Exception):
    """A batch is refused: unsigned, wrongly signed, misaddressed or malformed."""


@dataclass(frozen=True, slots=True)
class OutgoingEntry:
    seq: int
    # The record, or its message already (a shipper makes it from the stored record).
    record: Record | pb.KeyRecord
    materials: dict[bytes, bytes]  # material id -> material (never logged)


@dataclass(frozen=True, slots=True)
class IncomingEntry:
    seq: int
    record: Record
    materials: dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    origin_region: str
    log_id: bytes
    created_at_us: int
    entries: list[IncomingEntry]
    snapshot: tuple[int, bool] | None  # (through_seq, last_chunk) for a snapshot chunk


def seal_batch(
    identity: NodeIdentity,
    destination: PublicIdentity,
    *,
    log_id: bytes,
    created_at_us: int,
    entries: Sequence[OutgoingEntry],
    snapshot: tuple[int, bool] | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> pb.PushRequest:
    origin = identity.region
    items: list[tuple[bytes, bytes]] = []
    messages = []
    for entry in entries:
        sealed_refs = []
        for material_id, material in sorted(entry.materials.items()):
            sealed_refs.append(pb.SealedMaterial(material_id=material_id, item_index=len(items)))
            items.append((_item_aad(entry.record.state.key_id, material_id), material))
        record = entry.record
        record_message = record if isinstance(record, pb.KeyRecord) else record_to_proto(record)
        messages.append(pb.Entry(seq=entry.seq, record=record_message, materials=sealed_refs))
    header = b""
    if items:
        header, sealed = seal_bundle(
            destination.wrap_key,
            items,
            context=_bundle_context(origin, destination.region, log_id, created_at_us),
            ephemeral_seed=randbytes(32),
        )
        for message in messages:
            for reference in message.materials:
                reference.sealed = sealed[reference.item_index]
    batch = pb.Batch(
        origin_region=origin,
        destination_region=destination.region,
        log_id=log_id,
        created_at_us=created_at_us,
        entries=messages,
        wrap_header=header,
    )
    if snapshot is not None:
        batch.snapshot.CopyFrom(pb.Snapshot(through_seq=snapshot[0], last_chunk=snapshot[1]))
    body = batch.SerializeToString(deterministic=True)
    return pb.PushRequest(body=body, signature=identity.signer.sign(body, context=BATCH_CONTEXT))


def open_batch(
    request: pb.PushRequest, *, sender: PublicIdentity, receiver: NodeIdentity
) -> OpenedBatch:
    try:
        signing.verify(
            sender.signing_public_key, request.signature, request.body, context=BATCH_CONTEXT
        )
    except signing.SignatureError:
        raise BatchError("the batch is unsigned or its signature does not verify") from None
    batch = pb.Batch()
    try:
        batch.ParseFromString(request.body)
    except DecodeError:
        raise BatchError("the batch body is not a valid Batch message") from None
    if batch.origin_region != sender.region:
        raise BatchError("the batch is from another region than its caller")
    if batch.destination_region != receiver.region:
        raise BatchError("the batch is addressed to another region")
    log_id = bytes(batch.log_id)
    if len(log_id) != LOG_ID_BYTES:
        raise BatchError("bad log id")
    if len(batch.entries) > ENTRIES_PER_BATCH_MAX:
        raise BatchError("a batch carries at most 10000 entries")
    if not batch.entries and not batch.HasField("snapshot"):
        # A snapshot chunk may be empty: a region with no multi-Region keys still moves a
        # peer past the pruned part of its log.
        raise BatchError("a batch of the log carries at least one entry")
    snapshot = None
    if batch.HasField("snapshot"):
        snapshot = (int(batch.snapshot.through_seq), batch.snapshot.last_chunk)
        if any(entry.seq != 0 for entry in batch.entries):
            raise BatchError("snapshot entries carry no sequence number")
    else:
        first = batch.entries[0].seq
        if first < 1 or any(e.seq != first + i for i, e in enumerate(batch.entries)):
            raise BatchError("entry sequence numbers are not contiguous from 1 up")
    try:
        checked_requests: set[ReplicaRequest] = set()
        records = [
            record_from_proto(entry.record, checked_requests=checked_requests)
            for entry in batch.entries
        ]
    except WireError as error:
        raise BatchError(str(error)) from None
    materials = _open_materials(batch, records, receiver)
    return OpenedBatch(
        origin_region=batch.origin_region,
        log_id=log_id,
        created_at_us=int(batch.created_at_us),
        entries=[
            IncomingEntry(seq=int(entry.seq), record=record, materials=opened)
            for entry, record, opened in zip(batch.entries, records, materials, strict=True)
        ],
        snapshot=snapshot,
    )


def _open_materials(
    batch: pb.Batch, records: list[Record], receiver: NodeIdentity
) -> list[dict[bytes, bytes]]:
    references: list[tuple[int, bytes, int, bytes]] = []  # (entry, material id, index, sealed)
    for position, (entry, record) in enumerate(zip(batch.entries, records, strict=True)):
        seen: set[bytes] = set()
        for reference in entry.materials:
            material_id = bytes(reference.material_id)
            if material_id in seen or material_id not in record.state.versions:
                raise BatchError("a material of no version its record names")
            seen.add(material_id)
            references.append(
                (position, material_id, int(reference.item_index), bytes(reference.sealed))
            )
    if not references:
        if batch.wrap_header:
            raise BatchError("a bundle header without materials")
        return [{} for _ in records]
    if len(references) > MATERIALS_PER_BATCH_MAX:
        raise BatchError("too many materials in one batch")
    if sorted(index for _, _, index, _ in references) != list(range(len(references))):
        raise BatchError("material item indexes are not 0..n-1")
    ordered = sorted(references, key=lambda reference: reference[2])
    try:
        plaintexts = receiver.wrap_keys.open_bundle(
            bytes(batch.wrap_header),
            [
                (_item_aad(records[position].state.key_id, material_id), sealed)
                for position, material_id, _, sealed in ordered
            ],
            context=_bundle_context(
                batch.origin_region,
                batch.destination_region,
                bytes(batch.log_id),
                batch.created_at_us,
            ),
        )
        opened: list[dict[bytes, bytes]] = [{} for _ in records]
        for (position, material_id, _, _), material in zip(ordered, plaintexts, strict=True):
            version = records[position].state.versions[material_id]
            check_commitment(
                material,
                version.commitment,
                key_id=records[position].state.key_id,
                material_id=material_id,
            )
            opened[position][material_id] = material
    except PeerWrapError:
        raise BatchError("key material does not open or does not match its version") from None
    return opened


def _item_aad(key_id: str, material_id: bytes) -> bytes:
    return b"meridian/replication/v1/material\x00" + key_id.encode("ascii") + b"\x00" + material_id


def _bundle_context(origin: str, destination: str, log_id: bytes, created_at_us: int) -> bytes:
    return b"\x00".join(
        (
            origin.encode("ascii", "replace"),
            destination.encode("ascii", "replace"),
            log_id,
            created_at_us.to_bytes(8, "big"),
        )
    )
