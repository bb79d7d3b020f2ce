"""The scale benchmark's load generator: each call picks a random key (or ciphertext).

Unlike ``loadgen.py``, which repeats one pre-serialized request, a call here names a
key drawn uniformly from a file, so the server meets the cache misses of a region
whose callers use many keys. Picking and serializing (a few microseconds) happen
before the clock starts. Runs in its own process (spawn), as loadgen's workers do.

Files (written by ``scale.py``): a key file is key ids of ``KEY_ID_BYTES`` ASCII
bytes each, back to back; a ciphertext file is blobs, each preceded by its length
(4 bytes, big-endian).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meridian.cli.bench.loadgen import WorkerResult

KEY_ID_BYTES = 36  # a single-region key id (UUID); seeding makes only those
KMS_SERVICE = "/meridian.kms.v1.KeyManagementService/"
OPERATIONS = ("Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey", "ListKeys")
LIST_PAGE_KEYS = 100
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class ScaleWorkerSpec:
    endpoint: str
    server_name: str
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes
    operation: str  # one of OPERATIONS
    keys_file: str  # key ids (Encrypt, GenerateDataKey, DescribeKey)
    ciphertexts_file: str  # blobs (Decrypt)
    payload: bytes
    concurrency: int
    duration_s: float
    warmup_s: float
    seed: int
    # Priming: call once per key, in file order, then stop (no latencies kept).
    each_key_once: bool = False


def write_key_ids(path: Path, key_ids: Sequence[str]) -> None:
    data = "".join(key_ids).encode("ascii")
    if len(data) != KEY_ID_BYTES * len(key_ids):
        raise ValueError("every key id must be a UUID")
    with path.open("ab") as file:
        file.write(data)


def write_ciphertexts(path: Path, blobs: Sequence[bytes]) -> None:
    with path.open("ab") as file:
        for blob in blobs:
            file.write(_LENGTH.pack(len(blob)) + blob)


def read_ciphertexts(path: Path) -> list[bytes]:
    data = path.read_bytes()
    blobs: list[bytes] = []
    offset = 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        blobs.append(data[offset : offset + length])
        offset += length
    return blobs


def run_scale_worker(spec: ScaleWorkerSpec) -> WorkerResult:
    return asyncio.run(_worker(spec))


def _request_maker(spec: ScaleWorkerSpec) -> tuple[int, Callable[[int], bytes]]:
    """How many distinct requests there are, and how to build the i-th."""
    from meridian.proto.kms.v1 import kms_pb2 as pb

    if spec.operation == "Decrypt":
        requests = [
            pb.DecryptRequest(ciphertext_blob=blob).SerializeToString()
            for blob in read_ciphertexts(Path(spec.ciphertexts_file))
        ]
        return len(requests), requests.__getitem__
    key_ids = Path(spec.keys_file).read_bytes()

    def key_id(index: int) -> str:
        return key_ids[index * KEY_ID_BYTES : (index + 1) * KEY_ID_BYTES].decode("ascii")

    count = len(key_ids) // KEY_ID_BYTES
    if spec.operation == "Encrypt":
        return count, lambda i: pb.EncryptRequest(
            key_id=key_id(i), plaintext=spec.payload
        ).SerializeToString()
    if spec.operation == "GenerateDataKey":
        return count, lambda i: pb.GenerateDataKeyRequest(
            key_id=key_id(i), key_spec="AES_256"
        ).SerializeToString()
    if spec.operation == "DescribeKey":
        return count, lambda i: pb.DescribeKeyRequest(key_id=key_id(i)).SerializeToString()
    if spec.operation == "ListKeys":
        # A page that starts after a random key: its cost must not depend on where.
        from meridian.server.domain.pagination import make_marker

        return count, lambda i: pb.ListKeysRequest(
            limit=LIST_PAGE_KEYS, marker=make_marker("keys", key_id(i))
        ).SerializeToString()
    raise ValueError(f"unknown operation {spec.operation!r}; known: {', '.join(OPERATIONS)}")


async def _worker(spec: ScaleWorkerSpec) -> WorkerResult:
    import grpc

    count, make = _request_maker(spec)
    if count == 0:
        raise ValueError("no keys or ciphertexts to send")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec.ca_cert,
        private_key=spec.client_key,
        certificate_chain=spec.client_cert,
    )
    result = WorkerResult(latencies_s=[], errors=0)
    picker = random.Random(spec.seed)  # noqa: S311 - picks benchmark keys, no secret
    async with grpc.aio.secure_channel(
        spec.endpoint, credentials, options=[("grpc.ssl_target_name_override", spec.server_name)]
    ) as channel:
        call = channel.unary_unary(
            KMS_SERVICE + spec.operation,
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + spec.warmup_s
        deadline = measure_from + spec.duration_s
        next_index = iter(range(count))

        def pick() -> int | None:
            if spec.each_key_once:
                return next(next_index, None)
            return None if loop.time() >= deadline else picker.randrange(count)

        async def caller() -> None:
            while (index := pick()) is not None:
                request = make(index)
                started = time.perf_counter()
                try:
                    await call(request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    if spec.each_key_once or loop.time() >= measure_from:
                        result.errors += 1
                        result.first_error = (
                            result.first_error or f"{error.code()}: {error.details()}"
                        )
                    continue
                if not spec.each_key_once and loop.time() >= measure_from:
                    result.latencies_s.append(time.perf_counter() - started)

        await asyncio.gather(*(caller() for _ in range(spec.concurrency)))
    return result
