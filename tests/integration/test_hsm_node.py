"""A node with its root key in SoftHSM2: the HSM stays off the hot path, and a hung HSM
costs only the calls that need it (DependencyTimeoutException), never data.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from hsm_support import gated_token, wait_until

from conftest import RunningNode, expect_error, node_config, secure_channel
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import RootKeyProvider
from meridian.server.domain.crypto.rootkey_ring import RootKeyRing
from meridian.server.node import Node

pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")

from meridian.server.domain.crypto.pkcs11_token import Pkcs11Token, TokenSettings
from meridian.server.domain.crypto.rootkey_pkcs11 import Pkcs11RootKeyProvider

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CONTEXT = {"tenant": "acme"}


class CountingProvider:
    """Counts the calls that reach the HSM provider."""

    def __init__(self, inner: RootKeyProvider) -> None:
        self.inner = inner
        self.wraps = 0
        self.unwraps = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        self.wraps += 1
        return await self.inner.wrap(material, aad=aad)

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        self.unwraps += 1
        return await self.inner.unwrap(wrapped, aad=aad)


@asynccontextmanager
async def node_with(test_pki, data_dir, provider, close) -> AsyncIterator[RunningNode]:  # type: ignore[no-untyped-def]
    """An in-process node whose root key is ``provider`` (owned by the node)."""
    node = Node(
        config=node_config(test_pki, data_dir),
        clock=FakeClock(),
        root_keys=RootKeyRing(provider, closers=[close]),
    )
    port = await node.start()
    channel = secure_channel(test_pki, f"127.0.0.1:{port}")
    try:
        yield RunningNode(
            node=node,
            clock=node.clock,  # type: ignore[arg-type]
            channel=channel,
            stub=kms_pb2_grpc.KeyManagementServiceStub(channel),
            endpoint=f"127.0.0.1:{port}",
        )
    finally:
        await channel.close()
        await node.stop()


def token_for(softhsm, key_label: str) -> Pkcs11Token:
    config = softhsm.pkcs11_config(key_label)
    return Pkcs11Token(
        TokenSettings(
            module=config.module,
            token_label=config.token_label,
            key_label=config.key_label,
            pin=softhsm.user_pin_file.read_text().strip(),
        )
    )


async def encrypt(stub, key_id: str, plaintext: bytes) -> bytes:
    response = await stub.Encrypt(
        pb.EncryptRequest(key_id=key_id, plaintext=plaintext, encryption_context=CONTEXT)
    )
    return bytes(response.ciphertext_blob)


async def decrypt(stub, blob: bytes) -> bytes:
    response = await stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=blob, encryption_context=CONTEXT)
    )
    return bytes(response.plaintext)


async def test_the_hot_path_never_calls_the_hsm(test_pki, tmp_path, softhsm) -> None:
    data_dir = tmp_path / "data"
    key_label = softhsm.pkcs11_config().key_label

    async def counted() -> tuple[CountingProvider, Callable]:
        provider = await Pkcs11RootKeyProvider.open(token_for(softhsm, key_label))
        return CountingProvider(provider), provider.aclose

    counter, close = await counted()
    async with node_with(test_pki, data_dir, counter, close) as running:
        # What the node wraps once, at start or on its first request (its audit signing
        # key, say), is not per request: the first request warms that up.
        await running.stub.ListKeys(pb.ListKeysRequest())
        at_start = (counter.wraps, counter.unwraps)
        key_id = (await running.stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        assert (counter.wraps, counter.unwraps) == (at_start[0] + 1, at_start[1])
        blobs = [await encrypt(running.stub, key_id, bytes([n]) * 16) for n in range(50)]
        for n, blob in enumerate(blobs):
            assert await decrypt(running.stub, blob) == bytes([n]) * 16
        await running.stub.GenerateDataKey(
            pb.GenerateDataKeyRequest(key_id=key_id, key_spec="AES_256")
        )
        # 101 crypto requests, and the HSM saw only the CreateKey.
        assert (counter.wraps, counter.unwraps) == (at_start[0] + 1, at_start[1])

    # After a restart the cache is empty: the first use unwraps once, then never again.
    counter, close = await counted()
    async with node_with(test_pki, data_dir, counter, close) as running:
        await running.stub.ListKeys(pb.ListKeysRequest())
        at_start = (counter.wraps, counter.unwraps)
        for n, blob in enumerate(blobs):
            assert await decrypt(running.stub, blob) == bytes([n]) * 16
        assert (counter.wraps, counter.unwraps) == (at_start[0], at_start[1] + 1)


async def test_a_hung_hsm_fails_only_the_calls_that_need_it(test_pki, tmp_path, softhsm) -> None:
    data_dir = tmp_path / "data"
    key_label = softhsm.pkcs11_config().key_label
    first = await Pkcs11RootKeyProvider.open(token_for(softhsm, key_label))
    async with node_with(test_pki, data_dir, first, first.aclose) as running:
        cached = (await running.stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        cold = (await running.stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        cached_blob = await encrypt(running.stub, cached, b"cached")
        cold_blob = await encrypt(running.stub, cold, b"cold")

    gate = gated_token(softhsm, key_label)
    provider = await Pkcs11RootKeyProvider.open(gate, timeout_s=0.3)
    async with node_with(test_pki, data_dir, provider, provider.aclose) as running:
        stub = running.stub
        assert await decrypt(stub, cached_blob) == b"cached"  # now in the cache
        keys_before = len((await stub.ListKeys(pb.ListKeysRequest())).keys)

        gate.open.clear()  # the HSM stops answering
        assert await decrypt(stub, cached_blob) == b"cached"
        assert await decrypt(stub, await encrypt(stub, cached, b"more")) == b"more"
        await expect_error(stub.Decrypt(
            pb.DecryptRequest(ciphertext_blob=cold_blob, encryption_context=CONTEXT)
        ), UNAVAILABLE, "DependencyTimeoutException")  # fmt: skip
        await expect_error(
            stub.CreateKey(pb.CreateKeyRequest()), UNAVAILABLE, "DependencyTimeoutException"
        )
        # Nothing half-made: the refused CreateKey left no key behind.
        assert len((await stub.ListKeys(pb.ListKeysRequest())).keys) == keys_before

        gate.open.set()  # the HSM answers again; the node needs no restart
        await wait_until(lambda: provider._worker.pending == 0)
        assert await decrypt(stub, cold_blob) == b"cold"
        created = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
        assert await decrypt(stub, await encrypt(stub, created, b"new")) == b"new"


async def test_node_start_fails_clearly_without_its_token(test_pki, tmp_path, softhsm) -> None:
    from meridian.server.node import NodeStartError

    config = dataclasses.replace(
        node_config(test_pki, tmp_path / "data"),
        root_key=softhsm.root_key_config(tmp_path / "data", token_label="gone-token"),
    )
    node = Node(config=config, clock=FakeClock())
    with pytest.raises(NodeStartError, match="no token labelled 'gone-token'"):
        await node.start()


async def test_hsm_calls_are_awaited_off_the_event_loop(test_pki, tmp_path, softhsm) -> None:
    """While the HSM hangs, the node still answers calls that do not need it."""
    gate = gated_token(softhsm)
    provider = await Pkcs11RootKeyProvider.open(gate, timeout_s=5)
    async with node_with(test_pki, tmp_path / "data", provider, provider.aclose) as running:
        await running.stub.ListKeys(pb.ListKeysRequest())  # one-time setup (audit key) done
        gate.open.clear()
        creating = asyncio.ensure_future(running.stub.CreateKey(pb.CreateKeyRequest()))
        await wait_until(lambda: provider._worker.pending == 1)
        listed = await running.stub.ListKeys(pb.ListKeysRequest())
        assert not creating.done()
        assert list(listed.keys) == []
        gate.open.set()
        assert (await creating).key_metadata.key_id
