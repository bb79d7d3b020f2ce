"""The join of two views of one multi-Region key's shared state.

``join(a, b)`` is commutative, associative and idempotent (a semilattice join), which is
what makes the log safe to deliver late, twice, out of order or as a snapshot: every
region that has seen the same records holds the same state, whatever the order.

- settings: the one with the greater ``Settings.order`` (epoch, primary, revision, author);
- versions: union (a version is never dropped);
- members: per region, the entry with the greater (incarnation, deleted, author);
- holders: union per version;
- rotations (when a version became current by rotating): per version, the earlier mark
  (by time, then serial), a total order, so the join stays a semilattice.

Two views that disagree on an immutable property (key spec, usage, origin, creation time),
give one version id two different materials, or give one order two different contents,
cannot both be true: :class:`MergeConflict` is raised and the record is refused.
"""

from __future__ import annotations

from dataclasses import replace

from meridian.server.domain.multi_region import (
    Holder,
    Membership,
    RotationMark,
    SharedState,
    check_state,
)


class MergeConflict(Exception):
    """Two views of a key contradict each other; the incoming one is refused."""


def join(local: SharedState, incoming: SharedState) -> SharedState:
    if (
        local.key_id != incoming.key_id
        or local.key_spec is not incoming.key_spec
        or local.key_usage is not incoming.key_usage
        or local.origin is not incoming.origin
        or local.created_at_us != incoming.created_at_us
    ):
        raise MergeConflict("immutable properties differ")

    settings = local.settings
    if incoming.settings.order > settings.order:
        settings = incoming.settings
    elif incoming.settings.order == settings.order and incoming.settings != settings:
        raise MergeConflict("two settings share one order")

    versions = dict(local.versions)
    for material_id, version in incoming.versions.items():
        known = versions.get(material_id)
        if known is None:
            versions[material_id] = version
        elif known != version:
            raise MergeConflict("one version id names two versions")

    members: dict[str, Membership] = dict(local.members)
    for region, member in incoming.members.items():
        known_member = members.get(region)
        if known_member is None or member.order > known_member.order:
            members[region] = member
        elif member.order == known_member.order and member != known_member:
            raise MergeConflict("two memberships share one order")

    holders: dict[bytes, frozenset[Holder]] = dict(local.holders)
    for material_id, regions in incoming.holders.items():
        holders[material_id] = holders.get(material_id, frozenset()) | regions

    rotations: dict[bytes, RotationMark] = dict(local.rotations)
    for material_id, mark in incoming.rotations.items():
        known_mark = rotations.get(material_id)
        if known_mark is None or mark.order < known_mark.order:
            rotations[material_id] = mark

    joined = replace(
        local,
        settings=settings,
        versions=versions,
        members=members,
        holders=holders,
        rotations=rotations,
    )
    if joined == local:
        # The common case for duplicates: keep the very same object, cheap to compare.
        return local
    check_state(joined)
    return joined
