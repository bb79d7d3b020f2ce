"""Routing and failover against real node processes in three regions (issue 4).

- The nearest region wins: the client's links to each region get different delays
  (the cluster's link proxies), and calls that may go anywhere go to the fastest one,
  not to the home region.
- Kill -9 the serving region during a loop of calls: no call fails that another region
  could serve, calls on keys of the dead region fail fast, and the time the client
  needs to recover is measured (printed, and written beside the cluster).
- A creating call whose answer is lost is retried with its idempotency token and
  creates once.
- The dead region comes back (``cluster start``) and takes calls again.

Multi-region keys arrive with the multi-region issue: the MRK variant of the drill
skips until CreateKey accepts ``multi_region`` and the SDK has ``replicate_key``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from meridian.cli import cluster, cluster_network
from meridian.cli.netem.shape import ShapeChange
from meridian.client import (
    KmsClient,
    NotFoundException,
    ServiceUnavailableError,
    UnsupportedOperationException,
)
from meridian.client.breaker import BreakerState
from meridian.client.options import BreakerPolicy, RetryPolicy, RoutingOptions
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc

pytestmark = pytest.mark.e2e

REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
HOME = REGIONS[0]


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("failover") / "cluster"
    # Flat links: no delay unless a test sets one; the faults are the tests' own.
    cluster.up(directory, REGIONS, network="flat")
    try:
        yield directory.resolve()
    finally:
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(directory, stop_timeout_s=5)


@pytest.fixture
def all_regions_up(cluster_dir: Path) -> Iterator[Path]:
    """Every region running and every link flat, before and after the test."""
    _restore(cluster_dir)
    try:
        yield cluster_dir
    finally:
        _restore(cluster_dir)


def _restore(cluster_dir: Path) -> None:
    for region, entry in cluster.load(cluster_dir).regions.items():
        if entry.pid is None:
            cluster.start(cluster_dir, region)
    cluster_network.change_links(cluster_dir, "client", "all", ShapeChange(), restore=True)


def _client(cluster_dir: Path, *, preferred_region: str | None = None, **routing: Any) -> KmsClient:
    options = {"health_check_interval_s": 0.2, "health_check_timeout_s": 0.5, **routing}
    return KmsClient.from_cluster_file(
        cluster_dir / "cluster.json",
        preferred_region=preferred_region,
        routing=RoutingOptions(**options),
    )


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


# ---- the nearest region ----------------------------------------------------------------


def test_the_nearest_region_wins_over_the_home_region(all_regions_up: Path) -> None:
    delays = {"us-east-1": 60.0, "eu-west-1": 2.0, "ap-south-1": 25.0}
    for region, latency_ms in delays.items():
        cluster_network.change_links(
            all_regions_up, "client", region, ShapeChange(latency_ms=latency_ms)
        )
    with _client(all_regions_up, health_check_interval_s=None) as kms:
        assert kms.home_region == "us-east-1"
        for _ in range(3):
            stats = kms.check_health()
        rtt = {name: region.rtt_ms for name, region in stats.regions.items()}
        assert rtt["eu-west-1"] < rtt["ap-south-1"] < rtt["us-east-1"], rtt
        assert rtt["us-east-1"] >= 2 * 60, rtt  # a round trip pays the delay twice
        assert stats.nearest == "eu-west-1"
        assert kms.generate_random(number_of_bytes=8).region == "eu-west-1"
        # A key's own region still decides for a single-region key.
        key = kms.create_key(description="stays home").key_metadata
        assert key.arn.split(":")[3] == "us-east-1"
        assert kms.encrypt(key_id=key.arn, plaintext=b"x").region == "us-east-1"


# ---- the kill -9 drill -------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    region: str | None
    error: str | None


@dataclass
class Workload:
    """Loops of calls, one thread per kind of call (so a call that waits on a dead
    region does not hold up the others), recording every outcome."""

    run: Callable[[str], Callable[[], str]]
    kinds: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for kind in self.kinds:
            thread = threading.Thread(target=self._loop, args=(kind,), name=f"drill-{kind}")
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _loop(self, kind: str) -> None:
        call = self.run(kind)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                region: str | None = call()
                error = None
            except ServiceUnavailableError as caught:
                region, error = caught.region, type(caught).__name__
            self.outcomes.append(Outcome(kind, started, time.monotonic(), region, error))


def test_kill_9_of_the_serving_region(all_regions_up: Path, tmp_path: Path) -> None:
    with _client(all_regions_up) as kms:
        keys = {
            region: _create_in(all_regions_up, region, f"drill key in {region}")
            for region in REGIONS
        }
        kms.generate_random(number_of_bytes=8)  # the first call starts the health checks
        _wait_for(
            lambda: all(r.rtt_samples >= 2 for r in kms.stats().regions.values()),
            "health checks of every region",
        )

        def run(kind: str) -> Callable[[], str]:
            if kind == "random":
                return lambda: kms.generate_random(number_of_bytes=16).region
            region = kind.removeprefix("key-in-")

            def round_trip() -> str:
                sealed = kms.encrypt(key_id=keys[region], plaintext=b"drill")
                return kms.decrypt(
                    ciphertext_blob=sealed.ciphertext_blob, key_id=keys[region]
                ).region

            return round_trip

        workload = Workload(run, ["random", *(f"key-in-{region}" for region in REGIONS)])
        workload.start()
        try:
            _wait_for(lambda: len(workload.outcomes) >= 40, "a baseline of calls")
            victim = kms.stats().nearest
            assert victim is not None
            killed_at = time.monotonic()
            cluster.kill(all_regions_up, victim)
            dead_at = time.monotonic()  # the process is gone
            _wait_for(
                lambda: (
                    sum(o.started > killed_at for o in workload.outcomes) >= 80
                    and sum(
                        o.started > dead_at and o.kind == f"key-in-{victim}"
                        for o in workload.outcomes
                    )
                    >= 2
                ),
                "calls after the kill",
            )
        finally:
            workload.finish()
        stats = kms.stats()

    before = [o for o in workload.outcomes if o.ended <= killed_at]
    after = [o for o in workload.outcomes if o.ended > killed_at]
    assert before and all(o.error is None for o in before), before
    survivors = [region for region in REGIONS if region != victim]
    could_be_served = [
        o for o in after if o.kind in ("random", *(f"key-in-{r}" for r in survivors))
    ]
    failed = [o for o in could_be_served if o.error is not None]
    assert failed == [], failed
    # Random bytes moved to a live region; the dead region's own key could not.
    assert {o.region for o in after if o.kind == "random" and o.started > dead_at} <= set(survivors)
    dead_key_calls = [o for o in after if o.kind == f"key-in-{victim}" and o.started > dead_at]
    assert dead_key_calls and all(o.error == "ServiceUnavailableError" for o in dead_key_calls)
    # The client knows the region is gone (its breaker or its health checks say so).
    assert (
        stats.regions[victim].breaker is not BreakerState.CLOSED
        or stats.regions[victim].healthy is False
    )

    # What callers saw: every servable call that was in flight at the kill or began after.
    across = [o for o in could_be_served if o.ended > killed_at]
    first_elsewhere = min(o.ended for o in across if o.region != victim)
    report = {
        "victim": victim,
        "calls_after_kill": len(after),
        "calls_that_could_be_served_elsewhere": len(could_be_served),
        "of_those_failed": len(failed),
        "time_to_first_success_elsewhere_s": round(first_elsewhere - killed_at, 4),
        "slowest_servable_call_across_the_kill_s": round(
            max(o.ended - o.started for o in across), 4
        ),
        "slowest_call_before_the_kill_s": round(max(o.ended - o.started for o in before), 4),
        "dead_region_calls_failed_within_s": round(
            max(o.ended - o.started for o in dead_key_calls), 4
        ),
        "failovers": stats.failovers,
        "retries": stats.retries,
    }
    (tmp_path / "failover-drill.json").write_text(json.dumps(report, indent=2))
    print("failover drill:", json.dumps(report))


def test_a_killed_region_takes_calls_again_after_it_restarts(all_regions_up: Path) -> None:
    with _client(all_regions_up, preferred_region="eu-west-1") as kms:
        assert kms.generate_random(number_of_bytes=8).region == "eu-west-1"
        cluster.kill(all_regions_up, "eu-west-1")
        assert kms.generate_random(number_of_bytes=8).region != "eu-west-1"
        _wait_for(
            lambda: (
                kms.stats().regions["eu-west-1"].breaker is BreakerState.OPEN
                or kms.stats().regions["eu-west-1"].healthy is False
            ),
            "the client to notice",
        )
        cluster.start(all_regions_up, "eu-west-1")
        _wait_for(
            lambda: (
                kms.stats().regions["eu-west-1"].breaker is BreakerState.CLOSED
                and kms.stats().regions["eu-west-1"].healthy is True
            ),
            "the health checks to close the breaker",
        )
        assert kms.generate_random(number_of_bytes=8).region == "eu-west-1"


# ---- creating calls ------------------------------------------------------------------------


def test_a_create_whose_answer_is_lost_is_retried_and_creates_once(all_regions_up: Path) -> None:
    region = "eu-west-1"
    routing = RoutingOptions(
        health_check_interval_s=None,
        retry=RetryPolicy(attempts_max=20, attempt_timeout_s=0.5, backoff_max_s=0.2),
        breaker=BreakerPolicy(failures_to_open=1000),
    )
    with (
        KmsClient.from_cluster_file(
            all_regions_up / "cluster.json", preferred_region=region, routing=routing
        ) as kms,
        KmsClient.from_cluster_file(all_regions_up / "cluster.json", region=region) as observer,
    ):
        before = {entry.key_id for entry in observer.iter_keys()}
        kms.generate_random(number_of_bytes=8)  # the connection is up before the link slows down
        # Each way takes 0.4 s: a request arrives and acts, its answer comes too late.
        cluster_network.change_links(all_regions_up, "client", region, ShapeChange(latency_ms=400))
        answer: dict[str, Any] = {}

        def create() -> None:
            try:
                answer["key"] = kms.create_key(description="exactly once", timeout_s=60)
            except Exception as error:  # reported by the assertion below
                answer["error"] = error

        thread = threading.Thread(target=create)
        thread.start()
        try:
            observer_fast = KmsClient.from_cluster_file(
                all_regions_up / "cluster.json",
                region=region,
                routing=RoutingOptions(health_check_interval_s=None),
            )
            with observer_fast:
                # The observer goes through the same slow link; patience, not timing.
                _wait_for(
                    lambda: (
                        len({e.key_id for e in observer_fast.iter_keys(timeout_s=10)} - before) >= 1
                    ),
                    "the first attempt to create the key",
                )
            _wait_for(lambda: kms.stats().retries >= 1, "the client to retry")
        finally:
            cluster_network.change_links(
                all_regions_up, "client", region, ShapeChange(), restore=True
            )
            thread.join(timeout=90)
        assert "error" not in answer, answer
        created = {entry.key_id for entry in observer.iter_keys()} - before
        assert created == {answer["key"].key_metadata.key_id}
        assert kms.stats().regions[region].unavailable >= 1


# ---- multi-region keys (with the multi-region issue) ---------------------------------------


def test_mrk_encrypt_and_decrypt_survive_the_loss_of_the_serving_region(
    all_regions_up: Path, tmp_path: Path
) -> None:
    with _client(all_regions_up) as kms:
        try:
            primary = kms.create_key(description="drill mrk", multi_region=True).key_metadata
        except UnsupportedOperationException:
            pytest.skip("this build has no multi-region keys yet")
        for region in REGIONS[1:]:
            _replicate(all_regions_up, kms, primary.arn, region)
        for region in REGIONS:
            with KmsClient.from_cluster_file(
                all_regions_up / "cluster.json", region=region
            ) as pinned:
                _wait_for(
                    lambda pinned=pinned: _key_state(pinned, primary.key_id) == "Enabled",
                    f"the replica in {region}",
                )
        kms.generate_random(number_of_bytes=8)
        _wait_for(
            lambda: all(r.rtt_samples >= 2 for r in kms.stats().regions.values()),
            "health checks of every region",
        )
        mrk = primary.key_id

        def run(kind: str) -> Callable[[], str]:
            def round_trip() -> str:
                sealed = kms.encrypt(key_id=mrk, plaintext=b"mrk drill")
                return kms.decrypt(ciphertext_blob=sealed.ciphertext_blob).region

            return round_trip

        workload = Workload(run, ["mrk"])
        workload.start()
        try:
            _wait_for(lambda: len(workload.outcomes) >= 20, "a baseline")
            victim = kms.stats().nearest
            killed_at = time.monotonic()
            assert victim is not None
            cluster.kill(all_regions_up, victim)
            _wait_for(
                lambda: sum(o.started > killed_at for o in workload.outcomes) >= 40,
                "calls after the kill",
            )
        finally:
            workload.finish()
    errors = [o for o in workload.outcomes if o.error is not None]
    assert errors == [], errors
    after = [o for o in workload.outcomes if o.started > killed_at]
    assert {o.region for o in after} <= set(REGIONS) - {victim}
    across = [o for o in workload.outcomes if o.ended > killed_at]
    report = {
        "victim": victim,
        "calls_after_kill": len(after),
        "errors": len(errors),
        "time_to_first_success_elsewhere_s": round(
            min(o.ended for o in across if o.region != victim) - killed_at, 4
        ),
        "slowest_call_across_the_kill_s": round(max(o.ended - o.started for o in across), 4),
        "slowest_call_before_the_kill_s": round(
            max(o.ended - o.started for o in workload.outcomes if o.ended <= killed_at), 4
        ),
    }
    (tmp_path / "mrk-failover-drill.json").write_text(json.dumps(report, indent=2))
    print("mrk failover drill:", json.dumps(report))


def _create_in(cluster_dir: Path, region: str, description: str) -> str:
    with KmsClient.from_cluster_file(cluster_dir / "cluster.json", region=region) as pinned:
        return pinned.create_key(description=description).key_metadata.arn


def _replicate(cluster_dir: Path, kms: KmsClient, key_arn: str, region: str) -> None:
    """ReplicateKey, through the SDK once it has the method, else through the stub."""
    replicate = getattr(kms, "replicate_key", None)
    if replicate is not None:
        replicate(key_id=key_arn, replica_region=region)
        return
    spec = json.loads((cluster_dir / "cluster.json").read_text())
    home = spec["regions"][key_arn.split(":")[3]]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(spec["ca_cert"]).read_bytes(),
        private_key=Path(spec["client_key"]).read_bytes(),
        certificate_chain=Path(spec["client_cert"]).read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", home["server_name"])]
    with grpc.secure_channel(home["endpoint"], credentials, options=options) as channel:
        kms_pb2_grpc.KeyManagementServiceStub(channel).ReplicateKey(
            kms_pb2.ReplicateKeyRequest(key_id=key_arn, replica_region=region), timeout=30
        )


def _key_state(pinned: KmsClient, key_id: str) -> str | None:
    """The key's state in the client's region; None while the replica has not arrived
    (replication is asynchronous)."""
    try:
        return pinned.describe_key(key_id=key_id).key_metadata.key_state
    except NotFoundException:
        return None
