from __future__ import annotations

from meridian.proto.kms.v1 import kms_pb2 as pb


async def test_encrypt_decrypt_round_trip(running_node) -> None:
    stub = running_node.stub
    created = await stub.CreateKey(pb.CreateKeyRequest(description="smoke"))
    key_id = created.key_metadata.key_id
    encrypted = await stub.Encrypt(
        pb.EncryptRequest(key_id=key_id, plaintext=b"hello", encryption_context={"a": "b"})
    )
    decrypted = await stub.Decrypt(
        pb.DecryptRequest(ciphertext_blob=encrypted.ciphertext_blob, encryption_context={"a": "b"})
    )
    assert decrypted.plaintext == b"hello"
    assert decrypted.key_id == created.key_metadata.arn
    assert decrypted.region == "us-east-1"
