"""`meridian envelope encrypt|decrypt`, and `meridian kms` riding over a failed region."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import grpc
import pytest
from client_fakes import FakeKeyring, FakeNetwork
from test_client_support import FakeError, sync_cluster

from meridian.cli import envelope_cmd, kms_cmd
from meridian.cli.kms_cmd import EXIT_CONFIG, EXIT_OK, EXIT_OTHER, EXIT_SERVICE, EXIT_USAGE
from meridian.client import KmsClient


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork({"us-east-1": 0.01, "eu-west-1": 0.02})


@pytest.fixture
def keyring(network: FakeNetwork) -> FakeKeyring:
    return FakeKeyring(network)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(network: FakeNetwork, *argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    def factory(args: argparse.Namespace) -> KmsClient:
        return network.sync_client(region=args.region)

    out, err = io.StringIO(), err or io.StringIO()
    code = envelope_cmd.run(list(argv), client_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_encrypt_then_decrypt_a_file(
    network: FakeNetwork, keyring: FakeKeyring, tmp_path: Path
) -> None:
    mrk, other = keyring.add_key(None), keyring.add_key("eu-west-1")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(300_000))
    sealed, opened = tmp_path / "data.menv", tmp_path / "opened.bin"
    code, out, err = _run(
        network,
        "encrypt",
        "--in",
        str(source),
        "--out",
        str(sealed),
        "--key-id",
        mrk,
        "--key-id",
        other,
        "--encryption-context",
        "purpose=backup,team=ops",
        "--frame-length",
        "4096",
    )
    assert (code, err) == (EXIT_OK, "")
    summary = json.loads(out)
    assert summary["WrappedKeyIds"] == [mrk, other]
    assert summary["PlaintextBytes"] == 300_000
    assert summary["EncryptionContext"] == {"purpose": "backup", "team": "ops"}
    code, out, err = _run(
        network,
        "decrypt",
        "--in",
        str(sealed),
        "--out",
        str(opened),
        "--key-id",
        other,
        "--encryption-context",
        "purpose=backup",
    )
    assert (code, err) == (EXIT_OK, "")
    assert opened.read_bytes() == source.read_bytes()
    assert json.loads(out)["KeyId"] == other


def test_progress_is_drawn_on_a_terminal(
    network: FakeNetwork, keyring: FakeKeyring, tmp_path: Path
) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"z" * 5_000_000)
    terminal = _Terminal()
    code, _, _ = _run(
        network,
        "encrypt",
        "--in",
        str(source),
        "--out",
        str(tmp_path / "data.menv"),
        "--key-id",
        keyring.add_key("us-east-1"),
        err=terminal,
    )
    assert code == EXIT_OK
    assert "100%" in terminal.getvalue() and "[" in terminal.getvalue()
    code, _, err = _run(
        network,
        "encrypt",
        "--in",
        str(source),
        "--out",
        str(tmp_path / "again.menv"),
        "--key-id",
        keyring.add_key("us-east-1"),
    )
    assert (code, err) == (EXIT_OK, "")  # not a terminal: no bar


def test_errors_have_exit_codes(network: FakeNetwork, keyring: FakeKeyring, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload")
    sealed = tmp_path / "data.menv"
    key = keyring.add_key("us-east-1")
    assert (
        _run(network, "encrypt", "--in", str(source), "--out", str(sealed), "--key-id", key)[0] == 0
    )
    # An invalid message.
    broken = tmp_path / "broken.menv"
    broken.write_bytes(sealed.read_bytes()[:-1])
    code, _, err = _run(
        network, "decrypt", "--in", str(broken), "--out", str(tmp_path / "x"), "--discovery"
    )
    assert code == EXIT_OTHER and "InvalidMessageError" in err
    assert not (tmp_path / "x").exists()
    # The wrong context.
    code, _, err = _run(
        network,
        "decrypt",
        "--in",
        str(sealed),
        "--out",
        str(tmp_path / "y"),
        "--key-id",
        key,
        "--encryption-context",
        "a=b",
    )
    assert code == EXIT_OTHER and "EncryptionContextMismatchError" in err
    # No key to decrypt with, and no --discovery: a configuration error.
    code, _, err = _run(network, "decrypt", "--in", str(sealed), "--out", str(tmp_path / "z"))
    assert code == EXIT_CONFIG and "discovery" in err
    # KMS says no: an unknown key.
    missing = key.replace("0000-4000-8000-0000", "0000-4000-8000-9999")
    code, _, err = _run(
        network, "encrypt", "--in", str(source), "--out", str(sealed), "--key-id", missing
    )
    assert code == EXIT_SERVICE and "NotFoundException" in err
    # Bad usage.
    assert _run(network, "encrypt", "--in", str(source))[0] == EXIT_USAGE
    code, _, _ = _run(
        network, "encrypt", "--in", str(source), "--out", str(sealed), "--encryption-context", "x"
    )
    assert code == EXIT_USAGE


def test_meridian_kms_fails_over_past_a_region_that_drops_a_call() -> None:
    with sync_cluster(("us-east-1", "eu-west-1")) as cluster:
        cluster["us-east-1"].fail_next = FakeError(
            grpc.StatusCode.UNAVAILABLE, None, "connection reset", request_id=None
        )

        def factory(args: argparse.Namespace) -> KmsClient:
            return cluster.sync_client(region=args.region)

        out = io.StringIO()
        code = kms_cmd.run(
            ["generate-random", "--number-of-bytes", "8"], client_factory=factory, stdout=out
        )
        assert code == EXIT_OK
        assert json.loads(out.getvalue())["Region"] == "eu-west-1"
