"""The first call hook of a worker that shares its database with other workers.

Before a call runs, its worker looks at the counter of commits every worker bumps
(server/storage/commit_counter.py) and clears its caches of committed state if any
other worker committed since: a call that starts after a change was acknowledged by
any worker sees that change (server/workers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meridian.server.api.interceptor import CallInfo
from meridian.server.domain.errors import KmsError


class OtherWorkersCommits:
    """A ``CallHook`` that runs ``observe`` (``SqliteStore.observe_other_writers``)."""

    def __init__(self, observe: Callable[[], None]) -> None:
        self._observe = observe

    async def before(self, call: CallInfo) -> None:
        self._observe()

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        return None
