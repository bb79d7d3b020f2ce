"""The client workload a drill runs while it breaks the cluster, and what it records.

One worker thread per kind of operation; they share one SDK client built from the
cluster file, as an application would:

- `random`: GenerateRandom, which needs no key, so any region may serve it (failover);
- `mrk-encrypt` (Encrypt then Decrypt) and `mrk-data-key` (GenerateDataKey): a
  multi-region key, when the cluster supports them; any region holding a replica may
  serve these (failover);
- `srk:<region>`: Encrypt then Decrypt with a single-region key of that region, which
  only that region can serve (its ARN pins it);
- `write:<region>`: CreateKey in that region, a write whose acknowledgement must survive
  anything (DESIGN.md section 7.2); the ids are kept and checked after the drill;
- `mrk-setting`: EnableKeyRotation / DisableKeyRotation in turn on the MRK, in its primary
  region: a shared property, so every acknowledged change travels the replication log;
  after the drill every replica must show the last acknowledged value (7.3).

Every call is one :class:`Record`: when it started (seconds since the drill began), how
long it took, what it was, which region served it or failed it, and the error's name.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from meridian.cli import cluster, cluster_inspect, cluster_state
from meridian.client import KmsClient
from meridian.client.errors import KmsError, NotFoundException, UnsupportedOperationException
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc

__all__ = ["DrillKeys", "Record", "Workload", "prepare_keys"]

CALL_TIMEOUT_S = 3.0
RECORDS_MAX = 200_000
CIPHERTEXTS_KEPT_MAX = 2_000
WRITES_KEPT_MAX = 10_000
REPLICA_WAIT_S = 30.0
CONTEXT = {"drill": "meridian"}
PLAINTEXT = b"drill payload"

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Record:
    started_s: float
    duration_s: float
    kind: str
    region: str | None  # served the call, or failed it (None: the client could not say)
    error: str | None  # the exception's class name; None for success

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True)
class DrillKeys:
    """The keys a drill's workload uses, made before it starts."""

    home_region: str
    regional: dict[str, str]  # region -> ARN of a single-region key there
    mrk: str | None  # ARN of a multi-region primary key, if the cluster has MRKs
    mrk_regions: tuple[str, ...]  # regions holding the MRK (primary first)
    mrk_note: str  # what the MRK part exercises, or why it is missing
    shared_writes_note: str = "no multi-region key"  # can its shared properties change?
    shared_writes: bool = False

    @property
    def mrk_id(self) -> str:
        assert self.mrk is not None
        return self.mrk.rpartition("/")[2]


def prepare_keys(cluster_file: Path, regions: Sequence[str]) -> DrillKeys:
    """One single-region key per region, and a replicated MRK if the cluster can make one."""
    home = regions[0]
    regional = {}
    for region in regions:
        with KmsClient.from_cluster_file(cluster_file, region=region) as kms:
            regional[region] = kms.create_key(description=f"drill: {region}").key_metadata.arn
    with KmsClient.from_cluster_file(cluster_file, region=home) as kms:
        try:
            created = kms.create_key(description="drill: multi-region", multi_region=True)
        except UnsupportedOperationException as error:
            note = f"not available on this cluster ({error}); MRK operations are not exercised"
            return DrillKeys(home, regional, None, (), note)
    key_id = created.key_metadata.key_id
    try:
        replicate_everywhere(cluster_file.parent, key_id, regions)
    except (KmsError, grpc.RpcError, TimeoutError) as error:
        note = f"{key_id} could not be replicated ({error}); MRK operations are not exercised"
        return DrillKeys(home, regional, None, (), note)
    note = f"{key_id}, primary in {home}, replicas in {', '.join(regions[1:])}"
    shared, shared_note = _shared_writes_work(cluster_file.parent, home, key_id)
    return DrillKeys(
        home, regional, created.key_metadata.arn, tuple(regions), note, shared_note, shared
    )


