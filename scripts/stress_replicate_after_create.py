"""Stress: CreateKey (multi-Region) then at once ReplicateKey, from many threads, on real nodes.

    scripts/stress-replicate-after-create [--pairs 12000] [--writers 16] [--output FILE]

Starts a two-region cluster (``meridian cluster up --network direct``, as the replication
benchmark does) and makes ``--pairs`` keys, each a CreateKey(MultiRegion=true) at the
primary followed by a ReplicateKey of that key into the other region, from ``--writers``
client threads. A user who got CreateKey's answer must never see the ReplicateKey that
follows it fail; every failure is printed with the answer's message (its ARN names the
region that answered) and counted.

It found the stale reads of the store's shared reader connection (server/storage/
reader.py): on the code before that fix, about one pair in 24,000 got NotFoundException
with two copies of this script running at once on a 2-core machine. It is a stress, not a
test: load makes the race likely, nothing makes it certain; the deterministic regression
test is tests/integration/test_reader_snapshot.py. Exits 1 if any pair failed, and writes
the counts as JSON (default bench-results/replicate-after-create.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.client import KmsClient

PRIMARY, REPLICA = "us-east-1", "eu-west-1"
OUTPUT_DEFAULT = Path("bench-results/replicate-after-create.json")
PAIRS_MAX = 1_000_000
WRITERS_MAX = 64
# Failures listed in the output (all are counted).
FAILURES_LISTED_MAX = 50
CALL_TIMEOUT_S = 30.0


def run(pairs: int, writers: int) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    create_failures = 0
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="meridian-stress-replicate-") as directory:
        root = Path(directory)
        cluster.up(root, [PRIMARY, REPLICA], network="direct")
        try:
            with KmsClient.from_cluster_file(
                root / "cluster.json", region=PRIMARY, timeout_s=CALL_TIMEOUT_S
            ) as primary:

                def pair(_: int) -> None:
                    nonlocal create_failures
                    try:
                        key_id = primary.create_key(multi_region=True).key_metadata.key_id
                    except Exception:  # counted: only what follows a success matters here
                        with lock:
                            create_failures += 1
                        return
                    try:
                        primary.replicate_key(key_id=key_id, replica_region=REPLICA)
                    except Exception as error:  # the failure this stress looks for
                        failure = {
                            "key_id": key_id,
                            "error": type(error).__name__,
                            "message": str(error),
                            "at": datetime.now(UTC).isoformat(),
                        }
                        print(f"ReplicateKey after CreateKey failed: {failure}", flush=True)
                        with lock:
                            failures.append(failure)

                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=writers) as pool:
                    list(pool.map(pair, range(pairs)))
                wall_s = time.monotonic() - started
        finally:
            cluster.down(root)
    return {
        "stress": "replicate-after-create",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "pairs": pairs,
        "writers": writers,
        "wall_s": round(wall_s, 1),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "create_failures": create_failures,
        "replicate_failures": len(failures),
        "failures": failures[:FAILURES_LISTED_MAX],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--pairs", type=int, default=12_000)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--output", type=Path, default=OUTPUT_DEFAULT)
    args = parser.parse_args()
    if not 1 <= args.pairs <= PAIRS_MAX or not 1 <= args.writers <= WRITERS_MAX:
        parser.error(f"--pairs must be 1 to {PAIRS_MAX} and --writers 1 to {WRITERS_MAX}")
    document = run(args.pairs, args.writers)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(
        f"{document['pairs']} pairs from {document['writers']} threads in "
        f"{document['wall_s']} s: {document['replicate_failures']} ReplicateKey failures "
        f"after a successful CreateKey ({document['create_failures']} CreateKey failures); "
        f"written to {args.output}"
    )
    return 1 if document["replicate_failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
