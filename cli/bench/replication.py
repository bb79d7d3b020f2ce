"""Replication lag under load and catch-up after an outage, on real node processes.

    scripts/bench-replication [--rate 50] [--duration 20] [--changes 5000,20000]
    meridian bench --replication [same options]

Starts a two-region cluster (one ``meridian node`` process per region, mTLS gRPC between
them; loopback, no link emulation) and measures:

1. **Lag under load.** Writes multi-Region changes at the primary at a steady rate (open
   loop: each write starts at its scheduled time, whatever the previous ones do): a new
   multi-Region key, then ReplicateKey into the replica region — the change that makes
   the replica exist. Per change, the lag is the replica key's CreationDate (the replica
   region's clock when it applied the record, microseconds) minus the client's clock just
   before it sent ReplicateKey (all processes share the host's clock). That is an upper
   bound of commit-to-apply by the write's own time before its commit (authorization,
   audit, the transaction: ~1-5 ms on loopback), and a lower bound by the replica's
   transaction after it started applying the batch (a few ms for the small batches of a
   steady load). ReplicateKey's own latency (it waits for the replica's acknowledgement)
   is reported too.
2. **Catch-up.** SIGKILLs the replica region, makes N changes at the primary (N/2 keys
   created and replicated: two log entries each), starts the replica again and polls both
   regions' replication status every 20 ms until the primary's backlog to it is zero. It
   reports the time to the first applied batch (reconnection), the time to zero backlog,
   and the entries applied per second (from the restart, and from the first applied
   batch).

Prints a table and writes ``bench-results/replication.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.cli.bench.targets import check_replication_targets, target_lines
from meridian.client import KmsClient

PRIMARY, REPLICA = "us-east-1", "eu-west-1"
OUTPUT_DEFAULT = Path("bench-results/replication.json")
POLL_S = 0.02
CATCH_UP_DEADLINE_S = 900.0
WRITERS_MAX = 64
DURATION_S_DEFAULT = 20.0


@dataclass(frozen=True, slots=True)
class Options:
    rate_per_s: float
    duration_s: float
    changes: list[int]
    writers: int
    output: Path


def add_arguments(parser: argparse.ArgumentParser, *, standalone: bool = False) -> None:
    """This benchmark's options; ``meridian bench`` already has --duration and --output."""
    if not standalone:
        parser.add_argument(
            "--replication",
            action="store_true",
            help="replication lag under load and catch-up on a two-region cluster "
            "(cli/bench/replication.py; uses --rate, --changes, --writers, --duration)",
        )
    parser.add_argument(
        "--rate", type=float, default=50.0, help="replicated changes per second (--replication)"
    )
    parser.add_argument(
        "--changes",
        default="5000",
        help="comma-separated log entries to catch up on, one run each, e.g. 5000,20000 "
        "(--replication)",
    )
    parser.add_argument(
        "--writers", type=int, default=16, help="client threads writing (--replication)"
    )
    if standalone:
        parser.add_argument(
            "--duration", type=float, default=None, help="seconds of steady load (20)"
        )
        parser.add_argument("--output", type=Path, default=OUTPUT_DEFAULT)


def options_from(args: argparse.Namespace, *, default_output: Path | None = None) -> Options:
    """``default_output``: the calling command's own default, replaced by this one's."""
    changes = [int(item) for item in str(args.changes).split(",") if item.strip()]
    if not changes or any(n < 2 for n in changes):
        raise ValueError("--changes takes entry counts of at least 2")
    duration_s = DURATION_S_DEFAULT if args.duration is None else float(args.duration)
    if not 0 < args.rate <= 10_000 or not 0 < duration_s <= 3600:
        raise ValueError("--rate must be in (0, 10000] and --duration in (0, 3600]")
    if not 1 <= args.writers <= WRITERS_MAX:
        raise ValueError(f"--writers must be 1 to {WRITERS_MAX}")
    output = Path(args.output)
    if default_output is not None and output == default_output:
        output = OUTPUT_DEFAULT
    return Options(
        rate_per_s=float(args.rate),
        duration_s=duration_s,
        changes=changes,
        writers=int(args.writers),
        output=output,
    )


def run_from_bench(args: argparse.Namespace, *, default_output: Path) -> int:
    """``meridian bench --replication``."""
    try:
        options = options_from(args, default_output=default_output)
    except ValueError as error:
        print(f"meridian bench: {error}")
        return 2
    document = run(options)
    print_table(document)
    print(f"\nwritten to {options.output}")
    return 1 if document["lag"]["errors"] else 0


