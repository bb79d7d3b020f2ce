"""Measure how fast a replica region catches up on the replication log (real processes).

    scripts/measure-catch-up [--keys 1000] [--out catch-up.json]

1. Start a two-region cluster (one node process per region, mTLS gRPC between them).
2. SIGKILL the replica region, then make KEYS multi-Region keys in the primary region and
   replicate each into the killed region: two log entries per key, all waiting.
3. Restart the replica region and poll both regions' replication status every 20 ms.

It prints the catch-up rate in entries per second, measured from the first applied batch
to the last (the apply throughput), and the time from the restart (which adds the
primary's wait for its next retry, up to the backoff's maximum).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from meridian.cli import cluster
from meridian.cli.bench.replication import (
    PRIMARY,
    REPLICA,
    applied_seq,
    backlog_entries,
    wait_until,
)
from meridian.client import KmsClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("catch-up.json"))
    parser.add_argument(
        "--network",
        choices=("emulated", "direct"),
        default="emulated",
        help="emulated: the cluster's proxies with real distances (39 ms one way between "
        "these two regions); direct: loopback",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meridian-catch-up-") as directory:
        root = Path(directory)
        if args.network == "direct":
            cluster.up(root, [PRIMARY, REPLICA], network="direct")
        else:
            cluster.up(root, [PRIMARY, REPLICA])
        try:
            result = _measure(root, args.keys)
            result["network"] = args.network
        finally:
            cluster.down(root)
    print(
        f"catch-up ({args.network} network): {result['entries']} entries applied in "
        f"{result['apply_s']} s = {result['entries_per_s']} entries/s ({result['keys']} keys; "
        f"{result['since_restart_s']} s from the restart)"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _measure(root: Path, keys: int) -> dict[str, object]:
    cluster_file = root / "cluster.json"
    with KmsClient.from_cluster_file(cluster_file, region=PRIMARY, timeout_s=30.0) as kms:
        # Both nodes know each other before the replica is lost (identities pinned).
        key_id = kms.create_key(multi_region=True).key_metadata.key_id
        kms.replicate_key(key_id=key_id, replica_region=REPLICA)
        wait_until(lambda: backlog_entries(kms) == 0, 30.0)
        cluster.kill(root, REPLICA)

        def make(_: int) -> None:
            made = kms.create_key(multi_region=True).key_metadata.key_id
            kms.replicate_key(key_id=made, replica_region=REPLICA)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(make, range(keys)))
        write_s = time.monotonic() - started
        status = kms.get_replication_status(region=PRIMARY)
        head = status.head_seq
        acked = {peer.region: peer for peer in status.peers}[REPLICA].acked_seq

    cluster.start(root, REPLICA)
    restarted = time.monotonic()
    with KmsClient.from_cluster_file(cluster_file, timeout_s=30.0) as kms:
        first = None
        while True:
            applied = applied_seq(kms)
            now = time.monotonic()
            if first is None and applied > acked:
                first = (now, applied)
            if applied >= head:
                done = now
                break
            if now - restarted > 600:
                raise SystemExit("the replica did not catch up within 10 minutes")
            time.sleep(0.02)
    assert first is not None
    # The first poll that saw progress already includes the first batch: count from there.
    entries = head - first[1]
    apply_s = max(done - first[0], 1e-3)
    return {
        "keys": keys,
        "entries": entries,
        "apply_s": round(apply_s, 3),
        "entries_per_s": round(entries / apply_s, 1),
        "since_restart_s": round(done - restarted, 3),
        "write_s": round(write_s, 3),
        "backlog_entries": head - acked,
    }


if __name__ == "__main__":
    raise SystemExit(main())
