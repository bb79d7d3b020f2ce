"""Worker processes' SQLite writers take turns through one lock (storage/write_turns.py)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from meridian.server.storage.write_turns import WriteTurns


def test_one_writer_at_a_time_and_a_bounded_wait(tmp_path: Path) -> None:
    database = tmp_path / "meridian.sqlite3"
    first, second = WriteTurns(database), WriteTurns(database)
    try:
        assert first.try_acquire()
        # Two descriptors exclude each other even in one process.
        assert not second.try_acquire()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            second.acquire(timeout_s=0.05)
        first.release()
        assert second.try_acquire()
        second.release()
    finally:
        first.close()
        second.close()


def test_a_waiting_writer_gets_the_turn_once_it_is_released(tmp_path: Path) -> None:
    database = tmp_path / "meridian.sqlite3"
    first, second = WriteTurns(database), WriteTurns(database)
    try:
        first.acquire(timeout_s=1)
        releaser = threading.Timer(0.05, first.release)
        releaser.start()
        second.acquire(timeout_s=5)  # returns once released, long before the timeout
        releaser.join()
        assert not first.try_acquire()
        second.release()
    finally:
        first.close()
        second.close()