def _shared_writes_work(directory: Path, primary: str, key_id: str) -> tuple[bool, str]:
    """Whether the MRK's rotation setting (a shared property) can change; why not if not."""
    spec = cluster_state.read(directory)
    with cluster.region_channel(spec, spec.regions[primary]) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        try:
            stub.EnableKeyRotation(
                kms_pb2.EnableKeyRotationRequest(key_id=key_id), timeout=CALL_TIMEOUT_S
            )
            stub.DisableKeyRotation(
                kms_pb2.DisableKeyRotationRequest(key_id=key_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.RpcError as error:
            return False, f"not exercised: the primary refuses them ({error.details()})"
    return True, "the MRK's rotation setting, toggled in its primary and replicated"


def _client_channel(cluster_file: Path, region: str) -> grpc.Channel:
    """A channel to the region's client endpoint (through its link proxy), as the SDK dials."""
    spec = cluster_state.read(cluster_file.parent)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert.read_bytes(),
        private_key=spec.client_key.read_bytes(),
        certificate_chain=spec.client_cert.read_bytes(),
    )
    entry = spec.regions[region]
    options = [("grpc.ssl_target_name_override", entry.server_name)]
    return grpc.secure_channel(entry.endpoint, credentials, options=options)


def replicate_key(
    directory: Path, primary: str, key_id: str, replica_regions: Sequence[str]
) -> None:
    """ReplicateKey in the primary's region, straight to its node (admin certificate).

    The SDK has no replicate_key yet (issue 3/4). The call returns once the primary has
    recorded the replica; the replica's region learns of it through the replication log.
    """
    spec = cluster_state.read(directory)
    with cluster.region_channel(spec, spec.regions[primary]) as channel:
        stub = kms_pb2_grpc.KeyManagementServiceStub(channel)
        for region in replica_regions:
            stub.ReplicateKey(
                kms_pb2.ReplicateKeyRequest(key_id=key_id, replica_region=region),
                timeout=CALL_TIMEOUT_S,
            )


def replica_state(directory: Path, region: str, key_id: str) -> str | None:
    """The key's state in `region` (asked directly), None while the region has no such key."""
    with KmsClient.from_cluster_file(directory / "cluster.json", region=region) as kms:
        return _replica_state(kms, key_id)


def replicate_everywhere(
    directory: Path, key_id: str, regions: Sequence[str], *, timeout_s: float = REPLICA_WAIT_S
) -> None:
    """ReplicateKey from the first region to the others; wait until every replica is Enabled."""
    replicate_key(directory, regions[0], key_id, regions[1:])
    # The replica reaches its region through the replication log (NotFound until then),
    # and is Creating until its key material has arrived.
    deadline = time.monotonic() + timeout_s
    for region in regions[1:]:
        with KmsClient.from_cluster_file(directory / "cluster.json", region=region) as kms:
            while _replica_state(kms, key_id) != "Enabled":
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the replica in {region} is not Enabled after {timeout_s:g} s"
                    )
                time.sleep(0.1)


def _replica_state(kms: KmsClient, key_id: str) -> str | None:
    try:
        return kms.describe_key(key_id=key_id).key_metadata.key_state
    except NotFoundException:
        return None


