"""Which of a node's worker processes this one is (server/workers.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """One of ``count`` worker processes; ``Node.worker`` is None for a lone process."""

    index: int
    count: int

    @property
    def runs_background(self) -> bool:
        """Worker 0 runs what must run once per node (sweeper, sealing, metrics...)."""
        return self.index == 0

    @property
    def shares_database(self) -> bool:
        return self.count > 1
