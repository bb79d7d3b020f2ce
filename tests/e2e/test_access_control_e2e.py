"""Access control against a real node process: the CLI as the administrator and as
another principal, the SDK as that principal, policies from files, grants, simulation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meridian.cli import pki
from meridian.client import AccessDeniedException, KmsClient
from meridian.client.cluster_file import load_cluster_file

pytestmark = pytest.mark.e2e


def run_cli(cluster_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian", "kms", "--cluster-file", str(cluster_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(cluster_file: Path, *args: str) -> dict:
    result = run_cli(cluster_file, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def cluster_file_for(single_region, principal: str, tmp_path: Path) -> Path:
    """A copy of cluster.json that calls as ``principal`` (a certificate from the CA)."""
    cert, key = pki.issue_client(single_region.directory / "pki", principal)
    document = json.loads(single_region.file.read_text())
    document.update(client_cert=str(cert), client_key=str(key), principal=principal)
    path = tmp_path / f"{principal}.json"
    path.write_text(json.dumps(document))
    return path


def test_policies_grants_and_simulation_end_to_end(single_region, tmp_path: Path) -> None:
    admin = single_region.file
    bob_file = cluster_file_for(single_region, "bob", tmp_path)
    account = load_cluster_file(admin).account_id
    bob = f"arn:meridian:iam::{account}:user/bob"
    key = ok(admin, "create-key", "--description", "tenant data")["KeyMetadata"]
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Admin",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:meridian:iam::{account}:user/admin"},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "TenantAcme",
                        "Effect": "Allow",
                        "Principal": {"AWS": bob},
                        "Action": ["kms:Encrypt", "kms:Decrypt"],
                        "Resource": "*",
                        "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "acme"}},
                    },
                ],
            }
        )
    )
    ok(admin, "put-key-policy", "--key-id", key["KeyId"], "--policy", f"file://{policy}")
    got = ok(admin, "get-key-policy", "--key-id", key["KeyId"])
    assert got["PolicyName"] == "default"
    assert json.loads(got["Policy"]) == json.loads(policy.read_text())
    assert ok(admin, "list-key-policies", "--key-id", key["KeyId"])["PolicyNames"] == ["default"]

    with KmsClient.from_cluster_file(bob_file) as kms:
        sealed = kms.encrypt(
            key_id=key["Arn"], plaintext=b"x", encryption_context={"tenant": "acme"}
        )
        with pytest.raises(AccessDeniedException) as caught:
            kms.encrypt(key_id=key["Arn"], plaintext=b"x", encryption_context={"tenant": "other"})
        assert bob in caught.value.message
        with pytest.raises(AccessDeniedException):
            kms.generate_data_key(key_id=key["Arn"], key_spec="AES_256")

    grant = ok(
        admin,
        "create-grant",
        "--key-id",
        key["KeyId"],
        "--grantee-principal",
        bob,
        "--operations",
        "GenerateDataKey",
        "Decrypt",
        "--constraints",
        '{"EncryptionContextSubset": {"job": "nightly"}}',
        "--name",
        "nightly",
    )
    listed = ok(admin, "list-grants", "--key-id", key["KeyId"])["Grants"]
    assert [entry["GrantId"] for entry in listed] == [grant["GrantId"]]
    assert listed[0]["Constraints"] == {"EncryptionContextSubset": {"job": "nightly"}}
    with KmsClient.from_cluster_file(bob_file) as kms:
        data_key = kms.generate_data_key(
            key_id=key["Arn"],
            key_spec="AES_256",
            encryption_context={"job": "nightly"},
            grant_tokens=[grant["GrantToken"]],
        )
        assert len(data_key.plaintext) == 32
        decrypted = kms.decrypt(
            ciphertext_blob=sealed.ciphertext_blob, encryption_context={"tenant": "acme"}
        )
        assert decrypted.plaintext == b"x"

    simulated = ok(
        admin,
        "simulate-policy",
        "--principal",
        "bob",
        "--action",
        "kms:Decrypt",
        "--action",
        "kms:ScheduleKeyDeletion",
        "--key-id",
        key["KeyId"],
        "--encryption-context",
        "tenant=acme",
    )["EvaluationResults"]
    decrypt, delete = simulated
    assert decrypt["Region"] == "us-east-1"
    assert decrypt["EvalDecision"] == "allowed"
    assert decrypt["MatchedStatements"][0]["Sid"] == "TenantAcme"
    assert delete["EvalDecision"] == "implicitDeny"

    # Bob is the grantee but neither its retiring principal nor allowed kms:RetireGrant.
    refused = run_cli(bob_file, "retire-grant", "--grant-token", grant["GrantToken"])
    assert refused.returncode == 254
    assert (
        "An error occurred (AccessDeniedException) when calling the RetireGrant" in refused.stderr
    )
    ok(admin, "revoke-grant", "--key-id", key["KeyId"], "--grant-id", grant["GrantId"])
    assert ok(admin, "list-grants", "--key-id", key["KeyId"])["Grants"] == []


def test_identity_policies_from_the_command_line(single_region, tmp_path: Path) -> None:
    admin = single_region.file
    carol_file = cluster_file_for(single_region, "carol", tmp_path)
    assert run_cli(carol_file, "list-keys").returncode == 254
    policy = tmp_path / "identity.json"
    policy.write_text(
        json.dumps({"Statement": {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}})
    )
    ok(
        admin,
        "put-user-policy",
        "--user-name",
        "carol",
        "--policy-name",
        "list-keys",
        "--policy-document",
        f"file://{policy}",
    )
    assert ok(admin, "list-user-policies", "--user-name", "carol")["PolicyNames"] == ["list-keys"]
    got = ok(admin, "get-user-policy", "--user-name", "carol", "--policy-name", "list-keys")
    assert json.loads(got["PolicyDocument"]) == json.loads(policy.read_text())
    ok(carol_file, "list-keys")
    ok(admin, "delete-user-policy", "--user-name", "carol", "--policy-name", "list-keys")
    assert run_cli(carol_file, "list-keys").returncode == 254
    malformed = run_cli(
        admin,
        "put-user-policy",
        "--user-name",
        "carol",
        "--policy-name",
        "bad",
        "--policy-document",
        '{"Statement": {"Effect": "Maybe"}}',
    )
    assert malformed.returncode == 254
    assert "MalformedPolicyDocumentException" in malformed.stderr
    assert "Statement[0].Effect must be Allow or Deny" in malformed.stderr
