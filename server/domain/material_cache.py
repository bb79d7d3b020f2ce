"""A bounded cache of unwrapped key material, so the hot path never unwraps twice.

Material stays in process memory only (never logged, never persisted unwrapped).
Entries are immutable (a key version's material never changes), so the only ways an
entry leaves are LRU eviction at ``entries_max`` and ``forget_key`` when a key is
deleted.
"""

from __future__ import annotations

from collections import OrderedDict


class MaterialCache:
    def __init__(self, *, entries_max: int) -> None:
        if entries_max < 1:
            raise ValueError("entries_max must be at least 1")
        self._entries_max = entries_max
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def get(self, key_id: str, material_id: bytes) -> bytes | None:
        entry = (key_id, material_id)
        material = self._entries.get(entry)
        if material is not None:
            self._entries.move_to_end(entry)
        return material

    def put(self, key_id: str, material_id: bytes, material: bytes) -> None:
        self._entries[(key_id, material_id)] = material
        self._entries.move_to_end((key_id, material_id))
        while len(self._entries) > self._entries_max:
            self._entries.popitem(last=False)

    def forget_key(self, key_id: str) -> None:
        for entry in [entry for entry in self._entries if entry[0] == key_id]:
            del self._entries[entry]

    def __len__(self) -> int:
        return len(self._entries)
