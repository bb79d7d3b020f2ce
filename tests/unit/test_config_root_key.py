"""The node config's [root_key] table: file (the default) and pkcs11, with a previous one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meridian.server.config import ConfigError, parse_config

BASE = Path("/etc/meridian")


def config(root_key: dict[str, Any] | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "region": "us-east-1",
        "listen": "127.0.0.1:7001",
        "data_dir": "data",
        "tls": {"ca_cert": "ca.pem", "cert": "node.pem", "key": "node.key"},
    }
    if root_key is not None:
        raw["root_key"] = root_key
    return raw


PKCS11 = {
    "provider": "pkcs11",
    "module": "/usr/lib/softhsm/libsofthsm2.so",
    "token_label": "meridian",
    "key_label": "meridian-root-key",
    "pin_env": "MERIDIAN_HSM_PIN",
}


def test_file_provider_is_the_default() -> None:
    root_key = parse_config(config(None), base=BASE).root_key
    assert root_key.provider == "file"
    assert root_key.path == BASE / "data" / "root.key"
    assert root_key.pkcs11 is None
    assert root_key.previous is None


def test_pkcs11_provider() -> None:
    root_key = parse_config(config(PKCS11), base=BASE).root_key
    assert root_key.provider == "pkcs11"
    assert root_key.pkcs11 is not None
    assert root_key.pkcs11.module == "/usr/lib/softhsm/libsofthsm2.so"
    assert root_key.pkcs11.token_label == "meridian"
    assert root_key.pkcs11.key_label == "meridian-root-key"
    assert root_key.pkcs11.pin_env == "MERIDIAN_HSM_PIN"
    assert root_key.pkcs11.pin_file is None
    assert root_key.pkcs11.mechanism == "auto"
    assert root_key.pkcs11.timeout_ms == 5000


def test_pkcs11_optional_settings_and_relative_paths() -> None:
    raw = dict(PKCS11, pin_env=None, pin_file="hsm/user.pin", module="lib/vendor.so")
    del raw["pin_env"]
    raw |= {"mechanism": "aes-key-wrap-pad", "timeout_ms": 250, "module_env": {"A_CONF": "x"}}
    pkcs11 = parse_config(config(raw), base=BASE).root_key.pkcs11
    assert pkcs11 is not None
    assert pkcs11.pin_file == BASE / "hsm" / "user.pin"
    assert pkcs11.module == str(BASE / "lib" / "vendor.so")
    assert pkcs11.mechanism == "aes-key-wrap-pad"
    assert pkcs11.timeout_ms == 250
    assert pkcs11.module_env == (("A_CONF", "x"),)


def test_bare_module_name_is_left_to_the_loader() -> None:
    pkcs11 = parse_config(config(dict(PKCS11, module="libsofthsm2.so")), base=BASE).root_key
    assert pkcs11.pkcs11 is not None
    assert pkcs11.pkcs11.module == "libsofthsm2.so"


def test_previous_provider_for_a_migration() -> None:
    raw = dict(PKCS11, previous={"provider": "file", "path": "old.key"})
    root_key = parse_config(config(raw), base=BASE).root_key
    assert root_key.previous is not None
    assert root_key.previous.provider == "file"
    assert root_key.previous.path == BASE / "data" / "old.key"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": "vault"}, "root_key.provider 'vault' is not supported"),
        ({"module": None}, "root_key.module is required"),
        ({"token_label": None}, "root_key.token_label is required"),
        ({"token_label": "x" * 33}, "at most 32 bytes"),
        ({"key_label": ""}, "root_key.key_label must be a non-empty string"),
        ({"pin_env": None}, "exactly one of pin_env and pin_file"),
        ({"pin_file": "user.pin"}, "exactly one of pin_env and pin_file"),
        ({"pin_env": "NOT A NAME"}, "must be an environment variable name"),
        ({"mechanism": "des"}, "mechanism must be one of auto, aes-gcm, aes-key-wrap-pad"),
        ({"timeout_ms": 10}, "timeout_ms must be between 100 and 600000"),
        ({"timeout_ms": "5s"}, "timeout_ms must be an integer"),
        ({"module_env": {"A": 1}}, "module_env must map variable names to strings"),
        ({"previous": PKCS11}, "must name the other provider"),
        ({"previous": {"provider": "pkcs11"}}, "root_key.previous needs exactly one of"),
    ],
)
def test_invalid_pkcs11_settings(change: dict[str, Any], message: str) -> None:
    raw = {key: value for key, value in (PKCS11 | change).items() if value is not None}
    with pytest.raises(ConfigError, match=message):
        parse_config(config(raw), base=BASE)


def test_previous_of_the_same_kind_is_refused() -> None:
    raw = {"provider": "file", "previous": {"provider": "file", "path": "old.key"}}
    with pytest.raises(ConfigError, match="must name the other provider"):
        parse_config(config(raw), base=BASE)
