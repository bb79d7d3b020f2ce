"""A real node process driven through the SDK (both twins) and the command line."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meridian.client import AsyncKmsClient, KmsClient
from meridian.client.errors import (
    DisabledException,
    InvalidCiphertextException,
    KMSInvalidStateException,
    NotFoundException,
    ValidationException,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run_cli(cluster_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian", "kms", "--cluster-file", str(cluster_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sync_sdk_lifecycle(single_region) -> None:
    with KmsClient.from_cluster_file(single_region.file) as kms:
        key = kms.create_key(description="sdk", tags={"team": "payments"}).key_metadata
        assert key.key_state == "Enabled"
        kms.create_alias(alias_name="alias/sdk-e2e", target_key_id=key.key_id)
        encrypted = kms.encrypt(
            key_id="alias/sdk-e2e", plaintext=b"data", encryption_context={"a": "b"}
        )
        assert encrypted.region == "us-east-1"
        decrypted = kms.decrypt(
            ciphertext_blob=encrypted.ciphertext_blob, encryption_context={"a": "b"}
        )
        assert decrypted.plaintext == b"data"
        with pytest.raises(InvalidCiphertextException) as caught:
            kms.decrypt(ciphertext_blob=encrypted.ciphertext_blob)
        assert caught.value.request_id
        other = kms.create_key().key_metadata
        re_encrypted = kms.re_encrypt(
            ciphertext_blob=encrypted.ciphertext_blob,
            source_encryption_context={"a": "b"},
            destination_key_id=other.arn,
        )
        assert kms.decrypt(ciphertext_blob=re_encrypted.ciphertext_blob).key_id == other.arn
        data_key = kms.generate_data_key(key_id=key.key_id, number_of_bytes=64)
        assert len(data_key.plaintext) == 64
        without = kms.generate_data_key_without_plaintext(key_id=key.key_id, key_spec="AES_128")
        assert len(kms.decrypt(ciphertext_blob=without.ciphertext_blob).plaintext) == 16
        assert len(kms.generate_random(number_of_bytes=10).plaintext) == 10
        kms.disable_key(key_id=key.key_id)
        with pytest.raises(DisabledException):
            kms.encrypt(key_id=key.key_id, plaintext=b"x")
        kms.enable_key(key_id=key.key_id)
        kms.update_key_description(key_id=key.key_id, description="renamed")
        assert kms.describe_key(key_id=key.arn).key_metadata.description == "renamed"
        kms.tag_resource(key_id=key.key_id, tags={"env": "prod"})
        kms.untag_resource(key_id=key.key_id, tag_keys=["team"])
        tags = kms.list_resource_tags(key_id=key.key_id).tags
        assert [(t.tag_key, t.tag_value) for t in tags] == [("env", "prod")]
        kms.update_alias(alias_name="alias/sdk-e2e", target_key_id=other.key_id)
        assert {a.alias_name for a in kms.iter_aliases(key_id=other.key_id)} == {"alias/sdk-e2e"}
        kms.delete_alias(alias_name="alias/sdk-e2e")
        scheduled = kms.schedule_key_deletion(key_id=key.key_id, pending_window_in_days=7)
        assert scheduled.key_state == "PendingDeletion"
        with pytest.raises(KMSInvalidStateException):
            kms.encrypt(key_id=key.key_id, plaintext=b"x")
        kms.cancel_key_deletion(key_id=key.key_id)
        assert kms.describe_key(key_id=key.key_id).key_metadata.key_state == "Disabled"
        assert key.key_id in {entry.key_id for entry in kms.iter_keys()}
        with pytest.raises(NotFoundException):
            kms.describe_key(key_id="alias/none")
        with pytest.raises(ValidationException):
            kms.encrypt(key_id=other.key_id, plaintext=b"x" * 4097)


async def test_async_sdk_round_trip(single_region) -> None:
    async with AsyncKmsClient.from_cluster_file(single_region.file) as kms:
        key = (await kms.create_key(description="async")).key_metadata
        encrypted = await kms.encrypt(key_id=key.key_id, plaintext=b"async data")
        decrypted = await kms.decrypt(ciphertext_blob=encrypted.ciphertext_blob)
        assert decrypted.plaintext == b"async data"
        with pytest.raises(NotFoundException):
            await kms.describe_key(key_id="00000000-0000-4000-8000-000000000000")


def test_cli_round_trip(single_region, tmp_path: Path) -> None:
    created = run_cli(
        single_region.file, "create-key", "--description", "cli", "--tags", "TagKey=a,TagValue=b"
    )
    assert created.returncode == 0, created.stderr
    metadata = json.loads(created.stdout)["KeyMetadata"]
    assert metadata["KeyState"] == "Enabled"
    source = tmp_path / "plain.bin"
    source.write_bytes(bytes(range(256)))
    encrypted = run_cli(
        single_region.file,
        "encrypt",
        "--key-id",
        metadata["Arn"],
        "--plaintext",
        f"fileb://{source}",
        "--encryption-context",
        "k1=v1,k2=v2",
    )
    assert encrypted.returncode == 0, encrypted.stderr
    blob = tmp_path / "blob.bin"
    blob.write_bytes(base64.b64decode(json.loads(encrypted.stdout)["CiphertextBlob"]))
    decrypted = run_cli(
        single_region.file,
        "decrypt",
        "--ciphertext-blob",
        f"fileb://{blob}",
        "--encryption-context",
        '{"k2": "v2", "k1": "v1"}',
        "--query",
        "Plaintext",
        "--output",
        "text",
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert base64.b64decode(decrypted.stdout.strip()) == bytes(range(256))
    wrong = run_cli(single_region.file, "decrypt", "--ciphertext-blob", f"fileb://{blob}")
    assert wrong.returncode == 254
    assert (
        "An error occurred (InvalidCiphertextException) when calling the Decrypt operation"
        in wrong.stderr
    )
    assert "Traceback" not in wrong.stderr
    missing = run_cli(single_region.file, "describe-key", "--key-id", "alias/absent")
    assert missing.returncode == 254
    assert "NotFoundException" in missing.stderr
    bad_file = run_cli(
        single_region.file,
        "encrypt",
        "--key-id",
        metadata["KeyId"],
        "--plaintext",
        "fileb:///no/such/file",
    )
    assert bad_file.returncode == 252
    assert "Traceback" not in bad_file.stderr


def test_demo_script_runs_end_to_end(tmp_path: Path) -> None:
    """The README's demo, on its own fresh cluster directory."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "decrypted:  '4111 1111 1111 1111'" in result.stdout
    assert "wrong context -> InvalidCiphertextException" in result.stdout
    assert "hello from the command line" in result.stdout
    # The multi-region part (scripts/demo_steps.py): geography, a lost region, status.
    assert "client<->eu-west-1               39 ms +/- 2 ms" in result.stdout
    assert "   killed us-east-1 (pid " in result.stdout
    assert "   us-east-1 started again on its data" in result.stdout
    assert "link proxy: running (pid " in result.stdout
    assert "Done" in result.stdout
