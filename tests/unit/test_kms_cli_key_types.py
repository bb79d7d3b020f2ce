"""`meridian kms` for key types, rotation and import: AWS CLI flags in, AWS JSON out."""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_client_support import FakeCluster, sync_cluster

from meridian.cli import kms_cmd
from meridian.cli.kms_cmd import EXIT_OK, EXIT_USAGE, build_parser
from meridian.client import KmsClient
from meridian.proto.kms.v1 import kms_pb2 as pb

HOME = "us-east-1"


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with sync_cluster() as running:
        yield running


def _run(cluster: FakeCluster, *argv: str) -> tuple[int, str, str]:
    def factory(args: argparse.Namespace) -> KmsClient:
        return cluster.sync_client(region=args.region)

    out, err = io.StringIO(), io.StringIO()
    code = kms_cmd.run(list(argv), client_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_sign_sends_the_aws_cli_flags_and_prints_base64(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    message = tmp_path / "message.bin"
    message.write_bytes(b"\x00raw bytes\xff")
    kms = cluster[HOME]
    kms._sign = lambda request: pb.SignResponse(  # type: ignore[attr-defined]
        key_id="arn:meridian:kms:us-east-1:111122223333:key/k",
        signature=b"\x01\x02sig",
        signing_algorithm=request.signing_algorithm,
        region=HOME,
    )
    code, out, err = _run(
        cluster,
        "sign",
        "--key-id",
        "alias/signer",
        "--message",
        f"fileb://{message}",
        "--message-type",
        "RAW",
        "--signing-algorithm",
        "ECDSA_SHA_256",
        "--grant-tokens",
        "g1",
    )
    assert (code, err) == (EXIT_OK, "")
    assert kms.last("Sign") == pb.SignRequest(
        key_id="alias/signer",
        message=b"\x00raw bytes\xff",
        message_type="RAW",
        signing_algorithm="ECDSA_SHA_256",
        grant_tokens=["g1"],
    )
    document = json.loads(out)
    assert document == {
        "KeyId": "arn:meridian:kms:us-east-1:111122223333:key/k",
        "Signature": base64.b64encode(b"\x01\x02sig").decode(),
        "SigningAlgorithm": "ECDSA_SHA_256",
        "Region": HOME,
    }


def test_get_public_key_text_output_is_the_base64_key(cluster: FakeCluster) -> None:
    kms = cluster[HOME]
    kms._get_public_key = lambda request: pb.GetPublicKeyResponse(  # type: ignore[attr-defined]
        key_id="arn", public_key=b"\x30\x59der", key_spec="ECC_NIST_P256", region=HOME
    )
    code, out, _ = _run(
        cluster, "get-public-key", "--key-id", "k", "--query", "PublicKey", "--output", "text"
    )
    assert code == EXIT_OK
    assert base64.b64decode(out.strip()) == b"\x30\x59der"


def test_list_key_rotations_follows_every_page(cluster: FakeCluster) -> None:
    kms = cluster[HOME]
    pages = {
        "": pb.ListKeyRotationsResponse(
            rotations=[pb.RotationsListEntry(key_id="k", key_material_id="a" * 64)],
            next_marker="m1",
            truncated=True,
            region=HOME,
        ),
        "m1": pb.ListKeyRotationsResponse(
            rotations=[
                pb.RotationsListEntry(
                    key_id="k", key_material_id="b" * 64, rotation_type="ON_DEMAND"
                )
            ],
            region=HOME,
        ),
    }
    kms._list_key_rotations = lambda request: pages[request.marker]  # type: ignore[attr-defined]
    code, out, _ = _run(cluster, "list-key-rotations", "--key-id", "k")
    assert code == EXIT_OK
    document = json.loads(out)
    assert [entry["KeyMaterialId"] for entry in document["Rotations"]] == ["a" * 64, "b" * 64]
    assert "NextMarker" not in document and "Truncated" not in document
    assert document["Rotations"][1]["RotationType"] == "ON_DEMAND"


def test_import_key_material_reads_files_and_the_timestamp(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    token, wrapped = tmp_path / "token.bin", tmp_path / "wrapped.bin"
    token.write_bytes(b"token")
    wrapped.write_bytes(b"wrapped")
    code, _, err = _run(
        cluster,
        "import-key-material",
        "--key-id",
        "k",
        "--import-token",
        f"fileb://{token}",
        "--encrypted-key-material",
        f"fileb://{wrapped}",
        "--valid-to",
        "2027-03-04T05:06:07Z",
        "--import-type",
        "NEW_KEY_MATERIAL",
    )
    assert (code, err) == (EXIT_OK, "")
    sent = cluster[HOME].last("ImportKeyMaterial")
    assert sent.import_token == b"token" and sent.encrypted_key_material == b"wrapped"
    assert sent.valid_to.ToDatetime(tzinfo=UTC) == datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert sent.import_type == "NEW_KEY_MATERIAL"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-03-04T05:06:07Z", datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2027-03-04T05:06:07", datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2027-03-04T07:06:07+02:00", datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("1803963967", datetime(2027, 3, 2, 5, 6, 7, tzinfo=UTC)),
    ],
)
def test_valid_to_forms(text: str, expected: datetime) -> None:
    args = build_parser().parse_args(
        ["import-key-material", "--key-id", "k", "--import-token", "dA==",
         "--encrypted-key-material", "dA==", "--valid-to", text]
    )  # fmt: skip
    assert args.valid_to == expected


@pytest.mark.parametrize("text", ["tomorrow", "2027-13-01", "1e400"])
def test_bad_valid_to_is_a_usage_error(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(
            ["import-key-material", "--key-id", "k", "--import-token", "dA==",
             "--encrypted-key-material", "dA==", "--valid-to", text]
        )  # fmt: skip
    assert caught.value.code == EXIT_USAGE
    assert "--valid-to" in capsys.readouterr().err


def test_required_flags_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["sign", "--key-id", "k", "--message", "dA=="],
        ["verify", "--key-id", "k", "--message", "dA==", "--signing-algorithm", "A"],
        ["encapsulate", "--key-id", "k"],
        ["get-parameters-for-import", "--key-id", "k", "--wrapping-algorithm", "A"],
    ):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(argv)
        assert caught.value.code == EXIT_USAGE