class Workload:
    """One worker thread per operation kind, calling until stopped.

    A thread per kind keeps each kind's rate independent of the others: a far region's
    slow calls, or a dead region's failures, do not slow down the calls that fail over.
    """

    def __init__(
        self,
        cluster_file: Path,
        keys: DrillKeys,
        *,
        clock: Clock = time.monotonic,
        pause_s: float = 0.05,
        write_regions: Sequence[str] = (),
        shared_writes: bool = False,
    ) -> None:
        self._cluster_file = cluster_file
        self._keys = keys
        self._clock = clock
        self._pause_s = pause_s
        self._write_regions = tuple(write_regions)
        self._kinds = self._mix(write_regions)
        if shared_writes and keys.shared_writes and len(keys.mrk_regions) > 1:
            self._kinds.append("mrk-setting")
        self._setting_channel: grpc.Channel | None = None
        self.rotation_acknowledged: bool | None = None  # the last acknowledged setting
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client: KmsClient | None = None
        self._pinned: dict[str, KmsClient] = {}
        self.started_at = 0.0
        self.stopped_s = 0.0
        self.records: list[Record] = []
        self.ciphertexts: list[tuple[str, str, bytes]] = []  # (kind, key ARN, blob)
        self.writes: list[tuple[str, str]] = []  # (region, key ARN) acknowledged

    def _mix(self, write_regions: Sequence[str]) -> list[str]:
        kinds = ["random"]
        if self._keys.mrk is not None:
            kinds += ["mrk-encrypt", "mrk-data-key"]
        kinds += [f"srk:{region}" for region in self._keys.regional]
        kinds += [f"write:{region}" for region in write_regions]
        return kinds

    def now_s(self) -> float:
        return self._clock() - self.started_at

    def start(self) -> None:
        self.started_at = self._clock()
        self._client = KmsClient.from_cluster_file(
            self._cluster_file, preferred_region=self._keys.home_region, timeout_s=CALL_TIMEOUT_S
        )
        # Writes go to pinned clients: a write must land in its region or fail, never move.
        self._pinned = {
            region: KmsClient.from_cluster_file(
                self._cluster_file, region=region, timeout_s=CALL_TIMEOUT_S
            )
            for region in self._write_regions
        }
        if "mrk-setting" in self._kinds:
            self._setting_channel = _client_channel(self._cluster_file, self._keys.home_region)
        for kind in self._kinds:
            thread = threading.Thread(target=self._run, args=(kind,), name=f"drill {kind}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopped_s = self.now_s()
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for client in [self._client, *self._pinned.values()]:
            if client is not None:
                client.close()
        if self._setting_channel is not None:
            self._setting_channel.close()

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def _run(self, kind: str) -> None:
        assert self._client is not None
        while not self._stop.is_set():
            self._call(self._client, kind)
            self._stop.wait(self._pause_s)

    def _call(self, kms: KmsClient, kind: str) -> None:
        started = self.now_s()
        region: str | None = None
        error: str | None = None
        try:
            region = self._operation(kms, kind)
        except KmsError as failure:
            error = type(failure).__name__
            region = failure.region
        except grpc.RpcError as failure:
            error = f"grpc {failure.code().name}"
            region = self._keys.home_region
        except Exception as failure:  # a drill records every outcome, whatever it is
            error = type(failure).__name__
        record = Record(started, self.now_s() - started, kind, region, error)
        with self._lock:
            if len(self.records) < RECORDS_MAX:
                self.records.append(record)

    def _operation(self, kms: KmsClient, kind: str) -> str:
        keys = self._keys
        if kind == "mrk-encrypt":
            assert keys.mrk is not None
            encrypted = kms.encrypt(
                key_id=keys.mrk, plaintext=PLAINTEXT, encryption_context=CONTEXT
            )
            self._keep_ciphertext("mrk", keys.mrk, encrypted.ciphertext_blob)
            decrypted = kms.decrypt(
                ciphertext_blob=encrypted.ciphertext_blob, encryption_context=CONTEXT
            )
            return decrypted.region
        if kind == "mrk-setting":
            return self._toggle_rotation()
        if kind == "random":
            return kms.generate_random(number_of_bytes=16).region
        if kind == "mrk-data-key":
            assert keys.mrk is not None
            return kms.generate_data_key(key_id=keys.mrk_id, key_spec="AES_256").region
        family, _, region = kind.partition(":")
        if family == "srk":
            key = keys.regional[region]
            encrypted = kms.encrypt(key_id=key, plaintext=PLAINTEXT, encryption_context=CONTEXT)
            self._keep_ciphertext(kind, key, encrypted.ciphertext_blob)
            return kms.decrypt(
                ciphertext_blob=encrypted.ciphertext_blob, encryption_context=CONTEXT, key_id=key
            ).region
        if family == "write":
            created = self._pinned[region].create_key(description="drill write")
            with self._lock:
                if len(self.writes) < WRITES_KEPT_MAX:
                    self.writes.append((region, created.key_metadata.arn))
            return created.region
        raise ValueError(f"unknown operation kind {kind!r}")

    def _toggle_rotation(self) -> str:
        """Flip the MRK's rotation setting in its primary (the SDK has no method for it yet)."""
        assert self._setting_channel is not None
        stub = kms_pb2_grpc.KeyManagementServiceStub(self._setting_channel)
        enable = not self.rotation_acknowledged
        key_id = self._keys.mrk_id
        if enable:
            response: Any = stub.EnableKeyRotation(
                kms_pb2.EnableKeyRotationRequest(key_id=key_id), timeout=CALL_TIMEOUT_S
            )
        else:
            response = stub.DisableKeyRotation(
                kms_pb2.DisableKeyRotationRequest(key_id=key_id), timeout=CALL_TIMEOUT_S
            )
        # Only this thread writes it; the checks read it after the workload stopped.
        self.rotation_acknowledged = enable
        return str(response.region)

    def _keep_ciphertext(self, kind: str, key: str, blob: bytes) -> None:
        with self._lock:
            if len(self.ciphertexts) < CIPHERTEXTS_KEPT_MAX:
                self.ciphertexts.append((kind, key, blob))


def kinds_summary(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per operation kind: attempted, succeeded, failed, and the errors by name."""
    summary: dict[str, dict[str, Any]] = {}
    for record in records:
        entry = summary.setdefault(
            record.kind, {"attempted": 0, "succeeded": 0, "failed": 0, "errors": {}}
        )
        entry["attempted"] += 1
        if record.ok:
            entry["succeeded"] += 1
        else:
            entry["failed"] += 1
            entry["errors"][record.error] = entry["errors"].get(record.error, 0) + 1
    return summary


@dataclasses.dataclass(frozen=True)
class LagSample:
    at_s: float
    region: str
    lag_s: float  # the worst peer's lag as this region reports it
    backlog_entries: int


class LagSampler:
    """Samples every region's replication lag once a second while the workload runs.

    Uses the same probe as `cluster status` (the nodes' ReplicationAdmin service); a region
    that does not report it (or is down) simply has no sample at that moment.
    """

    def __init__(
        self,
        directory: Path,
        regions: Sequence[str],
        now_s: Callable[[], float],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._directory = directory
        self._regions = list(regions)
        self._now_s = now_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill lag sampler")
        self.samples: list[LagSample] = []
        self.unavailable: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        spec = cluster_state.read(self._directory)
        while not self._stop.is_set():
            for region in self._regions:
                try:
                    peers = cluster_inspect.replication_from_node(spec, region, 1.0)
                except cluster_inspect.ReplicationUnavailable as error:
                    self.unavailable = str(error)
                    continue
                if peers and len(self.samples) < RECORDS_MAX:
                    self.samples.append(
                        LagSample(
                            self._now_s(),
                            region,
                            max(peer.lag_s or 0.0 for peer in peers),
                            sum(peer.backlog_entries or 0 for peer in peers),
                        )
                    )
            self._stop.wait(self._interval_s)
