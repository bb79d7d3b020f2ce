"""What simulated clients do: the operations, at one region, as its node would serve them.

Each operation validates and changes the region's durable state through the same pure
domain transitions as the real node (``server/domain/multi_region.py``), and records what
the client was told (acknowledged versions, ciphertexts) for the final checks. A refused
operation raises the KmsError the API would answer; an operation at a region that is down
is never acknowledged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from meridian.replication.sim.node import KeyRow, SimNode
from meridian.server.domain import identifiers
from meridian.server.domain.crypto.peer_wrap import material_commitment
from meridian.server.domain.errors import KMSInvalidStateException, NotFoundException
from meridian.server.domain.key_material import RotationType
from meridian.server.domain.model import (
    CRYPTO_USABLE_STATES,
    KeySpec,
    KeyState,
    KeyUsage,
    Origin,
)
from meridian.server.domain.multi_region import (
    LocalMeta,
    ReplicaRequest,
    VersionInfo,
    deletion_state,
    force_promote,
    hand_over,
    new_primary_state,
    replicate,
    require_primary,
    stage_version,
)

ACCOUNT = "000000000000"


@dataclass(frozen=True, slots=True)
class Ciphertext:
    key_id: str
    material_id: bytes
    material: bytes
    region: str


@dataclass
class Stats:
    events: int = 0
    messages: int = 0
    operations: int = 0
    acknowledged: int = 0
    refused_records: int = 0
    snapshots: int = 0
    forced_promotions: int = 0
    graceful_moves: int = 0
    rotations: int = 0
    heal_time_s: float = 0.0


class Operations:
    """A mixin of ``World``: these are the attributes it provides."""

    rng: random.Random
    regions: list[str]
    key_ids: list[str]
    acknowledged_versions: dict[str, dict[bytes, bytes]]
    ciphertexts: list[Ciphertext]
    stats: Stats
    # The world's per-region clocks (skewed), provided by ``World.local_time``.
    local_time: Callable[[str], float]

    def _now_us(self, node: SimNode) -> int:
        return int(self.local_time(node.region) * 1e6)

    def _arn(self, region: str, key_id: str) -> str:
        return identifiers.key_arn(region, ACCOUNT, key_id)

    def _new_version(self, node: SimNode, key_id: str) -> tuple[VersionInfo, bytes]:
        material = self.rng.randbytes(32)
        material_id = self.rng.randbytes(32)
        commitment = material_commitment(material, key_id=key_id, material_id=material_id)
        return VersionInfo(material_id, self._now_us(node), commitment, node.region), material

    def _op_create(self, node: SimNode, _key_id: str) -> bool:
        key_id = "mrk-" + self.rng.randbytes(16).hex()
        version, material = self._new_version(node, key_id)
        state = new_primary_state(
            key_id=key_id,
            key_spec=KeySpec.SYMMETRIC_DEFAULT,
            key_usage=KeyUsage.ENCRYPT_DECRYPT,
            origin=Origin.AWS_KMS,
            created_at_us=self._now_us(node),
            region=node.region,
            version=version,
        )
        row = KeyRow(KeyState.ENABLED, version.material_id, {version.material_id: material}, 1)
        row.pending_window_s = self.rng.uniform(2.0, 10.0)
        self.key_ids.append(key_id)
        self.acknowledged_versions[key_id] = {version.material_id: material}
        node.store_local(key_id, state, self.local_time(node.region), meta=LocalMeta(), row=row)
        return True

    def _row(self, node: SimNode, key_id: str) -> KeyRow:
        row = node.durable.keys.get(key_id)
        if row is None:
            raise NotFoundException("no such key here")
        return row

    def _op_replicate(self, node: SimNode, key_id: str) -> bool:
        row = self._row(node, key_id)
        state = node.durable.states[key_id]
        target = self.rng.choice([r for r in self.regions if r != node.region])
        new_state = replicate(
            state,
            region=node.region,
            arn=self._arn(node.region, key_id),
            key_state=row.state,
            target=target,
            known_regions=self.regions,
            request=ReplicaRequest(description=f"replica in {target}"),
        )
        node.store_local(key_id, new_state, self.local_time(node.region))
        return True

    def _op_rotate(self, node: SimNode, key_id: str) -> bool:
        row = self._row(node, key_id)
        state = node.durable.states[key_id]
        require_primary(
            state, region=node.region, arn=self._arn(node.region, key_id), action="rotate"
        )
        if row.state not in (KeyState.ENABLED, KeyState.DISABLED):
            raise KMSInvalidStateException("not rotatable in this state")
        version, material = self._new_version(node, key_id)
        # As KeyRotation does: the version says a rotation made it, so the run exercises
        # the rotation records (what ListKeyRotations lists) and checks.py can hold them.
        version = replace(version, rotation_type=RotationType.ON_DEMAND)
        new_state = stage_version(state, region=node.region, version=version)
        row.materials[version.material_id] = material
        if new_state.settings.current_material_id == version.material_id:
            row.current = version.material_id
        self.acknowledged_versions[key_id][version.material_id] = material
        self.stats.rotations += 1
        node.store_local(key_id, new_state, self.local_time(node.region))
        return True

    def _op_move(self, node: SimNode, key_id: str) -> bool:
        row = self._row(node, key_id)
        state = node.durable.states[key_id]
        targets = [r for r in state.replica_regions()] or [self.rng.choice(self.regions)]
        new_state, meta = hand_over(
            state,
            node.durable.metas.get(key_id) or LocalMeta(),
            region=node.region,
            arn=self._arn(node.region, key_id),
            key_state=row.state,
            target=self.rng.choice(targets),
        )
        row.state = KeyState.UPDATING
        self.stats.graceful_moves += 1
        node.store_local(key_id, new_state, self.local_time(node.region), meta=meta)
        return True

    def _op_force(self, node: SimNode, key_id: str) -> bool:
        row = node.durable.keys.get(key_id)
        state = node.durable.states.get(key_id)
        if state is None:
            return False
        new_state, meta = force_promote(
            state,
            node.durable.metas.get(key_id) or LocalMeta(),
            region=node.region,
            arn=self._arn(node.region, key_id),
            key_state=None if row is None else row.state,
            current_material_id=b"" if row is None else row.current,
        )
        assert row is not None
        if row.state is KeyState.UPDATING:
            row.state = KeyState.ENABLED
        self.stats.forced_promotions += 1
        node.store_local(key_id, new_state, self.local_time(node.region), meta=meta)
        return True

    def _op_encrypt(self, node: SimNode, key_id: str) -> bool:
        row = node.durable.keys.get(key_id)
        if row is None or row.state not in CRYPTO_USABLE_STATES:
            return False
        self.ciphertexts.append(
            Ciphertext(key_id, row.current, row.materials[row.current], node.region)
        )
        return True

    def _op_disable(self, node: SimNode, key_id: str) -> bool:
        return self._set_state(node, key_id, KeyState.ENABLED, KeyState.DISABLED)

    def _op_enable(self, node: SimNode, key_id: str) -> bool:
        return self._set_state(node, key_id, KeyState.DISABLED, KeyState.ENABLED)

    def _set_state(self, node: SimNode, key_id: str, old: KeyState, new: KeyState) -> bool:
        row = node.durable.keys.get(key_id)
        if row is None or row.state is not old:
            return False
        row.state = new
        node.store_local(key_id, node.durable.states[key_id], self.local_time(node.region))
        return True

    def _op_delete(self, node: SimNode, key_id: str) -> bool:
        row = node.durable.keys.get(key_id)
        if row is None or row.state not in (KeyState.ENABLED, KeyState.DISABLED):
            return False
        state = node.durable.states[key_id]
        row.state = deletion_state(state, region=node.region)
        now = self.local_time(node.region)
        if row.state is KeyState.PENDING_DELETION:
            row.deletion_due = now + row.pending_window_s
        node.store_local(key_id, state, now)
        return True

    def _op_cancel(self, node: SimNode, key_id: str) -> bool:
        row = node.durable.keys.get(key_id)
        if row is None or row.state not in (
            KeyState.PENDING_DELETION,
            KeyState.PENDING_REPLICA_DELETION,
        ):
            return False
        row.state = KeyState.DISABLED
        row.deletion_due = None
        node.store_local(key_id, node.durable.states[key_id], self.local_time(node.region))
        return True
