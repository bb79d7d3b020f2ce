"""What authorization costs per request: Encrypt with and without the authorization hook.

    scripts/bench-authorization [--requests N] [--rounds R] [--concurrency C] [--output FILE]

Two in-process nodes with the same configuration are started side by side, one with the
node's full hook list and one with the same list minus the AuthorizationHook; Encrypt
calls go to each in alternating rounds (so drift on a shared host hits both alike), over
real mTLS gRPC. The client and both servers share this process, so absolute figures are
lower than a real deployment's; the difference between the two is the hook's cost.
Separately, the hook's ``before`` is timed on its own for the three ways a call is
allowed: delegation to an identity policy (the default key policy), a key policy
statement with a condition, and a grant (the only path that reads the database).

Prints a table and writes the figures as JSON (default bench-results/authorization.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402

from conftest import ACCOUNT, REGION, node_config  # noqa: E402
from meridian.cli import pki  # noqa: E402
from meridian.proto.kms.v1 import kms_pb2 as pb  # noqa: E402
from meridian.proto.kms.v1 import kms_pb2_grpc  # noqa: E402
from meridian.server.api.authorization import AuthorizationHook  # noqa: E402
from meridian.server.api.interceptor import CallHook, CallInfo  # noqa: E402
from meridian.server.domain.clock import SystemClock  # noqa: E402
from meridian.server.domain.model import Caller  # noqa: E402
from meridian.server.logging import configure_logging  # noqa: E402
from meridian.server.node import Node  # noqa: E402


class WithoutAuthorization(Node):
    """The same node and hooks, minus authorization: the baseline."""

    def _call_hooks(self) -> list[CallHook]:
        return [hook for hook in super()._call_hooks() if not isinstance(hook, AuthorizationHook)]


@dataclass
class Pki:
    directory: Path
    ca_cert: bytes

    def credentials(self, principal: str) -> grpc.ChannelCredentials:
        cert, key = pki.client_paths(self.directory, principal)
        if not cert.exists():
            pki.issue_client(self.directory, principal)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_cert,
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )


def make_pki(directory: Path) -> Any:
    pki.init_ca(directory)
    node_cert, node_key = pki.issue_node(directory, REGION, ips=["127.0.0.1"])
    test_pki = Pki(directory, (directory / "ca.pem").read_bytes())
    # conftest.node_config reads these attributes.
    test_pki.node_cert = node_cert  # type: ignore[attr-defined]
    test_pki.node_key = node_key  # type: ignore[attr-defined]
    return test_pki


async def run_round(stub: Any, key_id: str, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    remaining = requests
    request = pb.EncryptRequest(key_id=key_id, plaintext=b"x" * 64, encryption_context={"t": "a"})

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await stub.Encrypt(request)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def time_hook(hook: AuthorizationHook, call: CallInfo, iterations: int) -> dict[str, float]:
    """Wall and CPU time per call (CPU time is what other load on the host disturbs least)."""
    for _ in range(200):  # warm the caches
        call.facts.clear()
        await hook.before(call)
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        call.facts.clear()
        await hook.before(call)
    return {
        "wall_us": round((time.perf_counter() - started) / iterations * 1e6, 1),
        "cpu_us": round((time.process_time() - started_cpu) / iterations * 1e6, 1),
    }


async def main(options: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="meridian-bench-authz-"))
    try:
        test_pki = make_pki(workdir / "pki")
        nodes = {
            "with authorization": Node(
                config=node_config(test_pki, workdir / "with"), clock=SystemClock()
            ),
            "without authorization": WithoutAuthorization(
                config=node_config(test_pki, workdir / "without"), clock=SystemClock()
            ),
        }
        stubs: dict[str, Any] = {}
        keys: dict[str, str] = {}
        channels = []
        for name, node in nodes.items():
            port = await node.start()
            channel = grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                test_pki.credentials("admin"),
                options=[("grpc.ssl_target_name_override", f"{REGION}.node.meridian")],
            )
            channels.append(channel)
            stubs[name] = kms_pb2_grpc.KeyManagementServiceStub(channel)
            keys[name] = (await stubs[name].CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        latencies: dict[str, list[float]] = {name: [] for name in nodes}
        elapsed: dict[str, float] = dict.fromkeys(nodes, 0.0)
        cpu: dict[str, float] = dict.fromkeys(nodes, 0.0)
        for name in nodes:  # warm-up
            await run_round(stubs[name], keys[name], 200, options.concurrency)
        for _ in range(options.rounds):
            for name in nodes:
                started, started_cpu = time.perf_counter(), time.process_time()
                latencies[name] += await run_round(
                    stubs[name], keys[name], options.requests, options.concurrency
                )
                elapsed[name] += time.perf_counter() - started
                cpu[name] += time.process_time() - started_cpu
        end_to_end = {
            name: {
                "requests": len(values),
                "throughput_rps": round(len(values) / elapsed[name], 1),
                "latency_p50_us": round(percentile(values, 0.50) * 1e6, 1),
                "latency_p99_us": round(percentile(values, 0.99) * 1e6, 1),
                "latency_mean_us": round(statistics.fmean(values) * 1e6, 1),
                # Client and server share this process: CPU per call covers both.
                "process_cpu_us_per_call": round(cpu[name] / len(values) * 1e6, 1),
            }
            for name, values in latencies.items()
        }

        # The hook alone, on the node that has it.
        node = nodes["with authorization"]
        assert node.access is not None
        stub = stubs["with authorization"]
        hook = AuthorizationHook(node.access.authorizer)
        bob = f"arn:meridian:iam::{ACCOUNT}:user/bob"
        by_policy = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        policy = {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:meridian:iam::{ACCOUNT}:user/admin"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": bob},
                    "Action": "kms:Encrypt",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:EncryptionContext:t": "a"}},
                },
            ]
        }
        await stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=by_policy, policy=json.dumps(policy)))
        by_grant = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        await stub.CreateGrant(
            pb.CreateGrantRequest(key_id=by_grant, grantee_principal=bob, operations=["Encrypt"])
        )
        admin = f"arn:meridian:iam::{ACCOUNT}:user/admin"
        cases = {
            "admin via delegated identity policy": (admin, keys["with authorization"]),
            "principal via key policy statement with condition": (bob, by_policy),
            "principal via grant (reads the grants table)": (bob, by_grant),
        }
        hook_alone: dict[str, dict[str, float]] = {}
        for label, (principal, key_id) in cases.items():
            call = CallInfo(
                operation="Encrypt",
                request=pb.EncryptRequest(
                    key_id=key_id, plaintext=b"x" * 64, encryption_context={"t": "a"}
                ),
                caller=Caller(principal_arn=principal, source_address="127.0.0.1"),
                request_id="bench",
                source_address="127.0.0.1",
                started=0.0,
                method="/meridian.kms.v1.KeyManagementService/Encrypt",
            )
            hook_alone[label] = await time_hook(hook, call, options.hook_iterations)
        for channel in channels:
            await channel.close()
        for node in nodes.values():
            await node.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with_, without = end_to_end["with authorization"], end_to_end["without authorization"]
    return {
        "operation": "Encrypt (64 bytes, with an encryption context)",
        "concurrency": options.concurrency,
        "rounds": options.rounds,
        "end_to_end": end_to_end,
        "authorization_cost": {
            "throughput_change_pct": round(
                (with_["throughput_rps"] / without["throughput_rps"] - 1) * 100, 1
            ),
            "p50_latency_added_us": round(with_["latency_p50_us"] - without["latency_p50_us"], 1),
            "mean_latency_added_us": round(
                with_["latency_mean_us"] - without["latency_mean_us"], 1
            ),
            "cpu_added_us_per_call": round(
                with_["process_cpu_us_per_call"] - without["process_cpu_us_per_call"], 1
            ),
        },
        "hook_before_us_per_call": hook_alone,
    }


def report(figures: dict[str, Any]) -> None:
    print(f"{figures['operation']}, concurrency {figures['concurrency']}, in-process")
    print(f"{'':26}{'req/s':>10}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'CPU us':>10}")
    for name, row in figures["end_to_end"].items():
        print(
            f"{name:26}{row['throughput_rps']:>10}{row['latency_p50_us']:>10}"
            f"{row['latency_p99_us']:>10}{row['latency_mean_us']:>10}"
            f"{row['process_cpu_us_per_call']:>10}"
        )
    cost = figures["authorization_cost"]
    print(
        f"authorization: throughput {cost['throughput_change_pct']:+}%, "
        f"p50 {cost['p50_latency_added_us']:+} us, mean {cost['mean_latency_added_us']:+} us, "
        f"CPU {cost['cpu_added_us_per_call']:+} us per call"
    )
    print("the hook alone (AuthorizationHook.before), per call:")
    for label, micros in figures["hook_before_us_per_call"].items():
        print(f"  {micros['cpu_us']:>8} us CPU {micros['wall_us']:>8} us wall  {label}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Encrypt calls per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per node")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--hook-iterations", type=int, default=5000, help="timed hook calls")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench-results" / "authorization.json"
    )
    arguments = parser.parse_args()
    # A log line per request would cost more than the operation being measured.
    configure_logging("warning", region=REGION)
    results = asyncio.run(main(arguments))
    report(results)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.output}")
