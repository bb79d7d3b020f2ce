"""What `meridian bench` shows: a progress display while it runs, then the tables.

rich draws the live progress bars on a terminal; on a pipe or a file (CI, tests) the
same lines are printed plainly, one per finished run, and the tables are laid out at a
fixed width so that no column is squeezed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Wide enough for the side-by-side table when the output is not a terminal.
PLAIN_WIDTH = 200
POLL_S = 0.1


def make_console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=PLAIN_WIDTH)
    return console


class Display:
    """Progress of the planned runs; the runner reports each run's start and end."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console()
        self._progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            # Runs done of all runs; seconds of a run (a step of unknown length: "?").
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            # Off the terminal, live bars would only add noise to a log.
            disable=not self.console.is_terminal,
        )
        self._overall: TaskID | None = None

    def __enter__(self) -> Display:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def plan(self, runs: int) -> None:
        """How many measured runs there will be (the overall bar)."""
        if self._overall is None:
            self._overall = self._progress.add_task("all runs", total=runs)
        else:
            self._progress.update(self._overall, total=runs)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def wait(self, label: str, seconds: float, done: Callable[[], bool]) -> None:
        """Show one run's bar (``seconds`` long) until ``done()`` is true."""
        task = self._progress.add_task(label, total=max(seconds, POLL_S))
        started = time.monotonic()
        try:
            while not done():
                self._progress.update(task, completed=min(time.monotonic() - started, seconds))
                time.sleep(POLL_S)
        finally:
            self._progress.remove_task(task)
            if self._overall is not None:
                self._progress.advance(self._overall)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """A step of unknown length (starting a node, preparing keys)."""
        task = self._progress.add_task(label, total=None)
        try:
            yield
        finally:
            self._progress.remove_task(task)


def _number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def side_by_side(document: Mapping[str, Any]) -> Table:
    """One row per operation: audit on and off against the ceiling, and the peer.

    Columns of a part that did not run (`--no-audit-off`, `--no-peer`) are left out, so
    the table fits a terminal.
    """
    table = Table(title="Meridian side by side (ratios from the same run)", title_justify="left")
    by_key = {(r["target"], r["operation"]): r for r in document["results"]}
    targets = {target for target, _ in by_key}
    with_off = "meridian (audit off)" in targets
    with_peer = any("vs_moto" in row for row in document["ratios"].values())
    headers = ["operation", "audit on ops/s", "of ceiling", "p99 ms", "p99 / ceiling p99"]
    headers.append("CPU/op / ceiling's")
    if with_off:
        headers += ["audit off ops/s", "off: of ceiling", "on / off", "audit CPU ms/op"]
    if with_peer:
        headers += ["moto ops/s", "vs moto"]
    for header in headers:
        table.add_column(header, justify="left" if header == "operation" else "right")
    for operation, row in document["ratios"].items():
        on = by_key.get(("meridian", operation), {})
        cells = [
            operation,
            _number(on.get("ops_per_s")),
            _number(row.get("of_ceiling"), 2),
            _number(on.get("p99_ms"), 2),
            _number(row.get("p99_vs_ceiling_p99"), 2),
            _number(row.get("cpu_vs_ceiling"), 1, "x"),
        ]
        if with_off:
            off = by_key.get(("meridian (audit off)", operation))
            cells += [
                _number(off["ops_per_s"]) if off else "-",
                _number(row.get("audit_off_of_ceiling"), 2) if off else "-",
                _number(row.get("audit_on_vs_off"), 2) if off else "-",
                _number(row.get("audit_cpu_ms_per_op"), 3) if off else "-",
            ]
        if with_peer:
            peer = by_key.get(("moto", operation))
            cells += [
                _number(peer["ops_per_s"]) if peer else "n/a",
                _number(row.get("vs_moto"), 1, "x"),
            ]
        table.add_row(*cells)
    return table


def per_target(results: Sequence[Mapping[str, Any]]) -> Table:
    """Every run's figures: throughput, latency percentiles, the server's CPU."""
    table = Table(title="Every run", title_justify="left")
    for header in (
        "target",
        "operation",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server CPU ms/op",
        "errors",
    ):
        table.add_column(header, justify="left" if header in ("target", "operation") else "right")
    for result in results:
        table.add_row(
            result["target"],
            result["operation"],
            _number(result["ops_per_s"]),
            _number(result["p50_ms"], 2),
            _number(result["p99_ms"], 2),
            _number(result["p999_ms"], 2),
            _number(result["server_cpu_ms_per_op"], 3),
            str(result["errors"]),
        )
    return table


def targets_table(checks: Sequence[Mapping[str, Any]]) -> Table:
    """The issue's targets against this run (cli/bench/targets.py): met or not."""
    table = Table(title="Targets (issue 9) against this run", title_justify="left")
    for header in ("target", "operation", "measured", "limit", ""):
        table.add_column(header, justify="right" if header in ("measured", "limit") else "left")
    for check in checks:
        table.add_row(
            check["target"],
            check["operation"],
            _number(check["measured"], 2),
            _number(check["limit"], 2),
            "met" if check["met"] else "NOT met",
        )
    return table
