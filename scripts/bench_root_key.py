"""Root key cost per operation: the key file against PKCS#11 (SoftHSM2), in one run.

    scripts/bench-root-key [--operations N] [--output FILE]

Measures, on this machine, in this process:

1. wrap and unwrap of one 32-byte key material through each provider, as the node calls
   them (async, and for PKCS#11 through the provider's worker thread);
2. the token call alone (python-pkcs11 straight into SoftHSM2, no thread hop), to show
   where the PKCS#11 time goes;
3. the hot path: Encrypt and Decrypt through a real node's key service (in process, no
   network) with each provider, and how many root key calls those requests made (the
   material cache makes it zero);
4. the cold path: a Decrypt that misses the cache (as the first use of a key version
   after a restart does), which unwraps once.

Prints a table and writes the figures as JSON (default bench-results/root-key.json).
SoftHSM2 is a software token: a network HSM adds its round trip to every PKCS#11 figure
(typically 0.2-2 ms), which is exactly why the hot path must not call it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from meridian.cli import pki
from meridian.server.config import NodeConfig, RootKeyConfig, TlsConfig
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider, RootKeyProvider
from meridian.server.domain.crypto.rootkey_ring import RootKeyRing
from meridian.server.domain.model import Caller
from meridian.server.domain.service import CreateKeyRequest, KeyService
from meridian.server.logging import configure_logging
from meridian.server.node import Node

CALLER = Caller(principal_arn="arn:meridian:iam::000000000000:user/bench")
AAD = b"meridian/key-material/v1\x00bench\x00" + bytes(32)
MATERIAL = os.urandom(32)
REPEATS = 5  # each figure is the median of this many timed runs
CACHE_MISSES = 50


class Counting:
    def __init__(self, inner: RootKeyProvider) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        self.calls += 1
        return await self.inner.wrap(material, aad=aad)

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        self.calls += 1
        return await self.inner.unwrap(wrapped, aad=aad)


async def per_operation_us(operation: Callable[[], Awaitable[object]], count: int) -> float:
    """Median over REPEATS runs of the mean time of one call, in microseconds."""
    await operation()  # warm up
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(count):
            await operation()
        runs.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(runs)


def per_call_us(operation: Callable[[], object], count: int) -> float:
    operation()
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(count):
            operation()
        runs.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(runs)


async def provider_figures(provider: RootKeyProvider, count: int) -> dict[str, float]:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    return {
        "wrap_us": await per_operation_us(lambda: provider.wrap(MATERIAL, aad=AAD), count),
        "unwrap_us": await per_operation_us(lambda: provider.unwrap(wrapped, aad=AAD), count),
    }


async def hot_path(provider: RootKeyProvider, config: NodeConfig, count: int) -> dict[str, float]:
    """Encrypt/Decrypt through a real node's key service; the root key calls they caused."""
    counting = Counting(provider)
    # A ring without closers: the provider outlives the node started on it here.
    async with serving(config, RootKeyRing(counting)) as service:
        key = await service.create_key(CALLER, CreateKeyRequest())
        blob = (await encrypt(service, key.key_id)).ciphertext_blob
        calls_before = counting.calls
        encrypt_us = await per_operation_us(lambda: encrypt(service, key.key_id), count)
        decrypt_us = await per_operation_us(lambda: decrypt(service, blob), count)
        hot_calls = counting.calls - calls_before
        # A cache miss, as the first use of a key version after a restart is: one unwrap.
        misses: list[float] = []
        calls_before = counting.calls
        for _ in range(CACHE_MISSES):
            service.forget_materials(key.key_id)
            started = time.perf_counter()
            await decrypt(service, blob)
            misses.append((time.perf_counter() - started) * 1e6)
        cold_us = statistics.median(misses)
        cold_calls = (counting.calls - calls_before) / CACHE_MISSES
    return {
        "encrypt_us": encrypt_us,
        "decrypt_us": decrypt_us,
        "root_key_calls_during_hot_requests": hot_calls,
        "hot_requests": 2 * (count * REPEATS + 1),
        "decrypt_on_cache_miss_us": cold_us,
        "root_key_calls_on_cache_miss": cold_calls,
    }


@asynccontextmanager
async def serving(config: NodeConfig, root_keys: RootKeyRing) -> AsyncIterator[KeyService]:
    node = Node(config=config, clock=FakeClock(), root_keys=root_keys)
    await node.start()
    try:
        assert node.service is not None
        yield node.service
    finally:
        await node.stop()


def node_config(work: Path, name: str) -> NodeConfig:
    """A node on 127.0.0.1, port 0, with a PKI of its own in ``work``."""
    pki_dir = work / "pki"
    if not (pki_dir / "ca.pem").exists():
        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "us-east-1", ips=["127.0.0.1"])
    cert, key = pki.node_paths(pki_dir, "us-east-1")
    data_dir = work / name
    return NodeConfig(
        region="us-east-1",
        account_id="000000000000",
        listen="127.0.0.1:0",
        data_dir=data_dir,
        tls=TlsConfig(ca_cert=pki_dir / "ca.pem", cert=cert, key=key),
        root_key=RootKeyConfig(provider="file", path=data_dir / "root.key"),
    )


