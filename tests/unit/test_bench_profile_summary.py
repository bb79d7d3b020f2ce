"""Sorting py-spy's collapsed stacks into the parts of the request path."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian.cli.bench.profile_summary import OTHER, describe, gil_shares, summarize_directory

LOOP = "<module> (meridian/__main__.py:7);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
WRAP = LOOP + ";RequestInterceptor._wrap.<locals>.wrapped (meridian/server/api/interceptor.py:142)"
PIPELINE = WRAP + ";CallPipeline.run (interceptor.py:186);CallPipeline._run (interceptor.py:248)"
COLLAPSED = "\n".join(
    [
        f"{LOOP};Handle._run (asyncio/events.py:80) 40",
        f"{WRAP};uuid4 (uuid.py:723) 5",
        f"{PIPELINE};AuthorizationHook.before (authorization.py:99) 10",
        f"{PIPELINE};KeyManagementServicer.Encrypt (servicer.py:120) 15",
        f"{WRAP};CallPipeline._after (interceptor.py:268);AuditHook.after (audit_hook.py:97) 20",
        "thread;Thread.run (threading.py:975);GroupCommitWriter._run (writer.py:210) 8",
        "thread;Thread.run (threading.py:975);_connection_worker_thread (aiosqlite) 2",
        "not a stack line",
    ]
)


def test_every_sample_goes_to_the_first_part_its_stack_passes_through() -> None:
    shares = gil_shares(COLLAPSED)
    assert shares == {
        "audit writer thread": 0.08,
        "audit record on the event loop": 0.2,
        "authorization": 0.1,
        "the operation (servicer, domain, crypto)": 0.15,
        "interceptor and pipeline bookkeeping": 0.05,
        "gRPC and asyncio machinery": 0.4,
        OTHER: 0.02,
    }
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_directory_of_profiles(tmp_path: Path) -> None:
    (tmp_path / "Encrypt.txt").write_text(COLLAPSED)
    (tmp_path / "Empty.txt").write_text("")  # py-spy wrote nothing: left out
    summary = summarize_directory(tmp_path)
    assert list(summary) == ["Encrypt"]
    assert describe(summary["Encrypt"]).startswith("audit writer thread 8%, audit record")