def run(options: Options) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="meridian-bench-replication-") as directory:
        root = Path(directory)
        cluster.up(root, [PRIMARY, REPLICA], network="direct")
        try:
            cluster_file = root / "cluster.json"
            lag = measure_lag(cluster_file, options)
            catch_ups = [measure_catch_up(root, n, options.writers) for n in options.changes]
        finally:
            cluster.down(root)
    document = {
        "benchmark": "replication",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": _cpu_count(),
            "python": platform.python_version(),
            # How busy the machine was: the rates depend on it, CPU per entry much less.
            "load_average_at_start": round(load_at_start, 2),
            "load_average_at_end": round(os.getloadavg()[0], 2),
        },
        "network": "direct (loopback)",
        "regions": [PRIMARY, REPLICA],
        "lag": lag,
        "catch_up": catch_ups,
    }
    # The targets against this run (cli/bench/targets.py).
    document["targets"] = [check.as_dict() for check in check_replication_targets(document)]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


# ---- lag under steady load -----------------------------------------------------------------


def measure_lag(cluster_file: Path, options: Options) -> dict[str, Any]:
    count = max(1, math.floor(options.rate_per_s * options.duration_s))
    interval_s = 1.0 / options.rate_per_s
    lags_ms: list[float] = []
    replicate_ms: list[float] = []
    late_starts = 0
    errors: list[str] = []
    lock = threading.Lock()
    with (
        KmsClient.from_cluster_file(cluster_file, region=PRIMARY, timeout_s=30.0) as primary,
        KmsClient.from_cluster_file(cluster_file, region=REPLICA, timeout_s=30.0) as replica,
    ):
        _warm_up(primary)
        started = time.monotonic() + 0.2

        def change(index: int) -> None:
            nonlocal late_starts
            scheduled = started + index * interval_s
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -interval_s:
                with lock:
                    late_starts += 1
            try:
                key_id = primary.create_key(multi_region=True).key_metadata.key_id
                sent_at = time.time()
                sent = time.monotonic()
                primary.replicate_key(key_id=key_id, replica_region=REPLICA)
                answered = time.monotonic()
                applied_at = _wait_for_replica(replica, key_id)
            except Exception as error:  # a failed change is counted, not fatal
                with lock:
                    errors.append(type(error).__name__)
                return
            with lock:
                lags_ms.append((applied_at - sent_at) * 1000.0)
                replicate_ms.append((answered - sent) * 1000.0)

        wall = time.monotonic()
        with ThreadPoolExecutor(max_workers=options.writers) as pool:
            list(pool.map(change, range(count)))
        wall_s = time.monotonic() - wall
    return {
        "method": "replica CreationDate (apply time, replica clock) minus the client's clock "
        "before ReplicateKey; same host clock",
        "changes": count,
        "target_rate_per_s": options.rate_per_s,
        "achieved_rate_per_s": round(len(lags_ms) / wall_s, 1) if wall_s > 0 else 0.0,
        "late_starts": late_starts,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "lag_ms": _summary(lags_ms),
        "replicate_key_latency_ms": _summary(replicate_ms),
    }


def _warm_up(primary: KmsClient) -> None:
    """Both nodes know each other (identities pinned, channels open) before measuring."""
    key_id = primary.create_key(multi_region=True).key_metadata.key_id
    primary.replicate_key(key_id=key_id, replica_region=REPLICA)
    wait_until(lambda: backlog_entries(primary) == 0, 30.0)


def _wait_for_replica(replica: KmsClient, key_id: str) -> float:
    """The replica key's CreationDate (epoch seconds), once it exists there."""
    deadline = time.monotonic() + 60.0
    while True:
        try:
            metadata = replica.describe_key(key_id=key_id).key_metadata
        except Exception:
            metadata = None
        if metadata is not None and metadata.creation_date is not None:
            return metadata.creation_date.timestamp()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key_id} did not reach {REPLICA}")
        time.sleep(POLL_S)


# ---- catch-up after an outage --------------------------------------------------------------


