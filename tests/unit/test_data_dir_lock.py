"""The data directory's lock: a node's workers share it, an offline tool needs it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.server.data_dir_lock import DataDirBusy, DataDirLock


def test_node_workers_share_the_lock_and_a_tool_is_refused_until_all_stop(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path, role="node", shared=True)
    second = DataDirLock.acquire(tmp_path, role="node", shared=True)
    with pytest.raises(DataDirBusy, match=r"in use by a node \(pid \d+\)"):
        DataDirLock.acquire(tmp_path, role="seed-keys")
    first.release()
    with pytest.raises(DataDirBusy):
        DataDirLock.acquire(tmp_path, role="seed-keys")
    second.release()
    DataDirLock.acquire(tmp_path, role="seed-keys").release()


def test_a_tool_holding_the_lock_refuses_nodes_and_other_tools(tmp_path: Path) -> None:
    tool = DataDirLock.acquire(tmp_path, role="seed-keys")
    for shared in (True, False):
        with pytest.raises(DataDirBusy, match=r"in use by a seed-keys \(pid \d+\)"):
            DataDirLock.acquire(tmp_path, role="node", shared=shared)
    tool.release()
    tool.release()  # idempotent
    DataDirLock.acquire(tmp_path, role="node", shared=True).release()
