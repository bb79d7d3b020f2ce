"""DESIGN.md §7.4: key material and plaintext never appear in the store or the logs."""

from __future__ import annotations

from pathlib import Path

from meridian.proto.kms.v1 import kms_pb2 as pb


async def test_material_and_plaintext_are_not_stored_or_logged(running_node, capsys) -> None:
    stub = running_node.stub
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    plaintext = b"PLAINTEXT-MARKER-4111111111111111"
    await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=plaintext))
    data_key = await stub.GenerateDataKey(
        pb.GenerateDataKeyRequest(key_id=key_id, key_spec="AES_256")
    )
    service = running_node.node.service
    materials = [
        material for (kid, _), material in service._materials._entries.items() if kid == key_id
    ]
    assert len(materials) == 1
    secrets = [materials[0], plaintext, data_key.plaintext]

    data_dir = Path(running_node.node.config.data_dir)
    stored = b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())
    assert stored, "the store is empty: the check would be meaningless"
    for secret in secrets:
        assert secret not in stored
    output = capsys.readouterr()
    logged = (output.out + output.err).encode()
    assert key_id.encode() in logged or b"Encrypt" in logged, "logs were not captured"
    for secret in secrets:
        assert secret not in logged
        assert secret.hex().encode() not in logged
