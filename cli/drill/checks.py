"""What a drill checks once the fault has healed (DESIGN.md section 7).

- acknowledged writes lost: every key whose CreateKey was acknowledged during the drill
  must exist in its region (7.2);
- ciphertexts: a sample of those returned during the drill must still decrypt, in their
  key's region, and an MRK's in every region holding it (7.1);
- convergence: how long after the heal until replication has caught up: from the nodes'
  replication status when they report it, else until the MRK's ciphertexts decrypt in
  every replica region;
- shared properties: every replica shows the MRK's last acknowledged rotation setting (7.3);
- the audit trail: whether its chain verifies (7.5), when the cluster has one.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from meridian.cli import cluster, cluster_inspect, cluster_state
from meridian.cli.drill.workload import CONTEXT, DrillKeys
from meridian.client import KmsClient
from meridian.client.errors import KmsError, NotFoundException
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc

__all__ = ["Verification", "audit_state", "verify", "wait_converged"]

SAMPLE_MAX = 200
MRK_SAMPLE_MAX = 30
CONVERGENCE_TIMEOUT_S_DEFAULT = 60.0
_POLL_S = 0.25
AUDIT_TIMEOUT_S = 60.0
AUDIT_BROKEN = "BROKEN"
DIVERGED = "DIVERGED"


@dataclasses.dataclass(frozen=True)
class Verification:
    writes_acknowledged: int
    writes_lost: tuple[str, ...]
    writes_unverified: int  # the region did not answer the check
    ciphertexts_checked: int
    ciphertexts_failed: tuple[str, ...]
    convergence_s: float | None
    convergence_note: str
    audit: str
    shared_settings: str = "not checked: no shared-property writes in this drill"


def _sample(items: Sequence[tuple[str, str, bytes]], count: int) -> list[tuple[str, str, bytes]]:
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def _region_of(arn: str) -> str:
    return arn.split(":")[3]


def verify(
    cluster_file: Path,
    keys: DrillKeys,
    writes: Sequence[tuple[str, str]],
    ciphertexts: Sequence[tuple[str, str, bytes]],
    convergence: tuple[float | None, str],
    audit: str,
    shared_settings: str | None = None,
) -> Verification:
    clients: dict[str, KmsClient] = {}

    def pinned(region: str) -> KmsClient:
        if region not in clients:
            clients[region] = KmsClient.from_cluster_file(cluster_file, region=region)
        return clients[region]

    try:
        lost, unverified = [], 0
        for region, arn in writes:
            try:
                pinned(region).describe_key(key_id=arn)
            except NotFoundException:
                lost.append(arn)
            except KmsError:
                unverified += 1
        failed, checked = [], 0
        regional = [item for item in ciphertexts if item[0] != "mrk"]
        mrk = [item for item in ciphertexts if item[0] == "mrk"]
        for kind, arn, blob in _sample(regional, SAMPLE_MAX):
            checked += 1
            if not _decrypts(pinned(_region_of(arn)), blob, arn):
                failed.append(f"{kind} {arn}")
        for _, arn, blob in _sample(mrk, MRK_SAMPLE_MAX):
            for region in keys.mrk_regions:
                checked += 1
                if not _decrypts(pinned(region), blob, None):
                    failed.append(f"mrk {arn} in {region}")
    finally:
        for client in clients.values():
            client.close()
    seconds, note = convergence
    return Verification(
        writes_acknowledged=len(writes),
        writes_lost=tuple(lost),
        writes_unverified=unverified,
        ciphertexts_checked=checked,
        ciphertexts_failed=tuple(failed),
        convergence_s=seconds,
        convergence_note=note,
        audit=audit,
        **({} if shared_settings is None else {"shared_settings": shared_settings}),
    )


def _decrypts(kms: KmsClient, blob: bytes, key_id: str | None) -> bool:
    try:
        kms.decrypt(ciphertext_blob=blob, encryption_context=CONTEXT, key_id=key_id)
    except KmsError:
        return False
    return True


def wait_converged(
    directory: Path,
    keys: DrillKeys,
    mrk_blob: bytes | None,
    *,
    timeout_s: float = CONVERGENCE_TIMEOUT_S_DEFAULT,
    clock: Callable[[], float] = time.monotonic,
    replication_probe: cluster_inspect.ReplicationProbe = cluster_inspect.replication_from_node,
) -> tuple[float | None, str]:
    """Seconds from now until replication has caught up, and how that was judged."""
    started = clock()
    spec = cluster_state.read(directory)
    try:
        for region in spec.regions:
            replication_probe(spec, region, 2.0)
    except cluster_inspect.ReplicationUnavailable as error:
        if keys.mrk is None or mrk_blob is None or len(keys.mrk_regions) < 2:
            return None, f"nothing replicates here (no multi-region key); lag: {error}"
        return _wait_mrk_decrypts(directory, keys, mrk_blob, started, timeout_s, clock)
    while clock() - started < timeout_s:
        behind = [
            peer
            for region in spec.regions
            for peer in replication_probe(spec, region, 2.0)
            if peer.backlog_entries
        ]
        if not behind:
            return clock() - started, "every peer's replication backlog is empty"
        time.sleep(_POLL_S)
    return None, f"replication still behind after {timeout_s:g} s"


def _wait_mrk_decrypts(
    directory: Path,
    keys: DrillKeys,
    blob: bytes,
    started: float,
    timeout_s: float,
    clock: Callable[[], float],
) -> tuple[float | None, str]:
    cluster_file = directory / cluster_state.CLUSTER_FILE_NAME
    pending = list(keys.mrk_regions)
    clients = {
        region: KmsClient.from_cluster_file(cluster_file, region=region, timeout_s=2.0)
        for region in pending
    }
    try:
        while pending and clock() - started < timeout_s:
            pending = [region for region in pending if not _decrypts(clients[region], blob, None)]
            if pending:
                time.sleep(_POLL_S)
    finally:
        for client in clients.values():
            client.close()
    if pending:
        return None, f"the MRK's newest ciphertext still fails in {', '.join(pending)}"
    return clock() - started, "the MRK's newest ciphertext decrypts in every replica region"


def shared_settings_state(
    directory: Path,
    keys: DrillKeys,
    expected: bool | None,
    *,
    timeout_s: float = CONVERGENCE_TIMEOUT_S_DEFAULT,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Whether every region holding the MRK shows its last acknowledged rotation setting.

    DESIGN.md 7.3: after faults heal, every replica converges to the primary's shared
    properties. None when the drill acknowledged no such change.
    """
    if expected is None or keys.mrk is None:
        return None
    spec = cluster_state.read(directory)
    started = clock()
    seen: dict[str, str] = {}
    for region in keys.mrk_regions:
        with cluster.region_channel(spec, spec.regions[region]) as channel:
            stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
            while True:
                try:
                    enabled = stub.GetKeyRotationStatus(
                        kms_pb2.GetKeyRotationStatusRequest(key_id=keys.mrk_id), timeout=2.0
                    ).key_rotation_enabled
                    seen[region] = str(enabled)
                    if enabled == expected:
                        break
                except grpc.RpcError as error:
                    seen[region] = error.code().name
                if clock() - started > timeout_s:
                    break
                time.sleep(_POLL_S)
    wrong = {region: value for region, value in seen.items() if value != str(expected)}
    if wrong:
        shown = ", ".join(f"{region} says {value}" for region, value in wrong.items())
        return f"{DIVERGED}: the primary acknowledged rotation={expected}; {shown}"
    return (
        f"rotation={expected} (the last acknowledged change) in every region "
        f"after {clock() - started:.2f} s"
    )


def audit_state(directory: Path, regions: Sequence[str]) -> str:
    """Whether every region's audit trail verifies (`meridian audit verify`, DESIGN.md 7.5).

    Run as the operator would, in a process of its own. Exit 1 means the chain is broken;
    exit 2 means the trail cannot be read (a node without an audit trail).
    """
    cluster_file = directory / cluster_state.CLUSTER_FILE_NAME
    broken, unreadable = [], []
    for region in regions:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "meridian",
                "audit",
                "verify",
                "--cluster-file",
                str(cluster_file),
                "--region",
                region,
            ],
            capture_output=True,
            text=True,
            timeout=AUDIT_TIMEOUT_S,
            check=False,
        )
        last = (
            completed.stdout.strip().splitlines() or completed.stderr.strip().splitlines() or [""]
        )[-1]
        if completed.returncode == 1:
            broken.append(f"{region}: {last}")
        elif completed.returncode != 0:
            unreadable.append(f"{region}: {last}")
    if broken:
        return f"{AUDIT_BROKEN}: {'; '.join(broken)}"
    if unreadable:
        return f"not checked: {'; '.join(unreadable)}"
    return f"verifies in {', '.join(regions)} (meridian audit verify)"
