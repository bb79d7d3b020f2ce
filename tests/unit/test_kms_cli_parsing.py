"""`meridian kms` argument parsing: AWS CLI flag syntax and usage errors (exit 252)."""

from __future__ import annotations

import argparse
import base64
import inspect
from pathlib import Path

import pytest

from meridian.cli import kms_cmd
from meridian.cli.kms_cmd import EXIT_USAGE, build_parser
from meridian.client import KmsClient, Tag
from meridian.proto.kms.v1 import kms_pb2


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as caught:
        _parse(*argv)
    assert caught.value.code == EXIT_USAGE
    return capsys.readouterr().err


def test_every_rpc_has_a_command_that_matches_the_sdk() -> None:
    service = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
    commands = {command.operation: command for command in kms_cmd.COMMANDS}
    assert set(commands) == set(service.methods_by_name)
    for command in commands.values():
        parameters = inspect.signature(getattr(KmsClient, command.method)).parameters
        for flag in command.flags:
            assert flag.dest in parameters, f"{command.name} {flag.option}"


def test_blob_base64(tmp_path: Path) -> None:
    args = _parse("encrypt", "--key-id", "k", "--plaintext", base64.b64encode(b"\x00hi").decode())
    assert args.plaintext == b"\x00hi"


def test_blob_fileb_reads_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"\x00\xff raw")
    args = _parse("decrypt", "--ciphertext-blob", f"fileb://{path}")
    assert args.ciphertext_blob == b"\x00\xff raw"


def test_bad_base64_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(capsys, "encrypt", "--key-id", "k", "--plaintext", "not base64!")
    assert "argument --plaintext: not valid base64" in err
    assert "Traceback" not in err


def test_unreadable_fileb_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.bin"
    err = _usage_error(capsys, "decrypt", "--ciphertext-blob", f"fileb://{missing}")
    assert f"Unable to load paramfile fileb://{missing}: No such file or directory" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("purpose=test", {"purpose": "test"}),
        ("a=1,b=2", {"a": "1", "b": "2"}),
        ("a=x=y,b=", {"a": "x=y", "b": ""}),
        ('{"a": "1", "b c": "2,3"}', {"a": "1", "b c": "2,3"}),
    ],
)
def test_encryption_context_forms(text: str, expected: dict[str, str]) -> None:
    args = _parse("encrypt", "--key-id", "k", "--plaintext", "aGk=", "--encryption-context", text)
    assert args.encryption_context == expected


@pytest.mark.parametrize("text", ["novalue", "=v", '{"a": 1}', "{broken", "[]"])
def test_bad_encryption_context(capsys: pytest.CaptureFixture[str], text: str) -> None:
    err = _usage_error(capsys, "decrypt", "--ciphertext-blob", "aGk=", "--encryption-context", text)
    assert "--encryption-context" in err


def test_re_encrypt_contexts() -> None:
    args = _parse(
        "re-encrypt",
        "--ciphertext-blob",
        "aGk=",
        "--destination-key-id",
        "k2",
        "--source-encryption-context",
        "a=1",
        "--destination-encryption-context",
        '{"b": "2"}',
    )
    assert kms_cmd.sdk_arguments(args) == {
        "ciphertext_blob": b"hi",
        "destination_key_id": "k2",
        "source_encryption_context": {"a": "1"},
        "destination_encryption_context": {"b": "2"},
    }


def test_tags_shorthand_and_json() -> None:
    args = _parse("create-key", "--tags", "TagKey=team,TagValue=pay", "TagKey=env,TagValue=dev")
    assert kms_cmd.sdk_arguments(args)["tags"] == [
        Tag("team", "pay"),
        Tag("env", "dev"),
    ]
    args = _parse("tag-resource", "--key-id", "k", "--tags", '[{"TagKey": "a", "TagValue": "b"}]')
    assert kms_cmd.sdk_arguments(args)["tags"] == [Tag("a", "b")]


@pytest.mark.parametrize(
    "text", ["TagKey=a", "Key=a,Value=b", '[{"TagKey": "a"}]', '[{"TagKey": 1, "TagValue": "b"}]']
)
def test_bad_tags(capsys: pytest.CaptureFixture[str], text: str) -> None:
    assert "--tags" in _usage_error(capsys, "tag-resource", "--key-id", "k", "--tags", text)


def test_lists_of_strings() -> None:
    args = _parse("untag-resource", "--key-id", "k", "--tag-keys", "a", "b")
    assert kms_cmd.sdk_arguments(args)["tag_keys"] == ["a", "b"]
    args = _parse("untag-resource", "--key-id", "k", "--tag-keys", '["a", "b"]')
    assert kms_cmd.sdk_arguments(args)["tag_keys"] == ["a", "b"]
    args = _parse("describe-key", "--key-id", "k", "--grant-tokens", "t1", "t2")
    assert kms_cmd.sdk_arguments(args) == {
        "key_id": "k",
        "grant_tokens": ["t1", "t2"],
    }


def test_switches_and_numbers() -> None:
    def arguments(*argv: str) -> dict[str, object]:
        args = _parse(*argv)
        return kms_cmd.sdk_arguments(args)

    assert arguments("create-key") == {}
    assert arguments("create-key", "--multi-region") == {"multi_region": True}
    assert arguments("create-key", "--no-multi-region") == {"multi_region": False}
    assert arguments("create-key", "--bypass-policy-lockout-safety-check") == {
        "bypass_policy_lockout_safety_check": True
    }
    assert arguments("generate-random", "--number-of-bytes", "0") == {"number_of_bytes": 0}
    assert arguments("schedule-key-deletion", "--key-id", "k", "--pending-window-in-days", "7") == {
        "key_id": "k",
        "pending_window_in_days": 7,
    }
    assert arguments("list-keys", "--limit", "5", "--marker", "m") == {"limit": 5, "marker": "m"}


def test_global_options_before_or_after_the_operation() -> None:
    args = _parse("generate-random")
    assert (args.cluster_file, args.region, args.output, args.query) == (None, None, "json", None)
    args = _parse(
        "--region", "eu-west-1", "--output", "text", "generate-random", "--query", "Plaintext"
    )
    assert (args.region, args.output, args.query) == ("eu-west-1", "text", "Plaintext")
    args = _parse("--region", "eu-west-1", "generate-random", "--cluster-file", "c.json")
    assert (args.region, args.cluster_file) == ("eu-west-1", Path("c.json"))
    args = _parse("--region", "eu-west-1", "generate-random", "--region", "ap-south-1")
    assert args.region == "ap-south-1"


@pytest.mark.parametrize(
    "argv",
    [
        ("encrypt", "--plaintext", "aGk="),  # --key-id missing
        ("generate-random", "--number-of-bytes", "many"),
        ("--output", "xml", "list-keys"),
        ("list-keys", "--output", "yaml"),
        ("no-such-operation",),
        (),
    ],
)
def test_usage_errors_exit_252(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in _usage_error(capsys, *argv)


def test_usage_errors_exit_252_under_the_meridian_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="meridian")
    kms_cmd.register(parser.add_subparsers(dest="command"))
    for argv in (["kms", "bogus"], ["kms", "encrypt", "--key-id", "k"], ["kms", "--output", "x"]):
        with pytest.raises(SystemExit) as caught:
            parser.parse_args(argv)
        assert caught.value.code == EXIT_USAGE
    args = parser.parse_args(["kms", "enable-key", "--key-id", "k"])
    assert args.func is kms_cmd.handle
    capsys.readouterr()
