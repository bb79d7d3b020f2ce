"""`meridian kms` against a fake cluster: AWS-shaped JSON, text, --query, exit codes."""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_client_support import (
    ACCOUNT,
    CREATED,
    NO_RETRY,
    FakeCluster,
    FakeError,
    sync_cluster,
)

from meridian.cli import kms_cmd
from meridian.cli.kms_cmd import EXIT_CONFIG, EXIT_OK, EXIT_SERVICE
from meridian.client import KmsClient

HOME = "us-east-1"


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


def _run(cluster: FakeCluster, *argv: str, **client_options: Any) -> Outcome:
    # The injected factory honours --region as the real one does (a pinned client).
    def factory(args: argparse.Namespace) -> KmsClient:
        return cluster.sync_client(region=args.region, **client_options)

    out, err = io.StringIO(), io.StringIO()
    code = kms_cmd.run(list(argv), client_factory=factory, stdout=out, stderr=err)
    return Outcome(code, out.getvalue(), err.getvalue())


def test_create_key_json_has_aws_member_names(cluster: FakeCluster) -> None:
    outcome = _run(
        cluster, "create-key", "--description", "orders", "--tags", "TagKey=a,TagValue=b"
    )
    assert (outcome.code, outcome.err) == (EXIT_OK, "")
    document = outcome.json()
    assert list(document) == ["KeyMetadata", "Region"]
    metadata = document["KeyMetadata"]
    assert metadata["AWSAccountId"] == ACCOUNT
    assert metadata["KeyId"] in cluster[HOME].keys
    assert cluster[HOME].keys[metadata["KeyId"]].tags == {"a": "b"}
    assert metadata["Arn"].endswith(metadata["KeyId"])
    assert metadata["CreationDate"] == CREATED.isoformat() == "2024-05-01T12:30:15.250000+00:00"
    assert metadata["Enabled"] is True
    assert metadata["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert metadata["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    # Unset members are left out, as in AWS's output.
    assert "DeletionDate" not in metadata
    assert "MultiRegionConfiguration" not in metadata
    assert document["Region"] == HOME
    assert outcome.out.startswith('{\n    "KeyMetadata"')  # the AWS CLI's 4-space indent


def test_encrypt_decrypt_round_trip_with_fileb(cluster: FakeCluster, tmp_path: Path) -> None:
    key = cluster[HOME].add_key()
    plaintext = base64.b64encode(b"hello").decode()
    sealed = _run(
        cluster,
        "encrypt",
        "--key-id",
        key.key_id,
        "--plaintext",
        plaintext,
        "--encryption-context",
        "a=1",
    )
    assert sealed.code == EXIT_OK
    document = sealed.json()
    assert set(document) == {"CiphertextBlob", "KeyId", "EncryptionAlgorithm", "Region"}
    assert document["KeyId"] == key.arn
    blob_file = tmp_path / "blob.bin"
    blob_file.write_bytes(base64.b64decode(document["CiphertextBlob"]))

    opened = _run(
        cluster,
        "decrypt",
        "--ciphertext-blob",
        f"fileb://{blob_file}",
        "--encryption-context",
        '{"a": "1"}',
        "--output",
        "text",
        "--query",
        "Plaintext",
    )
    assert (opened.code, opened.out) == (EXIT_OK, plaintext + "\n")


def test_query_in_json_prints_json(cluster: FakeCluster) -> None:
    key = cluster[HOME].add_key()
    outcome = _run(cluster, "describe-key", "--key-id", key.arn, "--query", "KeyMetadata.KeyId")
    assert outcome.out == json.dumps(key.key_id) + "\n"
    missing = _run(cluster, "describe-key", "--key-id", key.arn, "--query", "KeyMetadata.Nope")
    assert missing.out == "null\n"


def test_query_projection(cluster: FakeCluster) -> None:
    keys = [cluster[HOME].add_key() for _ in range(3)]
    outcome = _run(cluster, "list-keys", "--query", "Keys[].KeyId", "--output", "text")
    assert outcome.out == "\t".join(key.key_id for key in keys) + "\n"


def test_text_output_is_tab_separated_in_member_order(cluster: FakeCluster) -> None:
    key = cluster[HOME].add_key()
    outcome = _run(
        cluster, "encrypt", "--key-id", key.key_id, "--plaintext", "aGk=", "--output", "text"
    )
    blob = base64.b64encode(b"|".join((b"fake", key.key_id.encode(), b"", b"hi"))).decode()
    # Sorted members: CiphertextBlob, EncryptionAlgorithm, KeyId, Region.
    assert outcome.out == f"{blob}\tSYMMETRIC_DEFAULT\t{key.arn}\t{HOME}\n"


def test_text_output_of_nested_documents(cluster: FakeCluster) -> None:
    keys = [cluster[HOME].add_key() for _ in range(2)]
    outcome = _run(cluster, "list-keys", "--output", "text")
    assert outcome.out.splitlines() == [
        HOME,
        *(f"KEYS\t{key.arn}\t{key.key_id}" for key in keys),
    ]
    described = _run(cluster, "describe-key", "--key-id", keys[0].key_id, "--output", "text")
    lines = described.out.splitlines()
    assert lines[0] == HOME
    assert lines[1].startswith(f"KEYMETADATA\t{ACCOUNT}\t{keys[0].arn}\t")
    assert lines[2] == "ENCRYPTIONALGORITHMS\tSYMMETRIC_DEFAULT"


def test_list_commands_follow_every_page(cluster: FakeCluster) -> None:
    keys = [cluster[HOME].add_key() for _ in range(5)]
    cluster[HOME].page_size_default = 2
    document = _run(cluster, "list-keys").json()
    assert [entry["KeyId"] for entry in document["Keys"]] == [key.key_id for key in keys]
    assert set(document) == {"Keys", "Region"}
    assert len(cluster[HOME].requests) == 3


def test_limit_or_marker_asks_for_one_page(cluster: FakeCluster) -> None:
    for _ in range(3):
        cluster[HOME].add_key()
    document = _run(cluster, "list-keys", "--limit", "2").json()
    assert (len(document["Keys"]), document["NextMarker"], document["Truncated"]) == (2, "2", True)
    document = _run(cluster, "list-keys", "--marker", "2").json()
    assert (len(document["Keys"]), document["Truncated"]) == (1, False)
    assert "NextMarker" not in document


def test_empty_results_print_the_region(cluster: FakeCluster) -> None:
    key = cluster[HOME].add_key()
    outcome = _run(cluster, "disable-key", "--key-id", key.key_id, "--region", "us-east-1")
    assert outcome.json() == {"Region": HOME}
    assert cluster[HOME].keys[key.key_id].enabled is False


def test_region_pin_reaches_the_client(cluster: FakeCluster) -> None:
    outcome = _run(cluster, "--region", "ap-south-1", "generate-random", "--number-of-bytes", "2")
    assert outcome.json() == {
        "Plaintext": base64.b64encode(b"\x00\x01").decode(),
        "Region": "ap-south-1",
    }


def test_tags_and_aliases(cluster: FakeCluster) -> None:
    key = cluster[HOME].add_key()
    assert (
        _run(cluster, "create-alias", "--alias-name", "alias/o", "--target-key-id", key.key_id).code
        == 0
    )
    tagged = _run(
        cluster,
        "tag-resource",
        "--key-id",
        "alias/o",
        "--tags",
        "TagKey=t,TagValue=v",
        "TagKey=u,TagValue=w",
    )
    assert tagged.code == EXIT_OK
    tags = _run(cluster, "list-resource-tags", "--key-id", key.arn).json()
    assert tags == {
        "Tags": [{"TagKey": "t", "TagValue": "v"}, {"TagKey": "u", "TagValue": "w"}],
        "Region": HOME,
    }
    aliases = _run(cluster, "list-aliases", "--key-id", key.key_id).json()
    assert aliases["Aliases"][0]["AliasName"] == "alias/o"
    assert aliases["Aliases"][0]["CreationDate"] == CREATED.isoformat()
    assert "LastUpdatedDate" not in aliases["Aliases"][0]


def test_service_error_message_and_exit_code(cluster: FakeCluster) -> None:
    outcome = _run(cluster, "describe-key", "--key-id", "alias/missing")
    assert outcome.code == EXIT_SERVICE
    assert outcome.out == ""
    assert outcome.err == (
        "An error occurred (NotFoundException) when calling the DescribeKey operation: "
        "alias/missing not found\n"
    )


def test_service_error_without_reason(cluster: FakeCluster) -> None:
    cluster[HOME].fail_next = FakeError(grpc.StatusCode.UNAVAILABLE, None, "going away")
    outcome = _run(
        cluster, "generate-data-key-without-plaintext", "--key-id", "k", routing=NO_RETRY
    )
    assert outcome.code == EXIT_SERVICE
    assert outcome.err.startswith(
        "An error occurred (ServiceUnavailableError) when calling the "
        "GenerateDataKeyWithoutPlaintext operation: going away"
    )


def test_arn_of_an_unknown_region_is_a_config_error(cluster: FakeCluster) -> None:
    arn = f"arn:meridian:kms:sa-east-1:{ACCOUNT}:key/x"
    outcome = _run(cluster, "enable-key", "--key-id", arn)
    assert outcome.code == EXIT_CONFIG
    assert outcome.err.startswith(f"meridian kms: {arn!r} is in region 'sa-east-1'")
    assert "--cluster-file" not in outcome.err


def test_missing_cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kms_cmd.CLUSTER_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert kms_cmd.run(["list-keys"], stdout=out, stderr=err) == EXIT_CONFIG
    assert err.getvalue() == (
        "meridian kms: cluster file demo-cluster/cluster.json does not exist "
        f"(pass --cluster-file or set {kms_cmd.CLUSTER_FILE_ENV})\n"
    )
    explicit = tmp_path / "elsewhere.json"
    err = io.StringIO()
    assert kms_cmd.run(["list-keys", "--cluster-file", str(explicit)], stderr=err) == EXIT_CONFIG
    assert err.getvalue() == f"meridian kms: cluster file {explicit} does not exist\n"


def test_cluster_file_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Path, str | None]] = []

    def from_cluster_file(path: Path, *, region: str | None = None) -> str:
        seen.append((Path(path), region))
        return "client"

    monkeypatch.setattr(KmsClient, "from_cluster_file", from_cluster_file)
    parser = kms_cmd.build_parser()
    monkeypatch.delenv(kms_cmd.CLUSTER_FILE_ENV, raising=False)
    kms_cmd.client_from_args(parser.parse_args(["list-keys"]))
    monkeypatch.setenv(kms_cmd.CLUSTER_FILE_ENV, str(tmp_path / "env.json"))
    kms_cmd.client_from_args(parser.parse_args(["list-keys", "--region", "eu-west-1"]))
    kms_cmd.client_from_args(parser.parse_args(["--cluster-file", "flag.json", "list-keys"]))
    assert seen == [
        (Path("demo-cluster/cluster.json"), None),
        (tmp_path / "env.json", "eu-west-1"),
        (Path("flag.json"), None),
    ]


def test_handle_runs_parsed_arguments(cluster: FakeCluster) -> None:
    args = kms_cmd.build_parser().parse_args(["generate-random", "--output", "text"])
    out = io.StringIO()
    code = kms_cmd.handle(args, client_factory=lambda _: cluster.sync_client(), stdout=out)
    assert code == EXIT_OK
    plaintext, region = out.getvalue().rstrip("\n").split("\t")
    assert base64.b64decode(plaintext) == bytes(range(32))
    assert region == HOME


def test_members_aws_leaves_out_are_omitted(cluster: FakeCluster) -> None:
    key = cluster[HOME].add_key()
    metadata = _run(cluster, "describe-key", "--key-id", key.key_id).json()["KeyMetadata"]
    # Empty nested lists and empty optional strings are absent members in AWS's output.
    for member in ("SigningAlgorithms", "MacAlgorithms", "ExpirationModel", "ValidTo"):
        assert member not in metadata
    assert metadata["Description"] == ""
    # An empty list that is the answer itself is shown.
    assert _run(cluster, "list-resource-tags", "--key-id", key.key_id).json() == {
        "Tags": [],
        "Region": HOME,
    }
