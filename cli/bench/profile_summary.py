"""Where a profiled node spent its GIL time, by part of the request path.

`meridian bench --profile DIR` leaves one py-spy file per operation: collapsed stacks,
one line per distinct stack (``frame;frame;... count``), sampled only while a thread
held the GIL. This module sorts every sample into the first part of the request path its
stack passes through, so a run ends with a few lines saying, e.g., how much of the GIL
the audit trail took, instead of a flame graph to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# (part, a marker that a stack in that part contains), most specific first: a sample
# belongs to the first part whose marker appears anywhere in its stack.
PARTS: tuple[tuple[str, str], ...] = (
    ("audit writer thread", "GroupCommitWriter._run"),
    ("audit record on the event loop", "AuditHook."),
    ("authorization", "AuthorizationHook."),
    ("the operation (servicer, domain, crypto)", "CallPipeline._run"),
    ("interceptor and pipeline bookkeeping", "RequestInterceptor._wrap"),
    ("gRPC and asyncio machinery", "BaseEventLoop._run_once"),
)
OTHER = "other threads"


def _frame_names(stack: str) -> list[str]:
    # A frame reads "function (file:line)"; only the function's qualified name matters.
    return [frame.split(" (", 1)[0] for frame in stack.split(";")]


def gil_shares(collapsed: str) -> dict[str, float]:
    """Fraction of the GIL samples in each part (the parts in PARTS order, then OTHER)."""
    counts = dict.fromkeys([part for part, _ in PARTS] + [OTHER], 0)
    for line in collapsed.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        names = _frame_names(stack)
        part = next(
            (part for part, marker in PARTS if any(marker in name for name in names)),
            OTHER,
        )
        counts[part] += int(count_text)
    total = sum(counts.values())
    return {part: (count / total if total else 0.0) for part, count in counts.items()}


def summarize_directory(directory: Path) -> dict[str, dict[str, float]]:
    """Per operation (one file each), the shares of :func:`gil_shares`."""
    return {
        path.stem: gil_shares(path.read_text())
        for path in sorted(directory.glob("*.txt"))
        if path.stat().st_size
    }


def describe(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{part} {share:.0%}" for part, share in shares.items() if share >= 0.005)
