"""Which regions may serve a call (DESIGN.md §6): the placement rules of the retry table.

Every operation in ``_core``'s table names a ``Placement``; together with the key
references in its request it gives the call's *candidate regions*. The order among
candidates (nearest healthy first) is ``RegionBook``'s job, not this module's.

- DEFINITE: one region, the ARN's region if a key field holds an ARN, else the home
  region.
- REPLICA: if every key the call names is a multi-region key (``mrk-``), every region
  that may hold a replica; otherwise as DEFINITE.
- ANY: every region (the answer does not depend on the region: GenerateRandom).
- PRIMARY: the ARN's region, else the MRK's primary region if known, else home.

A pinned client (``region=``) has exactly one candidate whatever the placement, as an
AWS client is bound to its region.

An MRK's key id is the same in every region, but its ARN names one region; a call
sent to another replica region carries the ARN rewritten to that region, as the AWS
Encryption SDK's MRK-aware keyrings do. What the client learns about where replicas
are only orders and prunes candidates, it never confines a call: regions named in a
``KeyMetadata.MultiRegionConfiguration`` it saw (DescribeKey, CreateKey, ...) are tried
first, and a region that answered NotFound is left out for a minute. Knowledge goes
stale — a CreateKey response names no replica, ReplicateKey adds some later — so a
region the client has not heard of is still tried, after the known ones.
"""

from __future__ import annotations

import enum
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from meridian.client.clock import Clock
from meridian.client.errors import UnknownRegionError

__all__ = [
    "KeyRef",
    "Placement",
    "ReplicaDirectory",
    "Route",
    "blob_key_id",
    "route",
]

_KEY_ARN = re.compile(
    r"^arn:meridian:kms:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):(?P<resource>(?:key|alias)/.+)$"
)
_MRK_ID = re.compile(r"^mrk-[0-9a-f]{32}$")

# Ciphertext blob format version 1 (docs/ciphertext-format.md): version byte, key id
# length, key id. Only the key id is read, to route Decrypt of an MRK's blob.
_BLOB_V1 = 1
_BLOB_KEY_ID_CHARS_MAX = 64

# Bounds on what the directory remembers (STYLE.md 11).
DIRECTORY_KEYS_MAX = 10_000
DIRECTORY_TTL_S = 60.0
ABSENT_TTL_S = 60.0


class Placement(enum.Enum):
    """Where an operation may run; see the module docstring's table."""

    DEFINITE = "definite"
    REPLICA = "replica"
    ANY = "any"
    PRIMARY = "primary"


@dataclass(frozen=True, slots=True)
class KeyRef:
    """What a key field names, as far as the client can tell without asking."""

    text: str
    key_id: str | None  # the bare key id, when the text names a key (not an alias)
    arn_region: str | None

    @property
    def is_mrk(self) -> bool:
        return self.key_id is not None and bool(_MRK_ID.match(self.key_id))

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        match = _KEY_ARN.match(text)
        if match is None:
            is_alias = text.startswith("alias/")
            return cls(text=text, key_id=None if is_alias else text, arn_region=None)
        resource = match.group("resource")
        key_id = resource.removeprefix("key/") if resource.startswith("key/") else None
        return cls(text=text, key_id=key_id, arn_region=match.group("region"))

    def in_region(self, region: str) -> str:
        """This reference as sent to ``region``: an MRK's ARN names that region."""
        if self.arn_region is None or self.arn_region == region:
            return self.text
        prefix = f"arn:meridian:kms:{self.arn_region}:"
        return f"arn:meridian:kms:{region}:" + self.text.removeprefix(prefix)


def blob_key_id(ciphertext_blob: bytes) -> str | None:
    """The key id in a version-1 ciphertext blob's header; None if it is not one."""
    if len(ciphertext_blob) < 2 or ciphertext_blob[0] != _BLOB_V1:
        return None
    length = ciphertext_blob[1]
    if not 1 <= length <= _BLOB_KEY_ID_CHARS_MAX or len(ciphertext_blob) < 2 + length:
        return None
    raw = ciphertext_blob[2 : 2 + length]
    if not all(0x21 <= byte <= 0x7E for byte in raw):
        return None
    return raw.decode("ascii")


@dataclass(frozen=True, slots=True)
class Route:
    """A call's candidate regions (in configuration preference order) and how to
    address its keys in each."""

    candidates: tuple[str, ...]
    # Request fields holding an MRK's ARN, to rewrite for the region a call goes to.
    rewrites: tuple[tuple[str, KeyRef], ...] = ()
    spread: bool = False  # more than one region may serve it
    mrk_key_id: str | None = None  # the MRK a REPLICA call names, for the directory
    known_replicas: frozenset[str] = frozenset()  # where replicas are known to be: first


def route(
    placement: Placement,
    fields: Mapping[str, object],
    route_by: Sequence[str],
    *,
    regions: Sequence[str],
    home_region: str,
    pinned_region: str | None,
    directory: ReplicaDirectory,
) -> Route:
    if pinned_region is not None:
        return Route((pinned_region,))
    refs = [
        (name, KeyRef.parse(value))
        for name in route_by
        if isinstance(value := fields.get(name), str) and value
    ]
    if placement is Placement.ANY:
        return Route(tuple(regions), spread=len(regions) > 1)
    if placement is Placement.REPLICA:
        spread = _replica_route(refs, fields, regions, directory)
        if spread is not None:
            return spread
    if placement is Placement.PRIMARY:
        primary = _primary_region(refs, directory)
        if primary is not None:
            return Route((_known(primary, refs[0][1].text, regions),))
    return Route((_definite_region(refs, regions, home_region),))


