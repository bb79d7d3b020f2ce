"""Batch operations end to end: a real node process through both SDK twins and the CLI
(docs/batch-operations.md)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meridian.client import AsyncKmsClient, BatchResult, KmsClient
from meridian.client.errors import (
    DisabledException,
    InvalidCiphertextException,
    ValidationException,
)

pytestmark = pytest.mark.e2e


def run_cli(cluster_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian", "kms", "--cluster-file", str(cluster_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sync_sdk_batches(single_region) -> None:
    with KmsClient.from_cluster_file(single_region.file) as kms:
        key = kms.create_key().key_metadata
        disabled = kms.create_key().key_metadata
        kms.disable_key(key_id=disabled.key_id)
        sealed = kms.batch_encrypt(
            items=[
                {"key_id": key.arn, "plaintext": b"first", "encryption_context": {"n": "1"}},
                {"key_id": disabled.key_id, "plaintext": b"refused"},
                {"key_id": key.key_id, "plaintext": b"third"},
            ]
        )
        assert isinstance(sealed, BatchResult)
        assert sealed.region == "us-east-1"
        first, refused, third = sealed.items
        assert isinstance(refused, DisabledException)
        assert refused.reason == "DisabledException"
        assert refused.request_id == sealed.request_ids[1]
        assert [index for index, _ in sealed.errors] == [1]
        with pytest.raises(DisabledException):
            sealed.raise_first_error()
        assert not isinstance(first, Exception) and not isinstance(third, Exception)

        opened = kms.batch_decrypt(
            items=[
                {"ciphertext_blob": third.ciphertext_blob},
                {"ciphertext_blob": first.ciphertext_blob},  # context missing
                {"ciphertext_blob": first.ciphertext_blob, "encryption_context": {"n": "1"}},
            ]
        )
        assert isinstance(opened.items[1], InvalidCiphertextException)
        assert [r.plaintext for r in opened.results] == [b"third", b"first"]

        keys = kms.batch_generate_data_key(
            items=[{"key_id": key.key_id, "key_spec": "AES_128"}, {"key_id": key.key_id}]
        )
        assert len(keys.results[0].plaintext) == 16
        assert isinstance(keys.items[1], ValidationException)  # neither size nor spec given
        # A data key opens with the single Decrypt.
        assert kms.decrypt(ciphertext_blob=keys.results[0].ciphertext_blob).plaintext == (
            keys.results[0].plaintext
        )
        with pytest.raises(ValidationException):
            kms.batch_encrypt(items=[])


async def test_async_sdk_batches(single_region) -> None:
    async with AsyncKmsClient.from_cluster_file(single_region.file) as kms:
        key = (await kms.create_key()).key_metadata
        sealed = await kms.batch_encrypt(
            items=[{"key_id": key.key_id, "plaintext": bytes([n])} for n in range(100)]
        )
        assert sealed.errors == []
        opened = await kms.batch_decrypt(
            items=[{"ciphertext_blob": result.ciphertext_blob} for result in sealed.results]
        )
        assert [result.plaintext for result in opened.results] == [bytes([n]) for n in range(100)]


def test_cli_batches(single_region, tmp_path: Path) -> None:
    with KmsClient.from_cluster_file(single_region.file) as kms:
        key = kms.create_key().key_metadata
    items = [
        {"KeyId": key.key_id, "Plaintext": base64.b64encode(b"one").decode()},
        {"KeyId": "alias/does-not-exist", "Plaintext": base64.b64encode(b"two").decode()},
    ]
    encrypted = run_cli(single_region.file, "batch-encrypt", "--items", json.dumps(items))
    assert encrypted.returncode == 0, encrypted.stderr
    document = json.loads(encrypted.stdout)
    assert document["Region"] == "us-east-1"
    assert len(document["RequestIds"]) == 2
    ok, missing = document["Items"]
    assert ok["KeyId"] == key.arn
    assert missing == {
        "Error": {"Code": "NotFoundException", "Message": missing["Error"]["Message"]}
    }

    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"CiphertextBlob": ok["CiphertextBlob"]}]))
    decrypted = run_cli(
        single_region.file, "batch-decrypt", "--items", f"file://{path}", "--query", "Items"
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert base64.b64decode(json.loads(decrypted.stdout)[0]["Plaintext"]) == b"one"

    data_keys = run_cli(
        single_region.file,
        "batch-generate-data-key",
        "--items",
        json.dumps([{"KeyId": key.key_id, "NumberOfBytes": 24}]),
    )
    assert data_keys.returncode == 0, data_keys.stderr
    assert len(base64.b64decode(json.loads(data_keys.stdout)["Items"][0]["Plaintext"])) == 24

    bad = run_cli(single_region.file, "batch-encrypt", "--items", '[{"Colour": "red"}]')
    assert bad.returncode == 252
    assert "unknown member 'Colour'" in bad.stderr
    empty = run_cli(single_region.file, "batch-encrypt", "--items", "[]")
    assert empty.returncode == 254
    assert "ValidationException" in empty.stderr
