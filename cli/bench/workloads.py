"""What the benchmark sends: one table of operations, for Meridian and for the peer.

Each Meridian workload is prepared once (a key, a ciphertext) and then sent as the same
serialized request by every worker, so the client's own cost stays as small as it can be
and the figures describe the server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from meridian.proto.kms.v1 import kms_pb2 as pb

KMS_SERVICE = "/meridian.kms.v1.KeyManagementService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class Prepared:
    """State made once before the runs: what the requests refer to."""

    key_id: str  # a SYMMETRIC_DEFAULT key
    ciphertext_blob: bytes
    payload: bytes
    # Keys of other specs (HMAC_256, ECC_NIST_P256, ML_DSA_65 ...) by key spec, and a
    # signature of ``payload`` by each signing key's spec, for the workloads that need them.
    key_ids: Mapping[str, str] = field(default_factory=dict)
    signatures: Mapping[str, bytes] = field(default_factory=dict)

    def key_for(self, key_spec: str) -> str:
        return self.key_ids[key_spec]


@dataclass(frozen=True)
class Workload:
    name: str  # the AWS operation name, or "Empty" for the ceiling
    method: str
    build: Callable[[Prepared], Message]
    boto_operation: str | None = None  # None: the peer has no such operation ("n/a")
    boto_parameters: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # The key spec the workload needs prepared besides the symmetric key, and whether it
    # needs a signature of the payload made with it (Verify).
    key_spec: str | None = None
    needs_signature: bool = False
    # Meridian's batch extensions (docs/batch-operations.md): items per call, and the
    # single operation whose calls per second the items per second are compared with.
    items_per_call: int = 1
    single_operation: str | None = None


def _health_request(_: Prepared) -> Message:
    from grpc_health.v1 import health_pb2

    request: Message = health_pb2.HealthCheckRequest(service="")
    return request


def key_usage(key_spec: str) -> str:
    """The KeyUsage a benchmark key of ``key_spec`` is created with."""
    return "GENERATE_VERIFY_MAC" if key_spec.startswith("HMAC_") else "SIGN_VERIFY"


# Signing keys measured: (key spec, signing algorithm, whether moto implements the spec).
_SIGNING = (
    ("ECC_NIST_P256", "ECDSA_SHA_256", True),
    ("ML_DSA_65", "ML_DSA_SHAKE_256", False),
)
SIGNING_ALGORITHMS: Mapping[str, str] = {spec: algorithm for spec, algorithm, _ in _SIGNING}


def _signing_workloads(
    key_spec: str, algorithm: str, peer_has_it: bool
) -> tuple[Workload, Workload]:
    """Sign and Verify of the payload (RAW message) with a key of ``key_spec``."""

    def sign(p: Prepared) -> Message:
        return pb.SignRequest(
            key_id=p.key_for(key_spec),
            message=p.payload,
            message_type="RAW",
            signing_algorithm=algorithm,
        )

    def verify(p: Prepared) -> Message:
        return pb.VerifyRequest(
            key_id=p.key_for(key_spec),
            message=p.payload,
            message_type="RAW",
            signature=p.signatures[key_spec],
            signing_algorithm=algorithm,
        )

    def peer_sign(peer: dict[str, Any]) -> dict[str, Any]:
        return {
            "KeyId": peer["key_ids"][key_spec],
            "Message": peer["payload"],
            "MessageType": "RAW",
            "SigningAlgorithm": algorithm,
        }

    def peer_verify(peer: dict[str, Any]) -> dict[str, Any]:
        return {**peer_sign(peer), "Signature": peer["signatures"][key_spec]}

    return (
        Workload(
            f"Sign-{key_spec}",
            KMS_SERVICE + "Sign",
            sign,
            "sign" if peer_has_it else None,
            peer_sign if peer_has_it else None,
            key_spec=key_spec,
        ),
        Workload(
            f"Verify-{key_spec}",
            KMS_SERVICE + "Verify",
            verify,
            "verify" if peer_has_it else None,
            peer_verify if peer_has_it else None,
            key_spec=key_spec,
            needs_signature=True,
        ),
    )


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
        "GenerateMac",
        KMS_SERVICE + "GenerateMac",
        lambda p: pb.GenerateMacRequest(
            key_id=p.key_for("HMAC_256"), message=p.payload, mac_algorithm="HMAC_SHA_256"
        ),
        "generate_mac",
        lambda peer: {
            "KeyId": peer["key_ids"]["HMAC_256"],
            "Message": peer["payload"],
            "MacAlgorithm": "HMAC_SHA_256",
        },
        key_spec="HMAC_256",
    ),
    *(
        signing
        for key_spec, algorithm, peer_has_it in _SIGNING
        for signing in _signing_workloads(key_spec, algorithm, peer_has_it)
    ),
    Workload(
        "CreateKey",
        KMS_SERVICE + "CreateKey",
        lambda p: pb.CreateKeyRequest(description="bench"),
        "create_key",
        lambda peer: {"Description": "bench"},
    ),
)


# Batches of the most items a call takes (server/api/batch_servicer.py), each item the
# single workload's request; moto has no batch operations.
BATCH_ITEMS = 100
WORKLOADS += (
    Workload(
        "BatchEncrypt",
        KMS_SERVICE + "BatchEncrypt",
        lambda p: pb.BatchEncryptRequest(
            items=[pb.EncryptRequest(key_id=p.key_id, plaintext=p.payload)] * BATCH_ITEMS
        ),
        items_per_call=BATCH_ITEMS,
        single_operation="Encrypt",
    ),
    Workload(
        "BatchDecrypt",
        KMS_SERVICE + "BatchDecrypt",
        lambda p: pb.BatchDecryptRequest(
            items=[pb.DecryptRequest(ciphertext_blob=p.ciphertext_blob)] * BATCH_ITEMS
        ),
        items_per_call=BATCH_ITEMS,
        single_operation="Decrypt",
    ),
    Workload(
        "BatchGenerateDataKey",
        KMS_SERVICE + "BatchGenerateDataKey",
        lambda p: pb.BatchGenerateDataKeyRequest(
            items=[pb.GenerateDataKeyRequest(key_id=p.key_id, key_spec="AES_256")] * BATCH_ITEMS
        ),
        items_per_call=BATCH_ITEMS,
        single_operation="GenerateDataKey",
    ),
)


def workload(name: str) -> Workload:
    for candidate in WORKLOADS:
        if candidate.name.lower() == name.lower():
            return candidate
    known = ", ".join(w.name for w in WORKLOADS)
    raise ValueError(f"unknown operation {name!r}; known: {known}")
