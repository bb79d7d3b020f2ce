"""Builds the region's root key providers from the node configuration.

Used by the composition root (``node.py``), by ``meridian node rewrap-root`` and by
``meridian hsm``; each failure is a RootKeyError whose message tells the operator what
to fix (docs/hsm.md lists them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from meridian.server.config import Pkcs11Config, RootKeyConfig
from meridian.server.domain.crypto.rootkey import (
    FileRootKeyProvider,
    RootKeyError,
    RootKeyProvider,
)
from meridian.server.domain.crypto.rootkey_ring import Closer, RootKeyRing

if TYPE_CHECKING:
    from meridian.server.domain.crypto.rootkey_pkcs11 import Pkcs11RootKeyProvider

# A PIN file holds one line; anything longer is not a PIN file.
_PIN_FILE_BYTES_MAX = 1024


async def open_root_keys(
    config: RootKeyConfig, *, randbytes: Callable[[int], bytes] = os.urandom
) -> RootKeyRing:
    """The current provider (created if new) and the previous one (which must exist)."""
    closers: list[Closer] = []
    try:
        current = await _open(config, create=True, randbytes=randbytes, closers=closers)
        previous = None
        if config.previous is not None:
            previous = await _open(
                config.previous, create=False, randbytes=randbytes, closers=closers
            )
        return RootKeyRing(current, previous, closers=closers)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise


async def open_pkcs11(
    config: Pkcs11Config,
    *,
    create_key: bool = True,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> Pkcs11RootKeyProvider:
    """Connect to the configured token; RootKeyError says what is wrong if it cannot."""
    try:
        # Imported here: python-pkcs11 is an optional extra, needed only by this provider.
        from meridian.server.domain.crypto.pkcs11_token import Pkcs11Token, TokenSettings
        from meridian.server.domain.crypto.rootkey_pkcs11 import Pkcs11RootKeyProvider
    except ImportError as error:
        raise RootKeyError(
            f"the pkcs11 root key provider needs python-pkcs11 ({error}); install it with "
            "pip install 'meridian-kms[hsm]'"
        ) from None
    apply_module_env(config)
    token = Pkcs11Token(
        TokenSettings(
            module=config.module,
            token_label=config.token_label,
            key_label=config.key_label,
            pin=read_pin(config),
            create_key=create_key,
        )
    )
    return await Pkcs11RootKeyProvider.open(
        token,
        mechanism=config.mechanism,
        timeout_s=config.timeout_ms / 1000,
        randbytes=randbytes,
    )


def read_pin(config: Pkcs11Config) -> str:
    if config.pin_env is not None:
        pin = os.environ.get(config.pin_env)
        if not pin:
            raise RootKeyError(
                f"environment variable {config.pin_env} (root_key.pin_env) is not set; it "
                "must hold the token's user PIN"
            )
        return pin
    assert config.pin_file is not None
    path = config.pin_file
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_mode & 0o077:
                raise RootKeyError(
                    f"PIN file {path} is accessible to group or others (chmod 600 {path})"
                )
            contents = file.read(_PIN_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise RootKeyError(f"cannot read PIN file {path}: {error.strerror}") from None
    pin = contents.decode("utf-8", "replace").strip()
    if not pin or len(contents) > _PIN_FILE_BYTES_MAX:
        raise RootKeyError(f"PIN file {path} does not hold a PIN")
    return pin


def apply_module_env(config: Pkcs11Config) -> None:
    """Set the variables the module reads when it loads (SOFTHSM2_CONF, a vendor's config).

    They override what the process inherited, since the config is the more specific
    source. A module reads them once, when a process first loads it; the node loads it
    once, at start.
    """
    for name, value in config.module_env:
        os.environ[name] = value


async def _open(
    config: RootKeyConfig,
    *,
    create: bool,
    randbytes: Callable[[int], bytes],
    closers: list[Closer],
) -> RootKeyProvider:
    if config.provider == "file":
        return _open_file(config.path, create=create, randbytes=randbytes)
    assert config.pkcs11 is not None
    provider = await open_pkcs11(config.pkcs11, create_key=create, randbytes=randbytes)
    closers.append(provider.aclose)
    return provider


def _open_file(
    path: Path, *, create: bool, randbytes: Callable[[int], bytes]
) -> FileRootKeyProvider:
    # A previous root key is only read: creating a new one would wrap nothing and hide
    # the real mistake (a wrong path).
    if not create and not path.is_file():
        raise RootKeyError(f"previous root key file {path} does not exist")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RootKeyError(f"cannot create {path.parent}: {error.strerror}") from None
    return FileRootKeyProvider.open_or_create(path, randbytes=randbytes)
