"""The demo's multi-region part (scripts/demo.py calls these): the emulated geography, a
multi-region key used across regions, a region lost while a client keeps working and
brought back, replication catching up, and the audit trail verifying.

Each step uses what the cluster can do today and says plainly what it cannot do yet: a
step whose feature is still being built is reported as pending, never as a failure, so
the demo runs on any checkout. `pending` collects those notes for the closing summary.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from meridian.cli import cluster, cluster_inspect, cluster_network
from meridian.cli.drill.workload import replica_state, replicate_everywhere, replicate_key
from meridian.client import KmsClient
from meridian.client.errors import KmsError, UnsupportedOperationException

Step = Callable[[str], None]
OUTAGE_S = 5.0
CATCH_UP_S = 30.0
CALL_TIMEOUT_S = 2.0


class Demo:
    def __init__(self, directory: Path, step: Step) -> None:
        self.directory = directory
        self.cluster_file = directory / "cluster.json"
        self.step = step
        self.regions = list(cluster.load(directory).regions)
        self.pending: list[str] = []
        self.mrk: str | None = None

    # ---- the geography ------------------------------------------------------------------

    def geography(self) -> None:
        rows = cluster_network.links_report(self.directory)
        if not rows:
            print("   links are direct (no link proxy)")
            return
        print("   every link runs through a proxy that adds the delay real distance would:")
        for row in rows:
            print(f"   {row.link!s:<32} {row.current.describe()}")

    # ---- a multi-region key ----------------------------------------------------------

    def multi_region_key(self) -> None:
        home, other = self.regions[0], self.regions[1]
        self.step(
            f"Multi-region key: create in {home}, replicate, encrypt there, decrypt in {other}"
        )
        try:
            with KmsClient.from_cluster_file(self.cluster_file, region=home) as kms:
                created = kms.create_key(description="demo: multi-region", multi_region=True)
            key_id = created.key_metadata.key_id
            print(f"   created {key_id} in {home} (the primary)")
            replicate_everywhere(self.directory, key_id, self.regions)
            print(f"   replicated to {', '.join(self.regions[1:])}; every replica is Enabled")
            with KmsClient.from_cluster_file(self.cluster_file, region=home) as kms:
                encrypted = kms.encrypt(key_id=key_id, plaintext=b"multi-region secret")
            print(f"   encrypted in {encrypted.region}: {len(encrypted.ciphertext_blob)} bytes")
            self.mrk = key_id
            self._decrypt_when_replicated(other, encrypted.ciphertext_blob)
        except UnsupportedOperationException as error:
            self._pending(f"multi-region keys (issue 3): the cluster says {error}")
        except (KmsError, grpc.RpcError, TimeoutError) as error:
            self._pending(f"multi-region keys: {type(error).__name__}: {error}")

    def _decrypt_when_replicated(self, region: str, blob: bytes) -> None:
        deadline = time.monotonic() + 30
        with KmsClient.from_cluster_file(self.cluster_file, region=region) as kms:
            while True:
                try:
                    plaintext = kms.decrypt(ciphertext_blob=blob).plaintext
                except KmsError as error:
                    if time.monotonic() > deadline:
                        self._pending(f"decrypting the MRK in {region}: {error}")
                        return
                    time.sleep(0.2)
                    continue
                print(f"   decrypted in {region}: {plaintext.decode()!r}")
                return

    # ---- losing a region ---------------------------------------------------------------

    def lose_a_region(self) -> None:
        lost = self.regions[0]
        self.step(f"Lose {lost} (kill -9) while a client keeps calling, then bring it back")
        counts: collections.Counter[str] = collections.Counter()
        stop = threading.Event()
        lock = threading.Lock()

        def call_loop() -> None:
            with KmsClient.from_cluster_file(
                self.cluster_file, preferred_region=lost, timeout_s=CALL_TIMEOUT_S
            ) as kms:
                while not stop.is_set():
                    try:
                        if self.mrk is not None:
                            region = kms.generate_data_key(
                                key_id=self.mrk, key_spec="AES_256"
                            ).region
                        else:
                            region = kms.generate_random(number_of_bytes=16).region
                        outcome = f"ok in {region}"
                    except KmsError as error:
                        outcome = f"{type(error).__name__}"
                    with lock:
                        counts[outcome] += 1
                    stop.wait(0.05)

        def report(label: str) -> dict[str, int]:
            with lock:
                seen = dict(counts)
                counts.clear()
            shown = ", ".join(f"{count} {outcome}" for outcome, count in sorted(seen.items()))
            print(f"   {label:<34} {shown or 'no calls finished'}")
            return seen

        worker = threading.Thread(target=call_loop, name="demo client")
        worker.start()
        try:
            time.sleep(2)
            report("before:")
            pid = cluster.kill(self.directory, lost)
            print(f"   killed {lost} (pid {pid})")
            time.sleep(OUTAGE_S)
            during = report(f"during {OUTAGE_S:g} s without {lost}:")
            behind = self._replicate_into(lost)
            if not any(outcome.startswith("ok in ") for outcome in during):
                self._pending(
                    "SDK failover (issue 4): calls to the lost region failed until it was back"
                )
            cluster.start(self.directory, lost)
            print(f"   {lost} started again on its data")
            if behind is not None:
                self._catch_up(lost, behind)
            time.sleep(3)
            report("after it came back:")
        finally:
            stop.set()
            worker.join()

    def _replicate_into(self, lost: str) -> str | None:
        """While `lost` is down, replicate a new MRK into it: replication must wait for it."""
        source = next(region for region in self.regions if region != lost)
        try:
            with KmsClient.from_cluster_file(self.cluster_file, region=source) as kms:
                created = kms.create_key(
                    description="demo: made while a region was lost", multi_region=True
                )
            key_id = created.key_metadata.key_id
            replicate_key(self.directory, source, key_id, [lost])
        except UnsupportedOperationException as error:
            self._pending(f"replication catching up (issue 3): {error}")
            return None
        except (KmsError, grpc.RpcError) as error:
            self._pending(f"replication catching up: ReplicateKey into a lost region: {error}")
            return None
        print(f"   meanwhile: created {key_id} in {source}, replicated it to {lost}")
        self._print_lag(source, lost)
        return key_id

    def _catch_up(self, lost: str, key_id: str) -> None:
        started = time.monotonic()
        while time.monotonic() - started < CATCH_UP_S:
            if replica_state(self.directory, lost, key_id) == "Enabled":
                seconds = time.monotonic() - started
                print(
                    f"   replication caught up: {key_id} is Enabled in {lost} {seconds:.1f} s later"
                )
                return
            time.sleep(0.2)
        self._pending(
            f"replication catching up: {key_id} not Enabled in {lost} after {CATCH_UP_S:g} s"
        )

    def _print_lag(self, source: str, peer: str) -> None:
        spec = cluster.load(self.directory)
        try:
            lags = cluster_inspect.replication_from_node(spec, source, 2.0)
        except cluster_inspect.ReplicationUnavailable as error:
            print(f"   replication status of {source}: {error}")
            return
        for lag in lags:
            if lag.peer == peer:
                print(
                    f"   {source} -> {peer}: {lag.backlog_entries} entries waiting,"
                    f" oldest {lag.lag_s:.1f} s, connection {lag.state}"
                )

    # ---- replication and audit -----------------------------------------------------------

    def replication_and_audit(self) -> None:
        self.step("The operator's view: meridian cluster status (health, keys, replication lag)")
        report = cluster_inspect.inspect(self.directory)
        for line in cluster_inspect.render(report):
            print(f"   {line}")
        if all(item.replication is None for item in report.regions):
            self._pending("replication lag per region (the nodes' replication status, issue 3)")
        self.step("The audit trail of every region verifies: meridian audit verify")
        for region in self.regions:
            command = [
                sys.executable,
                "-m",
                "meridian",
                "audit",
                "verify",
                "--cluster-file",
                str(self.cluster_file),
                "--region",
                region,
            ]
            print(f"$ meridian audit verify --region {region}")
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode == 2 and "invalid choice: 'audit'" in completed.stderr:
                self._pending("the audit trail (issue 7)")
                return
            lines = (completed.stdout or completed.stderr).strip().splitlines()
            print(f"   {lines[-1] if lines else '(no output)'}")
            if completed.returncode != 0:
                self._pending(f"audit verify in {region} exited {completed.returncode}")

    def _pending(self, note: str) -> None:
        print(f"   pending: {note}")
        self.pending.append(note)
