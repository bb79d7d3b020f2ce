"""The invariants a simulated run is held to once it is quiescent (DESIGN.md §7).

1. Convergence: every region that keeps a view of a key has the same shared state
   (equal digests), so exactly one primary and one current version per key.
2. Every ciphertext produced anywhere decrypts in every region that holds the key: the
   region has the version it names, with the very same material.
3. No acknowledged key version is lost: every version a client was told about (created,
   rotated in) is held with its material by every region that holds the key.
4. Liveness after healing: no key left Creating or Updating, no unfinished hand-over, no
   pending version that every live member already holds, every region encrypts with the
   shared current version.
5. Rotation records (ListKeyRotations): the current version, if a rotation made it, is
   listed as rotated, and no two rotations share a place in the list.

Epochs never going backwards, holder claims being true, and the current version always
being held are checked at every step by the world itself.
"""

from __future__ import annotations

from meridian.replication.sim.world import World
from meridian.server.domain.model import KeyState
from meridian.server.domain.multi_region_codec import (
    state_digest,
)


def final_violations(world: World) -> list[str]:
    problems = list(world.violations)
    if problems:
        return problems
    for key_id in world.key_ids:
        views = {
            region: node.durable.states[key_id]
            for region, node in world.nodes.items()
            if key_id in node.durable.states
        }
        digests = {region: state_digest(state) for region, state in views.items()}
        if len(set(digests.values())) > 1:
            detail = ", ".join(f"{r}={d[:8]}" for r, d in sorted(digests.items()))
            problems.append(f"{key_id[:12]}: views differ: {detail}")
            continue
        state = next(iter(views.values()))
        live = {
            region: node.durable.keys[key_id]
            for region, node in world.nodes.items()
            if key_id in node.durable.keys
        }
        for region, row in live.items():
            member = state.members.get(region)
            if member is None or member.deleted or member.incarnation != row.incarnation:
                problems.append(f"{key_id[:12]}: {region} holds a key the view says it does not")
            if row.state in (KeyState.CREATING, KeyState.UPDATING):
                problems.append(f"{key_id[:12]}: {region} is still {row.state.value}")
            if row.current != state.settings.current_material_id:
                problems.append(f"{key_id[:12]}: {region} encrypts with a non-current version")
            meta = world.nodes[region].durable.metas.get(key_id)
            if meta is not None and meta.handover is not None:
                problems.append(f"{key_id[:12]}: {region} has an unfinished hand-over")
        for region in state.alive_regions():
            if region not in live:
                problems.append(f"{key_id[:12]}: live member {region} has no key")
        pending = state.settings.pending_material_id
        current = state.settings.current_material_id
        made_by = state.versions[current].rotation_type if current in state.versions else None
        if made_by is not None and current not in state.rotations:
            problems.append(f"{key_id[:12]}: the current version's rotation is not listed")
        orders = [mark.order for mark in state.rotations.values()]
        if len(set(orders)) != len(orders):
            problems.append(f"{key_id[:12]}: two rotations share a place in the list")
        if pending is not None and not state.missing_holders(pending):
            problems.append(f"{key_id[:12]}: pending version held everywhere, not promoted")
        for ciphertext in world.ciphertexts:
            if ciphertext.key_id != key_id:
                continue
            for region, row in live.items():
                if row.materials.get(ciphertext.material_id) != ciphertext.material:
                    problems.append(
                        f"{key_id[:12]}: a ciphertext from {ciphertext.region} does not "
                        f"decrypt in {region}"
                    )
        for material_id, material in world.acknowledged_versions.get(key_id, {}).items():
            for region, row in live.items():
                if row.materials.get(material_id) != material:
                    problems.append(
                        f"{key_id[:12]}: acknowledged version {material_id.hex()[:8]} "
                        f"missing in {region}"
                    )
    return problems
