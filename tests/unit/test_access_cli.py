"""The access-control commands of `meridian kms`: AWS CLI flags, file:// parameters, and
simulate-policy asking every region that holds a multi-Region key."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client_support import FakeCluster, sync_cluster

from meridian.cli import kms_cmd
from meridian.client import ContextEntry, KmsClient
from meridian.proto.kms.v1 import kms_pb2 as pb


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


def run(cluster: FakeCluster, *argv: str) -> tuple[int, str, str]:
    def factory(args: argparse.Namespace) -> KmsClient:
        return cluster.sync_client(region=args.region)

    out, err = io.StringIO(), io.StringIO()
    code = kms_cmd.run(list(argv), client_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def arguments(*argv: str) -> dict[str, object]:
    return kms_cmd.sdk_arguments(kms_cmd.build_parser().parse_args(list(argv)))


def test_policies_come_from_files(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"Statement": []}')
    assert arguments("put-key-policy", "--key-id", "k", "--policy", f"file://{policy}") == {
        "key_id": "k",
        "policy": '{"Statement": []}',
    }
    assert arguments("create-key", "--policy", f"file://{policy}")["policy"] == '{"Statement": []}'
    assert (
        arguments(
            "put-user-policy",
            "--user-name",
            "bob",
            "--policy-name",
            "p",
            "--policy-document",
            '{"a": 1}',
        )["policy_document"]
        == '{"a": 1}'
    )


def test_unreadable_policy_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        kms_cmd.build_parser().parse_args(
            ["put-key-policy", "--key-id", "k", "--policy", f"file://{tmp_path}/missing.json"]
        )
    assert caught.value.code == kms_cmd.EXIT_USAGE
    assert "Unable to load paramfile" in capsys.readouterr().err


def test_create_grant_flags() -> None:
    parsed = arguments(
        "create-grant",
        "--key-id",
        "k",
        "--grantee-principal",
        "arn:meridian:iam::000000000000:user/bob",
        "--operations",
        "Decrypt",
        "Encrypt",
        "--constraints",
        '{"EncryptionContextEquals": {"tenant": "acme"}}',
        "--name",
        "n",
    )
    assert parsed["operations"] == ["Decrypt", "Encrypt"]
    assert parsed["constraints"] == {"EncryptionContextEquals": {"tenant": "acme"}}


@pytest.mark.parametrize(
    "constraints", ['{"Other": {}}', '{"EncryptionContextEquals": {"a": 1}}', "[]", "nope"]
)
def test_bad_constraints_are_usage_errors(constraints: str) -> None:
    with pytest.raises(SystemExit) as caught:
        kms_cmd.build_parser().parse_args(
            [
                "create-grant",
                "--key-id",
                "k",
                "--grantee-principal",
                "p",
                "--operations",
                "Decrypt",
                "--constraints",
                constraints,
            ]
        )
    assert caught.value.code == kms_cmd.EXIT_USAGE


def test_context_entries_shorthand_and_json() -> None:
    shorthand = arguments(
        "simulate-principal-policy",
        "--policy-source-arn",
        "arn:meridian:iam::000000000000:user/bob",
        "--action-names",
        "kms:Decrypt",
        "--context-entries",
        "ContextKeyName=aws:SourceIp,ContextKeyValues=10.0.0.1,ContextKeyType=ip",
        json.dumps([{"ContextKeyName": "kms:EncryptionContext:t", "ContextKeyValues": ["a", "b"]}]),
    )
    assert shorthand["context_entries"] == [
        ContextEntry(
            context_key_name="aws:SourceIp", context_key_values=("10.0.0.1",), context_key_type="ip"
        ),
        ContextEntry(context_key_name="kms:EncryptionContext:t", context_key_values=("a", "b")),
    ]


def test_grant_results_print_as_aws_json(cluster: FakeCluster) -> None:
    # The fake answers with an empty response; the output keeps AWS's member names.
    code, out, _ = run(cluster, "list-grants", "--key-id", "k")
    assert code == kms_cmd.EXIT_OK
    assert json.loads(out) == {"Grants": [], "Region": "us-east-1"}


def test_simulate_policy_asks_every_region_holding_a_multi_region_key(
    cluster: FakeCluster,
) -> None:
    key = cluster["us-east-1"].add_key("mrk", multi_region=True)
    code, out, err = run(
        cluster,
        "simulate-policy",
        "--principal",
        "bob",
        "--action",
        "kms:Decrypt",
        "--key-id",
        key.key_id,
        "--encryption-context",
        "tenant=acme",
        "--context",
        "aws:SourceIp=10.0.0.1",
    )
    assert code == kms_cmd.EXIT_OK, err
    assert json.loads(out) == {"EvaluationResults": []}  # the fake evaluates nothing
    for region in ("us-east-1", "eu-west-1"):
        request = cluster[region].last("SimulatePrincipalPolicy")
        assert request == pb.SimulatePrincipalPolicyRequest(
            policy_source_arn="arn:meridian:iam::000000000000:user/bob",
            action_names=["kms:Decrypt"],
            resource_arns=[key.key_id],
            context_entries=[
                pb.ContextEntry(
                    context_key_name="kms:EncryptionContext:tenant",
                    context_key_values=["acme"],
                    context_key_type="string",
                ),
                pb.ContextEntry(
                    context_key_name="aws:SourceIp",
                    context_key_values=["10.0.0.1"],
                    context_key_type="string",
                ),
            ],
        )
    assert not [
        rpc for rpc, _ in cluster["ap-south-1"].requests if rpc == "SimulatePrincipalPolicy"
    ]


def test_simulate_policy_asks_only_the_home_region_of_a_single_region_key(
    cluster: FakeCluster,
) -> None:
    key = cluster["us-east-1"].add_key("plain")
    code, _, err = run(
        cluster,
        "simulate-policy",
        "--principal",
        "bob",
        "--action",
        "kms:Decrypt",
        "--key-id",
        key.arn,
    )
    assert code == kms_cmd.EXIT_OK, err
    asked = [
        region
        for region in cluster.kms
        if cluster[region].requests
        and any(rpc == "SimulatePrincipalPolicy" for rpc, _ in cluster[region].requests)
    ]
    assert asked == ["us-east-1"]


def test_simulate_policy_reports_a_missing_key(cluster: FakeCluster) -> None:
    code, _, err = run(
        cluster,
        "simulate-policy",
        "--principal",
        "bob",
        "--action",
        "kms:Decrypt",
        "--key-id",
        "alias/none",
    )
    assert code == kms_cmd.EXIT_SERVICE
    assert "when calling the DescribeKey operation" in err
