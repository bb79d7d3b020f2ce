"""A bounded cache of unwrapped key material, so the hot path never unwraps twice.

Material stays in process memory only (never logged, never persisted unwrapped).
Entries are immutable (a key version's material never changes), so the only ways an
entry leaves are LRU eviction at ``entries_max``, ``forget_key`` when a key is
deleted, and ``clear`` when another worker process committed (it may have deleted
material this process holds; server/workers.py).

``clear`` must be cheap: it runs on every other worker's commit, and emptying a dict
of 100,000 entries stalls the event loop for tens of milliseconds. So it only moves a
generation: an entry of an older generation is never served again. Such entries all
precede the current ones in the LRU order (a current entry is one put or used since
the move, which puts it at the end), so each ``get`` and ``put`` drops a few of them
from the front until the front is current: the memory they hold is released within
a bounded number of calls, without a pause.
"""

from __future__ import annotations

from collections import OrderedDict

# Old-generation entries dropped per get/put after a clear.
PURGE_PER_CALL = 8


class MaterialCache:
    def __init__(self, *, entries_max: int) -> None:
        if entries_max < 1:
            raise ValueError("entries_max must be at least 1")
        self._entries_max = entries_max
        # (key id, material id) -> material; least recently used first.
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        # The generation each entry was stored in (beside, so entries stay plain bytes).
        self._generations: dict[tuple[str, bytes], int] = {}
        self._generation = 0
        self._purging = False

    def get(self, key_id: str, material_id: bytes) -> bytes | None:
        self._purge_some()
        entry = (key_id, material_id)
        material = self._entries.get(entry)
        if material is None:
            return None
        if self._generations[entry] != self._generation:
            self._drop(entry)
            return None
        self._entries.move_to_end(entry)
        return material

    def put(self, key_id: str, material_id: bytes, material: bytes) -> None:
        self._purge_some()
        entry = (key_id, material_id)
        self._entries[entry] = material
        self._entries.move_to_end(entry)
        self._generations[entry] = self._generation
        while len(self._entries) > self._entries_max:
            self._drop(next(iter(self._entries)))

    def forget_key(self, key_id: str) -> None:
        for entry in [entry for entry in self._entries if entry[0] == key_id]:
            self._drop(entry)

    def clear(self) -> None:
        """Forget everything at once (O(1)); the memory is released over the next calls."""
        self._generation += 1
        self._purging = bool(self._entries)

    def _purge_some(self) -> None:
        if not self._purging:
            return
        for _ in range(PURGE_PER_CALL):
            if not self._entries:
                self._purging = False
                return
            entry = next(iter(self._entries))
            if self._generations[entry] == self._generation:
                self._purging = False
                return
            self._drop(entry)

    def _drop(self, entry: tuple[str, bytes]) -> None:
        del self._entries[entry]
        del self._generations[entry]

    def __len__(self) -> int:
        """Entries held, old-generation ones not yet dropped included."""
        return len(self._entries)
