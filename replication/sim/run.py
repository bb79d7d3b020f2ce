"""Run simulation seeds: ``python -m meridian.replication.sim`` (``scripts/simulate``).

    scripts/simulate --seeds 100000 --jobs 2 --out sim-results.json
    scripts/simulate --seed 4242 --trace          # replay one seed, printing every event

A failing seed replays exactly from its number: the run depends on nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from meridian.replication.sim.checks import final_violations
from meridian.replication.sim.world import World


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    violations: tuple[str, ...]
    events: int
    messages: int
    operations: int
    acknowledged: int
    snapshots: int
    forced_promotions: int
    graceful_moves: int
    rotations: int
    heal_time_s: float


def run_seed(seed: int, *, trace: bool = False) -> SeedResult:
    world = World(seed, trace=print if trace else None)
    world.run()
    stats = world.stats
    return SeedResult(
        seed=seed,
        violations=tuple(final_violations(world)),
        events=stats.events,
        messages=stats.messages,
        operations=stats.operations,
        acknowledged=stats.acknowledged,
        snapshots=stats.snapshots,
        forced_promotions=stats.forced_promotions,
        graceful_moves=stats.graceful_moves,
        rotations=stats.rotations,
        heal_time_s=round(stats.heal_time_s, 3),
    )


def _run_range(seeds: Sequence[int]) -> list[SeedResult]:
    return [run_seed(seed) for seed in seeds]


def run_seeds(seeds: Sequence[int], *, jobs: int) -> Iterable[SeedResult]:
    if jobs <= 1:
        yield from (run_seed(seed) for seed in seeds)
        return
    chunk = 200
    chunks = [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for results in pool.map(_run_range, chunks):
            yield from results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500, help="how many seeds (default 500)")
    parser.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed (replay)")
    parser.add_argument("--trace", action="store_true", help="print every event (with --seed)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--out", help="write a JSON summary (and every failing seed) here")
    args = parser.parse_args(argv)

    if args.seed is not None:
        result = run_seed(args.seed, trace=args.trace)
        print(json.dumps(asdict(result), indent=2))
        return 1 if result.violations else 0

    seeds = list(range(args.first, args.first + args.seeds))
    started = time.perf_counter()
    failures: list[SeedResult] = []
    totals = {
        "events": 0,
        "messages": 0,
        "acknowledged": 0,
        "snapshots": 0,
        "forced_promotions": 0,
        "graceful_moves": 0,
        "rotations": 0,
    }
    for done, result in enumerate(run_seeds(seeds, jobs=args.jobs), start=1):
        for name in totals:
            totals[name] += getattr(result, name)
        if result.violations:
            failures.append(result)
            print(f"seed {result.seed} FAILED: {result.violations[0]}", file=sys.stderr)
        if done % 5000 == 0:
            elapsed = time.perf_counter() - started
            print(f"{done} seeds, {done / elapsed:.1f} seeds/s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    summary = {
        "seeds": len(seeds),
        "first_seed": args.first,
        "failed": len(failures),
        "failing_seeds": [asdict(failure) for failure in failures],
        "elapsed_s": round(elapsed, 2),
        "seeds_per_s": round(len(seeds) / elapsed, 1),
        "jobs": args.jobs,
        "totals": totals,
    }
    print(
        f"{len(seeds)} seeds, {len(failures)} failed, {elapsed:.1f} s, "
        f"{len(seeds) / elapsed:.1f} seeds/s ({args.jobs} jobs)"
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2)
            out.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
