"""Access keys: creation, wrapping at rest, revocation, re-wrapping, the admin CLI."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest

from meridian.cli import access_keys
from meridian.cli.main import main
from meridian.server.config import ConfigError, parse_config
from meridian.server.domain.clock import FakeClock
from meridian.server.domain.crypto.rootkey import FileRootKeyProvider
from meridian.server.domain.errors import KMSInternalException
from meridian.server.gateway.access_keys import (
    ACCESS_KEY_ID_PATTERN,
    SECRET_PATTERN,
    AccessKeyAdmin,
    AccessKeyError,
    CredentialResolver,
    generate_access_key,
)
from meridian.server.storage.access_keys import AccessKeyTable


@pytest.fixture
async def table(tmp_path: Path):
    opened = await AccessKeyTable.open(tmp_path / "db.sqlite3", read_only=False)
    yield opened
    await opened.close()


@pytest.fixture
def root_key(tmp_path: Path) -> FileRootKeyProvider:
    return FileRootKeyProvider.open_or_create(tmp_path / "root.key")


def test_generated_keys_look_like_aws_keys_but_are_not_aws_keys() -> None:
    access_key_id, secret = generate_access_key()
    assert ACCESS_KEY_ID_PATTERN.fullmatch(access_key_id)
    assert len(access_key_id) == 20
    assert access_key_id.startswith("MKIA")
    assert SECRET_PATTERN.fullmatch(secret)
    assert len(secret) == 40
    assert generate_access_key() != generate_access_key()


async def test_create_resolve_revoke(table, root_key, tmp_path: Path) -> None:
    clock = FakeClock()
    admin = AccessKeyAdmin(table, root_key, clock)
    key = await admin.create("alice", "ci pipeline")
    resolver = CredentialResolver(
        await AccessKeyTable.open(tmp_path / "db.sqlite3", read_only=True), root_key
    )
    try:
        credential = await resolver.resolve(key.access_key_id)
        assert credential is not None
        assert credential.secret == key.secret_access_key.encode()
        assert (
            credential.principal.arn("111122223333") == "arn:meridian:iam::111122223333:user/alice"
        )
        assert await resolver.resolve("MKIA0000000000000000") is None
        assert await resolver.resolve("not an id") is None

        clock.advance(timedelta(minutes=1))
        revoked = await admin.revoke(key.access_key_id)
        assert revoked.revoked_at == clock.now()
        assert revoked.wrapped_secret is None, "a revoked secret is erased"
        # The resolver reads the row on every call: revocation needs no restart.
        assert await resolver.resolve(key.access_key_id) is None
        with pytest.raises(AccessKeyError):
            await admin.revoke(key.access_key_id)
        listed = await admin.list("alice")
        assert [(row.access_key_id, row.active, row.description) for row in listed] == [
            (key.access_key_id, False, "ci pipeline")
        ]
    finally:
        await resolver.aclose()


async def _set_wrapped_secret(directory: Path, access_key_id: str, wrapped: bytes) -> None:
    async with aiosqlite.connect(directory / "db.sqlite3") as connection:
        await connection.execute(
            "UPDATE aws_access_keys SET wrapped_secret = ? WHERE access_key_id = ?",
            (wrapped, access_key_id),
        )
        await connection.commit()


def _database_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.glob("db.sqlite3*"))


async def test_secret_is_wrapped_and_bound_to_its_id(table, root_key, tmp_path: Path) -> None:
    admin = AccessKeyAdmin(table, root_key, FakeClock())
    first = await admin.create("alice")
    second = await admin.create("bob")
    database = _database_bytes(tmp_path)
    assert first.access_key_id.encode() in database
    assert first.secret_access_key.encode() not in database
    # Swapping wrapped secrets between rows does not give bob alice's secret.
    first_row = await table.get(first.access_key_id)
    second_row = await table.get(second.access_key_id)
    assert first_row is not None and second_row is not None
    assert first_row.wrapped_secret is not None and second_row.wrapped_secret is not None
    await _set_wrapped_secret(tmp_path, second.access_key_id, first_row.wrapped_secret)
    resolver = CredentialResolver(table, root_key)
    with pytest.raises(KMSInternalException):
        await resolver.resolve(second.access_key_id)


async def test_invalid_requests(table, root_key) -> None:
    admin = AccessKeyAdmin(table, root_key, FakeClock())
    for principal in ("", "a b", "x" * 65, "ünicode"):
        with pytest.raises(AccessKeyError):
            await admin.create(principal)
    with pytest.raises(AccessKeyError):
        await admin.create("alice", "d" * 257)
    key = await admin.create("alice")
    with pytest.raises(AccessKeyError, match="exists already"):
        await admin.create("alice", existing=(key.access_key_id, key.secret_access_key))
    with pytest.raises(AccessKeyError):
        await admin.create("alice", existing=("lowercase-id-1234567", key.secret_access_key))
    with pytest.raises(AccessKeyError):
        await admin.create("alice", existing=("MKIA1111111111111111", "short"))


# ---- configuration ----------------------------------------------------------------------


def _raw(tmp_path: Path, **gateway: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "region": "us-east-1",
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "tls": {"ca_cert": "ca.pem", "cert": "node.pem", "key": "node.key"},
    }
    if gateway:
        raw["aws_gateway"] = gateway
    return raw


def test_the_gateway_is_off_unless_configured(tmp_path: Path) -> None:
    assert parse_config(_raw(tmp_path), base=tmp_path).aws_gateway is None
    config = parse_config(_raw(tmp_path, listen="127.0.0.1:8443"), base=tmp_path)
    assert config.aws_gateway is not None
    assert (config.aws_gateway.host, config.aws_gateway.port) == ("127.0.0.1", 8443)
    assert config.aws_gateway.cert == tmp_path / "node.pem", "defaults to the node's [tls]"
    assert config.aws_gateway.clock_skew_s_max == 300
    own = parse_config(
        _raw(tmp_path, listen="[::1]:8443", cert="web.pem", key="web.key", clock_skew_s_max=900),
        base=tmp_path,
    ).aws_gateway
    assert own is not None
    assert (own.host, own.cert, own.clock_skew_s_max) == ("::1", tmp_path / "web.pem", 900)


@pytest.mark.parametrize(
    "gateway",
    [
        {"listen": "nope"},
        {"listen": ""},
        {"cert": "c.pem"},
        {"listen": "127.0.0.1:1", "cert": "c.pem"},
        {"listen": "127.0.0.1:1", "clock_skew_s_max": 0},
        {"listen": "127.0.0.1:1", "clock_skew_s_max": True},
        {"listen": "127.0.0.1:1", "body_bytes_max": 10},
        {"listen": "127.0.0.1:1", "colour": "red"},
    ],
)
def test_bad_gateway_settings_name_the_field(tmp_path: Path, gateway: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="aws_gateway"):
        parse_config(_raw(tmp_path, **gateway), base=tmp_path)


# ---- the admin command line --------------------------------------------------------------


def _node_config(tmp_path: Path, region: str) -> Path:
    path = tmp_path / f"{region}.toml"
    path.write_text(
        f'region = "{region}"\nlisten = "127.0.0.1:0"\ndata_dir = "{region}-data"\n'
        '[tls]\nca_cert = "ca.pem"\ncert = "node.pem"\nkey = "node.key"\n'
    )
    return path


def test_cli_create_list_revoke_across_regions(tmp_path: Path, capsys) -> None:
    configs = [_node_config(tmp_path, region) for region in ("us-east-1", "eu-west-1")]
    targets = [arg for config in configs for arg in ("--config", str(config))]
    assert main(["access-key", "create", "--principal", "alice", *targets]) == 0
    created = json.loads(capsys.readouterr().out)
    key = created["AccessKey"]
    assert created["Regions"] == ["us-east-1", "eu-west-1"]
    assert (key["UserName"], key["Status"]) == ("alice", "Active")
    secret = key["SecretAccessKey"]
    for region in ("us-east-1", "eu-west-1"):
        stored = b"".join(path.read_bytes() for path in (tmp_path / f"{region}-data").iterdir())
        assert key["AccessKeyId"].encode() in stored
        assert secret.encode() not in stored
        assert oct((tmp_path / f"{region}-data" / "root.key").stat().st_mode & 0o777) == "0o600"

    assert main(["access-key", "list", *targets]) == 0
    listed = json.loads(capsys.readouterr().out)["Regions"]
    assert [entry["AccessKeyId"] for entry in listed["eu-west-1"]] == [key["AccessKeyId"]]
    assert secret not in json.dumps(listed)

    assert main(["access-key", "revoke", key["AccessKeyId"], *targets]) == 0
    revoked = json.loads(capsys.readouterr().out)
    assert revoked["Regions"] == {"us-east-1": "revoked", "eu-west-1": "revoked"}
    assert main(["access-key", "revoke", key["AccessKeyId"], *targets]) == 1
    assert "no active access key" in capsys.readouterr().err


def test_cli_refuses_bad_input(tmp_path: Path, capsys) -> None:
    config = _node_config(tmp_path, "us-east-1")
    assert main(["access-key", "create", "--principal", "a b", "--config", str(config)]) == 1
    assert "principal" in capsys.readouterr().err
    assert main(["access-key", "list", "--cluster-dir", str(tmp_path / "none")]) == 1
    assert "no cluster" in capsys.readouterr().err
    missing = tmp_path / "missing.toml"
    assert main(["access-key", "list", "--config", str(missing)]) == 1
    assert "does not exist" in capsys.readouterr().err


async def test_create_is_all_regions_or_none(tmp_path: Path) -> None:
    good = access_keys.load_region_configs([_node_config(tmp_path, "us-east-1")])
    bad_config = _node_config(tmp_path, "eu-west-1")
    bad = access_keys.load_region_configs([bad_config])
    # A root key file that others can read is refused by the second region.
    data = tmp_path / "eu-west-1-data"
    data.mkdir()
    (data / "root.key").write_bytes(b"x" * 56)
    os.chmod(data / "root.key", 0o644)
    with pytest.raises(access_keys.AccessKeyCommandError, match="root key"):
        await access_keys.create([*good, *bad], "alice")
    rows = await access_keys.list_keys(good[0])
    assert [row.active for row in rows] == [False], "the first region's key was revoked"