def _replica_route(
    refs: list[tuple[str, KeyRef]],
    fields: Mapping[str, object],
    regions: Sequence[str],
    directory: ReplicaDirectory,
) -> Route | None:
    key_ids = [ref.key_id for _, ref in refs]
    blob = fields.get("ciphertext_blob")
    # A blob in another format (an RSA ciphertext) names no key; the key fields decide.
    if isinstance(blob, bytes) and (blob_key := blob_key_id(blob)) is not None:
        key_ids.append(blob_key)
    if not key_ids or not all(key_id is not None and _MRK_ID.match(key_id) for key_id in key_ids):
        return None
    mrk = key_ids[0]
    assert mrk is not None
    candidates = directory.candidates(mrk, regions)
    rewrites = tuple((name, ref) for name, ref in refs if ref.arn_region is not None)
    return Route(
        candidates,
        rewrites=rewrites,
        spread=len(candidates) > 1,
        mrk_key_id=mrk,
        known_replicas=directory.known_regions(mrk),
    )


def _primary_region(refs: list[tuple[str, KeyRef]], directory: ReplicaDirectory) -> str | None:
    if not refs:
        return None
    first = refs[0][1]
    if first.arn_region is not None:
        return first.arn_region
    if first.is_mrk and first.key_id is not None:
        return directory.primary(first.key_id)
    return None


def _definite_region(
    refs: list[tuple[str, KeyRef]], regions: Sequence[str], home_region: str
) -> str:
    for _, ref in refs:
        if ref.arn_region is not None:
            return _known(ref.arn_region, ref.text, regions)
    return home_region


def _known(region: str, key_text: str, regions: Sequence[str]) -> str:
    if region not in regions:
        raise UnknownRegionError(
            f"{key_text!r} is in region {region!r}, but this client has endpoints only "
            f"for: {', '.join(regions)}"
        )
    return region


# ---- what the client learned about multi-region keys --------------------------------


@dataclass
class _Replicas:
    primary: str | None
    regions: frozenset[str]
    learned_at: float


class ReplicaDirectory:
    """Where each MRK's primary and replicas are, learned from responses; bounded
    (least recently learned entries go first) and forgotten after a few minutes, so a
    replica added later is found again."""

    def __init__(self, clock: Clock, *, keys_max: int = DIRECTORY_KEYS_MAX) -> None:
        self._clock = clock
        self._keys_max = keys_max
        self._known: OrderedDict[str, _Replicas] = OrderedDict()
        self._absent: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def candidates(self, key_id: str, regions: Sequence[str]) -> tuple[str, ...]:
        """Every region but those that said NotFound for this MRK a moment ago."""
        now = self._clock.monotonic()
        with self._lock:
            allowed = [region for region in regions if not self._is_absent(key_id, region, now)]
        # When every region said NotFound recently, ask them all again rather than none.
        return tuple(allowed) if allowed else tuple(regions)

    def known_regions(self, key_id: str) -> frozenset[str]:
        """The regions a recent response named as holding this MRK (maybe not all)."""
        with self._lock:
            known = self._fresh(key_id, self._clock.monotonic())
            return frozenset() if known is None else known.regions

    def primary(self, key_id: str) -> str | None:
        with self._lock:
            known = self._fresh(key_id, self._clock.monotonic())
            return None if known is None else known.primary

    def mark_absent(self, key_id: str, region: str) -> None:
        with self._lock:
            self._absent[(key_id, region)] = self._clock.monotonic()
            self._absent.move_to_end((key_id, region))
            while len(self._absent) > self._keys_max:
                self._absent.popitem(last=False)

    def learn(self, response: object) -> None:
        """Remember an MRK's regions from a response carrying its KeyMetadata."""
        if not isinstance(response, Message):
            return
        if "key_metadata" not in response.DESCRIPTOR.fields_by_name:
            return
        if not response.HasField("key_metadata"):
            return
        metadata = getattr(response, "key_metadata")  # noqa: B009 - any response type
        if not metadata.multi_region or not metadata.HasField("multi_region_configuration"):
            return
        configuration = metadata.multi_region_configuration
        primary = configuration.primary_key.region or None
        regions = {key.region for key in configuration.replica_keys if key.region}
        if primary is not None:
            regions.add(primary)
        if not regions:
            return
        now = self._clock.monotonic()
        with self._lock:
            self._known[metadata.key_id] = _Replicas(primary, frozenset(regions), now)
            self._known.move_to_end(metadata.key_id)
            for region in regions:
                self._absent.pop((metadata.key_id, region), None)
            while len(self._known) > self._keys_max:
                self._known.popitem(last=False)

    def _fresh(self, key_id: str, now: float) -> _Replicas | None:
        known = self._known.get(key_id)
        if known is None or now - known.learned_at > DIRECTORY_TTL_S:
            return None
        return known

    def _is_absent(self, key_id: str, region: str, now: float) -> bool:
        marked = self._absent.get((key_id, region))
        return marked is not None and now - marked <= ABSENT_TTL_S