def measure_catch_up(root: Path, changes: int, writers: int) -> dict[str, Any]:
    cluster_file = root / "cluster.json"
    keys = max(1, changes // 2)
    with KmsClient.from_cluster_file(cluster_file, region=PRIMARY, timeout_s=30.0) as kms:
        _warm_up(kms)
        cluster.kill(root, REPLICA)

        def make(_: int) -> None:
            made = kms.create_key(multi_region=True).key_metadata.key_id
            kms.replicate_key(key_id=made, replica_region=REPLICA)

        write_started = time.monotonic()
        with ThreadPoolExecutor(max_workers=writers) as pool:
            list(pool.map(make, range(keys)))
        write_s = time.monotonic() - write_started
        status = kms.get_replication_status(region=PRIMARY)
        head = status.head_seq
        acked = {peer.region: peer for peer in status.peers}[REPLICA].acked_seq

    cluster.start(root, REPLICA)
    restarted = time.monotonic()
    cpu_before = _node_cpu_s(root)
    first: tuple[float, int] | None = None
    with KmsClient.from_cluster_file(cluster_file, timeout_s=30.0) as kms:
        while True:
            applied = applied_seq(kms)
            now = time.monotonic()
            if first is None and applied > acked:
                first = (now, applied)
            if applied >= head and backlog_entries(kms) == 0:
                done = now
                cpu_after = _node_cpu_s(root)
                break
            if now - restarted > CATCH_UP_DEADLINE_S:
                raise SystemExit(f"the replica did not catch up within {CATCH_UP_DEADLINE_S} s")
            time.sleep(POLL_S)
    assert first is not None
    backlog = head - acked
    # The first poll that saw progress already includes the first batch: the apply rate
    # counts from there, so it excludes reconnection and the first batch.
    after_first = head - first[1]
    apply_s = done - first[0]
    since_restart_s = done - restarted
    cpu_ms_per_entry = {
        region: round((cpu_after[region] - cpu_before[region]) * 1000.0 / backlog, 3)
        for region in cpu_before
        if region in cpu_after and backlog > 0
    }
    return {
        "changes": changes,
        "keys": keys,
        # CPU time each node spent per entry caught up (all its threads, user + system,
        # from /proc; Linux only): a figure that does not depend on what else the machine
        # runs, unlike the rates.
        "node_cpu_ms_per_entry": cpu_ms_per_entry,
        "backlog_entries": backlog,
        "write_s": round(write_s, 3),
        "first_batch_after_restart_s": round(first[0] - restarted, 3),
        "zero_backlog_after_restart_s": round(since_restart_s, 3),
        "entries_per_s_since_restart": round(backlog / since_restart_s, 1),
        "entries_per_s_after_first_batch": round(after_first / apply_s, 1)
        if after_first > 0 and apply_s > 0
        else None,
    }


def _node_cpu_s(root: Path) -> dict[str, float]:
    """User + system CPU seconds of each running node process, where /proc has them."""
    seconds: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for region, entry in cluster.load(root).regions.items():
        try:
            stat = Path(f"/proc/{entry.pid}/stat").read_text(encoding="ascii")
        except (OSError, ValueError):
            continue
        # Fields after the command (which may hold spaces) start at field 3: utime and
        # stime are fields 14 and 15.
        fields = stat.rsplit(")", 1)[1].split()
        seconds[region] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def applied_seq(kms: KmsClient) -> int:
    """How far the replica has applied the primary's log (0 while it is unreachable)."""
    try:
        status = kms.get_replication_status(region=REPLICA, timeout_s=5.0)
    except Exception:
        return 0
    return next((i.applied_seq for i in status.inbound if i.origin_region == PRIMARY), 0)


def backlog_entries(kms: KmsClient) -> int:
    """Log entries the primary's peers have not acknowledged."""
    status = kms.get_replication_status(region=PRIMARY)
    return sum(peer.backlog_entries for peer in status.peers)


def wait_until(condition: Any, deadline_s: float) -> None:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline_s:
            raise SystemExit("timed out waiting for the cluster")
        time.sleep(0.05)


# ---- output -----------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(_percentile(ordered, 50), 2),
        "p90": round(_percentile(ordered, 90), 2),
        "p99": round(_percentile(ordered, 99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _cpu_count() -> int:
    return os.cpu_count() or 0


def print_table(document: dict[str, Any]) -> None:
    lag = document["lag"]
    print(
        f"\nreplication lag, {lag['changes']} changes at {lag['target_rate_per_s']}/s target "
        f"({lag['achieved_rate_per_s']}/s achieved, {lag['errors']} errors; load average "
        f"{document['host']['load_average_at_start']} at the start)"
    )
    print(f"{'ms':<28} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
    for label, name in (
        ("primary write -> replica", "lag_ms"),
        ("ReplicateKey latency", "replicate_key_latency_ms"),
    ):
        row = lag[name]
        cells = " ".join(f"{_cell(row[p]):>9}" for p in ("p50", "p90", "p99", "max"))
        print(f"{label:<28} {cells}")
    print(
        f"\n{'catch-up':<10} {'backlog':>8} {'1st batch s':>12} {'zero backlog s':>15} "
        f"{'entries/s':>10} {'after 1st':>10}  node CPU ms/entry"
    )
    for row in document["catch_up"]:
        print(
            f"{row['changes']:<10} {row['backlog_entries']:>8} "
            f"{row['first_batch_after_restart_s']:>12} {row['zero_backlog_after_restart_s']:>15} "
            f"{row['entries_per_s_since_restart']:>10} "
            f"{_cell(row['entries_per_s_after_first_batch']):>10}  "
            + ", ".join(f"{r} {v}" for r, v in row["node_cpu_ms_per_entry"].items())
        )
    print("\ntargets (issue 9) against this run")
    for line in target_lines(check_replication_targets(document)):
        print(line)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    add_arguments(parser, standalone=True)
    return run_from_bench(parser.parse_args(argv), default_output=OUTPUT_DEFAULT)


if __name__ == "__main__":
    raise SystemExit(main())
