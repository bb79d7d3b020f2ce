"""What the benchmark makes once, before any run: keys of every spec the selected
workloads need, a ciphertext, and signatures for Verify, on Meridian and on the peer.

Preparing once keeps key creation out of the measured runs (CreateKey is measured on
its own), and lets every load process send one pre-serialized request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meridian.cli import cluster
from meridian.cli.bench.workloads import SIGNING_ALGORITHMS, Prepared, Workload, key_usage
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.proto.kms.v1 import kms_pb2_grpc

CALL_TIMEOUT_S = 30.0


def _key_specs(workloads: Sequence[Workload]) -> list[str]:
    return sorted({work.key_spec for work in workloads if work.key_spec})


def _signing_algorithm(key_spec: str) -> str:
    try:
        return SIGNING_ALGORITHMS[key_spec]
    except KeyError:
        raise ValueError(f"no signing algorithm known for {key_spec}") from None


def prepare_meridian(
    directory: Path, region: str, payload: bytes, workloads: Sequence[Workload]
) -> Prepared:
    """Keys and blobs on the node of ``region`` in the cluster at ``directory``."""
    spec = cluster.load(directory)
    with cluster.region_channel(spec, spec.regions[region]) as channel:
        kms = kms_pb2_grpc.KeyManagementServiceStub(channel)
        key_id = kms.CreateKey(
            pb.CreateKeyRequest(description="bench"), timeout=CALL_TIMEOUT_S
        ).key_metadata.key_id
        blob = kms.Encrypt(
            pb.EncryptRequest(key_id=key_id, plaintext=payload), timeout=CALL_TIMEOUT_S
        ).ciphertext_blob
        key_ids: dict[str, str] = {}
        signatures: dict[str, bytes] = {}
        for key_spec in _key_specs(workloads):
            key_ids[key_spec] = kms.CreateKey(
                pb.CreateKeyRequest(
                    description="bench", key_spec=key_spec, key_usage=key_usage(key_spec)
                ),
                timeout=CALL_TIMEOUT_S,
            ).key_metadata.key_id
        for key_spec in sorted({w.key_spec for w in workloads if w.needs_signature and w.key_spec}):
            signatures[key_spec] = kms.Sign(
                pb.SignRequest(
                    key_id=key_ids[key_spec],
                    message=payload,
                    message_type="RAW",
                    signing_algorithm=_signing_algorithm(key_spec),
                ),
                timeout=CALL_TIMEOUT_S,
            ).signature
    return Prepared(
        key_id=key_id,
        ciphertext_blob=blob,
        payload=payload,
        key_ids=key_ids,
        signatures=signatures,
    )


def prepare_peer(client: Any, payload: bytes, workloads: Sequence[Workload]) -> dict[str, Any]:
    """The same on the peer (a boto3 KMS client), for the workloads it implements."""
    peer_workloads = [work for work in workloads if work.boto_operation is not None]
    key_id = client.create_key(Description="bench")["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key_id, Plaintext=payload)["CiphertextBlob"]
    key_ids: dict[str, str] = {}
    signatures: dict[str, bytes] = {}
    for key_spec in _key_specs(peer_workloads):
        key_ids[key_spec] = client.create_key(
            Description="bench", KeySpec=key_spec, KeyUsage=key_usage(key_spec)
        )["KeyMetadata"]["KeyId"]
    for work in peer_workloads:
        if work.needs_signature and work.key_spec and work.key_spec not in signatures:
            signatures[work.key_spec] = client.sign(
                KeyId=key_ids[work.key_spec],
                Message=payload,
                MessageType="RAW",
                SigningAlgorithm=_signing_algorithm(work.key_spec),
            )["Signature"]
    return {
        "key_id": key_id,
        "payload": payload,
        "ciphertext_blob": blob,
        "key_ids": key_ids,
        "signatures": signatures,
    }
