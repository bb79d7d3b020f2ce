"""`meridian hsm`: set up and check a PKCS#11 root key (docs/hsm.md).

meridian hsm init --dir DIR        a SoftHSM2 token and its root key, for development
meridian hsm check --config FILE   connect as the node would; show the token and key
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from meridian.cli import softhsm

if TYPE_CHECKING:
    from meridian.server.config import Pkcs11Config
    from meridian.server.domain.crypto.rootkey_pkcs11 import Pkcs11RootKeyProvider

_EXIT_FAILED = 1
_EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "hsm",
        help="set up and check a PKCS#11 root key (HSM, SoftHSM2)",
        description="Set up and check a region root key that lives in a PKCS#11 token.",
    )
    commands = parser.add_subparsers(dest="hsm_command", metavar="COMMAND")
    commands.required = True

    init = commands.add_parser(
        "init",
        help="create a SoftHSM2 token and its root key in a folder (development)",
        description=(
            "Create a SoftHSM2 token in DIR (config, token files, random user and SO PINs in "
            "0600 files), generate the non-extractable AES-256 root key inside it, and print "
            "the [root_key] table for the node config. Running it again is harmless."
        ),
    )
    init.add_argument("--dir", required=True, type=Path, help="folder for the token")
    init.add_argument("--token-label", default=softhsm.TOKEN_LABEL_DEFAULT)
    init.add_argument("--key-label", default=softhsm.KEY_LABEL_DEFAULT)
    init.add_argument("--module", help="SoftHSM2's PKCS#11 module (found if not given)")
    init.set_defaults(func=_init)

    check = commands.add_parser(
        "check",
        help="connect to the node config's PKCS#11 root key and test it",
        description=(
            "Connect to the PKCS#11 token named in the node config as the node would (module, "
            "token, PIN, key), run a wrap/unwrap round trip with every mechanism the token "
            "offers, and print what the node will use. Creates nothing unless --create-key."
        ),
    )
    check.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    check.add_argument(
        "--create-key",
        action="store_true",
        help="generate the root key in the token if it has none by that label",
    )
    check.set_defaults(func=_check)


def _init(args: argparse.Namespace) -> int:
    from meridian.server.config import Pkcs11Config
    from meridian.server.domain.crypto.rootkey import RootKeyError

    try:
        token = softhsm.init_token(
            args.dir, token_label=args.token_label, key_label=args.key_label, module=args.module
        )
    except softhsm.SoftHsmError as error:
        return _fail("init", str(error))
    root_key = token.root_key_config()
    config = Pkcs11Config(
        module=token.module,
        token_label=token.token_label,
        key_label=token.key_label,
        pin_file=token.user_pin_file,
        module_env=tuple(root_key["module_env"].items()),
    )
    _quiet_logs()
    try:
        provider = asyncio.run(_open_and_close(config, create_key=True))
    except RootKeyError as error:
        return _fail("init", str(error))
    state = "generated" if provider.key_created else "found"
    print(f"token {token.token_label!r} in {token.directory}; root key {token.key_label!r} {state}")
    print(f"mechanism: {provider.mechanism}")
    print("\n# the node config's root key:")
    print(tomli_w.dumps({"root_key": root_key}), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from meridian.server.config import ConfigError, load_config
    from meridian.server.domain.crypto.rootkey import RootKeyError

    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail("check", str(error), _EXIT_USAGE)
    candidates = [config.root_key, config.root_key.previous]
    pkcs11 = next((c.pkcs11 for c in candidates if c is not None and c.pkcs11), None)
    if pkcs11 is None:
        return _fail("check", "the config names no pkcs11 root key", _EXIT_USAGE)
    _quiet_logs()
    try:
        provider = asyncio.run(_open_and_close(pkcs11, create_key=args.create_key))
    except RootKeyError as error:
        return _fail("check", str(error))
    print(f"module:     {pkcs11.module} ({provider.library})")
    print(f"token:      {pkcs11.token_label!r} serial {provider.token_serial} ({provider.model})")
    state = "generated now" if provider.key_created else "found"
    print(f"root key:   {pkcs11.key_label!r} id {provider.key_id or '-'} ({state})")
    print(f"mechanisms: {', '.join(provider.offered) or 'none'} offered")
    print(f"node uses:  {provider.mechanism} (wrap/unwrap round trip passed)")
    return 0


class _Opened:
    """What an opened provider showed, kept after it is closed."""

    def __init__(self, provider: Pkcs11RootKeyProvider) -> None:
        info = provider.info
        self.library: str = info.library
        self.token_serial: str = info.token_serial
        self.model: str = info.token_model
        self.key_id: str = info.key_id
        self.key_created: bool = info.key_created
        self.offered = sorted({mechanism.config_name for mechanism in info.mechanisms})
        self.mechanism: str = provider.mechanism.config_name


async def _open_and_close(config: Pkcs11Config, *, create_key: bool) -> _Opened:
    from meridian.server.rootkeys import open_pkcs11

    provider = await open_pkcs11(config, create_key=create_key)
    try:
        return _Opened(provider)
    finally:
        await provider.aclose()


def _quiet_logs() -> None:
    from meridian.server.logging import configure_logging

    # The provider logs at info for a node; on the command line the output says it all.
    configure_logging("warning", region="cli")


def _fail(command: str, message: str, code: int = _EXIT_FAILED) -> int:
    print(f"meridian hsm {command}: {message}", file=sys.stderr)
    return code
