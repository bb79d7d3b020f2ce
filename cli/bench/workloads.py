"""What the benchmark sends: one table of operations, for Meridian and for the peer.

Each Meridian workload is prepared once (a key, a ciphertext) and then sent as the same
serialized request by every worker, so the client's own cost stays as small as it can be
and the figures describe the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from meridian.proto.kms.v1 import kms_pb2 as pb

KMS_SERVICE = "/meridian.kms.v1.KeyManagementService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class Prepared:
    """State made once before the runs: what the requests refer to."""

    key_id: str
    ciphertext_blob: bytes
    payload: bytes


@dataclass(frozen=True)
class Workload:
    name: str  # the AWS operation name, or "Empty" for the ceiling
    method: str
    build: Callable[[Prepared], Message]
    boto_operation: str | None = None
    boto_parameters: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _health_request(_: Prepared) -> Message:
    from grpc_health.v1 import health_pb2

    request: Message = health_pb2.HealthCheckRequest(service="")
    return request


WORKLOADS: tuple[Workload, ...] = (
    Workload("Empty", HEALTH_CHECK, _health_request),
    Workload(
        "Encrypt",
        KMS_SERVICE + "Encrypt",
        lambda p: pb.EncryptRequest(key_id=p.key_id, plaintext=p.payload),
        "encrypt",
        lambda peer: {"KeyId": peer["key_id"], "Plaintext": peer["payload"]},
    ),
    Workload(
        "Decrypt",
        KMS_SERVICE + "Decrypt",
        lambda p: pb.DecryptRequest(ciphertext_blob=p.ciphertext_blob),
        "decrypt",
        lambda peer: {"CiphertextBlob": peer["ciphertext_blob"]},
    ),
    Workload(
        "GenerateDataKey",
        KMS_SERVICE + "GenerateDataKey",
        lambda p: pb.GenerateDataKeyRequest(key_id=p.key_id, key_spec="AES_256"),
        "generate_data_key",
        lambda peer: {"KeyId": peer["key_id"], "KeySpec": "AES_256"},
    ),
    Workload(
        "ReEncrypt",
        KMS_SERVICE + "ReEncrypt",
        lambda p: pb.ReEncryptRequest(
            ciphertext_blob=p.ciphertext_blob, destination_key_id=p.key_id
        ),
        "re_encrypt",
        lambda peer: {
            "CiphertextBlob": peer["ciphertext_blob"],
            "DestinationKeyId": peer["key_id"],
        },
    ),
    Workload(
        "CreateKey",
        KMS_SERVICE + "CreateKey",
        lambda p: pb.CreateKeyRequest(description="bench"),
        "create_key",
        lambda peer: {"Description": "bench"},
    ),
)


def workload(name: str) -> Workload:
    for candidate in WORKLOADS:
        if candidate.name.lower() == name.lower():
            return candidate
    known = ", ".join(w.name for w in WORKLOADS)
    raise ValueError(f"unknown operation {name!r}; known: {known}")