async def encrypt(service: KeyService, key_id: str) -> Any:
    return await service.encrypt(
        CALLER,
        key_id=key_id,
        plaintext=b"x" * 64,
        encryption_context={"bench": "root-key"},
        encryption_algorithm="SYMMETRIC_DEFAULT",
    )


async def decrypt(service: KeyService, blob: bytes) -> Any:
    return await service.decrypt(
        CALLER,
        ciphertext_blob=blob,
        encryption_context={"bench": "root-key"},
        key_id="",
        encryption_algorithm="",
    )


def make_token(directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "meridian", "hsm", "init", "--dir", str(directory),
         "--token-label", "bench"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


async def run(operations: int, work: Path) -> dict[str, Any]:
    from meridian.cli import softhsm
    from meridian.server.config import Pkcs11Config
    from meridian.server.domain.crypto.pkcs11_token import Pkcs11Token, TokenSettings
    from meridian.server.rootkeys import open_pkcs11

    make_token(work / "hsm")
    token = softhsm.existing_token(work / "hsm", "bench")
    assert token is not None
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    config = Pkcs11Config(
        module=token.module,
        token_label=token.token_label,
        key_label=token.key_label,
        pin_file=token.user_pin_file,
    )
    results: dict[str, Any] = {"providers": {}, "token_call": {}, "hot_path": {}}
    file_key = FileRootKeyProvider.open_or_create(work / "root.key")
    results["providers"]["file"] = await provider_figures(file_key, operations * 10)
    results["hot_path"]["file"] = await hot_path(file_key, node_config(work, "file"), operations)
    for mechanism in ("aes-gcm", "aes-key-wrap-pad"):
        provider = await open_pkcs11(Pkcs11Config(**{**_fields(config), "mechanism": mechanism}))
        try:
            name = f"pkcs11 {mechanism}"
            results["providers"][name] = await provider_figures(provider, operations)
            config_for = node_config(work, mechanism)
            results["hot_path"][name] = await hot_path(provider, config_for, operations)
        finally:
            await provider.aclose()
    direct = Pkcs11Token(
        TokenSettings(
            module=token.module,
            token_label=token.token_label,
            key_label=token.key_label,
            pin=softhsm.read_pin(token.user_pin_file),
        )
    )
    direct.connect()
    try:
        nonce = os.urandom(12)
        sealed = direct.encrypt_gcm(nonce, MATERIAL, AAD)
        results["token_call"]["pkcs11 aes-gcm"] = {
            "wrap_us": per_call_us(lambda: direct.encrypt_gcm(nonce, MATERIAL, AAD), operations),
            "unwrap_us": per_call_us(lambda: direct.decrypt_gcm(nonce, sealed, AAD), operations),
        }
    finally:
        direct.close()
    return results


def _fields(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def report(results: dict[str, Any]) -> str:
    lines = [f"root key cost per operation (median of {REPEATS} runs), microseconds", ""]
    lines.append(f"{'provider':<34}{'wrap':>10}{'unwrap':>10}")
    for name, figures in results["providers"].items():
        lines.append(f"{name:<34}{figures['wrap_us']:>10.1f}{figures['unwrap_us']:>10.1f}")
    for name, figures in results["token_call"].items():
        label = f"{name} (token call only)"
        lines.append(f"{label:<34}{figures['wrap_us']:>10.1f}{figures['unwrap_us']:>10.1f}")
    lines += ["", "hot path through the key service (64-byte plaintext), microseconds", ""]
    lines.append(
        f"{'provider':<34}{'Encrypt':>10}{'Decrypt':>10}{'root key calls':>16}"
        f"{'cache miss':>14}{'its calls':>11}"
    )
    for name, figures in results["hot_path"].items():
        calls = f"{figures['root_key_calls_during_hot_requests']}/{figures['hot_requests']}"
        lines.append(
            f"{name:<34}{figures['encrypt_us']:>10.1f}{figures['decrypt_us']:>10.1f}"
            f"{calls:>16}{figures['decrypt_on_cache_miss_us']:>14.1f}"
            f"{figures['root_key_calls_on_cache_miss']:>11.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=500, help="calls per timed run")
    parser.add_argument("--output", type=Path, default=Path("bench-results/root-key.json"))
    args = parser.parse_args()
    configure_logging("warning", region="bench")
    with tempfile.TemporaryDirectory(prefix="meridian-root-key-bench-") as work:
        results = asyncio.run(run(args.operations, Path(work)))
    results["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "operations_per_run": args.operations,
        "runs": REPEATS,
    }
    print(report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
