"""SoftHSM2 tokens in a folder of their own, for development, tests and the local cluster.

SoftHSM2 is a software PKCS#11 token; Meridian uses it to run the real PKCS#11 code path
without hardware. ``init_token(DIR, token_label=L)`` lays out:

    DIR/softhsm2.conf   SoftHSM2's config (SOFTHSM2_CONF), pointing at DIR/tokens
    DIR/tokens/         the tokens' files (mode 0700)
    DIR/L.user.pin      token L's user PIN, the one a node logs in with (0600)
    DIR/L.so.pin        token L's security officer PIN (0600)
    DIR/L.token         written last: token L is complete

One folder can hold several tokens (the local cluster keeps one token per HSM region in
one folder). They share one SOFTHSM2_CONF, which matters because a process loads a
PKCS#11 module, and reads its configuration, only once: a process that opens several
regions' root keys (the cluster manager does, to create their access keys) can reach all
of them only if they are behind one configuration.

Generating the root key inside a token is the PKCS#11 provider's job (``meridian hsm
init`` asks it to, so does a node's first start). Every failure is a
:class:`SoftHsmError` whose message says what to do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meridian.cli import pki

CONF_NAME = "softhsm2.conf"
TOKENS_NAME = "tokens"
TOKEN_LABEL_DEFAULT = "meridian"  # noqa: S105 (a label, not a secret)
KEY_LABEL_DEFAULT = "meridian-root-key"
_UTIL_TIMEOUT_S = 60.0

# Where distributions install the module (Debian's first); `module_path` picks the first.
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
INSTALL_HINT = "install SoftHSM2 (Debian/Ubuntu: apt-get install softhsm2)"


class SoftHsmError(Exception):
    """SoftHSM2 is missing or the token cannot be made; the message says what to do."""


@dataclass(frozen=True)
class SoftHsmToken:
    directory: Path
    module: str
    token_label: str
    key_label: str

    @property
    def conf(self) -> Path:
        return self.directory / CONF_NAME

    @property
    def user_pin_file(self) -> Path:
        return self.directory / f"{self.token_label}.user.pin"

    @property
    def so_pin_file(self) -> Path:
        return self.directory / f"{self.token_label}.so.pin"

    @property
    def marker(self) -> Path:
        return self.directory / f"{self.token_label}.token"

    def root_key_config(self) -> dict[str, Any]:
        """The node config's ``[root_key]`` table for this token (absolute paths)."""
        return {
            "provider": "pkcs11",
            "module": self.module,
            "token_label": self.token_label,
            "key_label": self.key_label,
            "pin_file": str(self.user_pin_file),
            "module_env": {"SOFTHSM2_CONF": str(self.conf)},
        }


def module_path() -> str | None:
    """SoftHSM2's PKCS#11 module on this machine, or None if it is not installed."""
    return next((path for path in MODULE_CANDIDATES if os.path.isfile(path)), None)


def util_path() -> str | None:
    return shutil.which("softhsm2-util")


def available() -> str | None:
    """None if SoftHSM2 can be used here; otherwise why not."""
    if module_path() is None:
        return f"SoftHSM2's PKCS#11 module is not installed; {INSTALL_HINT}"
    if util_path() is None:
        return f"softhsm2-util is not installed; {INSTALL_HINT}"
    return None


def existing_token(directory: Path, token_label: str) -> SoftHsmToken | None:
    """Token `token_label` as `init_token` made it in `directory`, if it is complete."""
    marker = SoftHsmToken(directory, "", token_label, "").marker
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return SoftHsmToken(
        directory=directory,
        module=fields["module"],
        token_label=fields["token_label"],
        key_label=fields["key_label"],
    )


def init_token(
    directory: Path,
    *,
    token_label: str = TOKEN_LABEL_DEFAULT,
    key_label: str = KEY_LABEL_DEFAULT,
    module: str | None = None,
) -> SoftHsmToken:
    """Create token `token_label` in `directory` once, with random PINs in its PIN files.

    softhsm2-util takes PINs only on its command line, where other local users could see
    them for a moment; so the token is made with throwaway PINs and the real ones are
    set through PKCS#11. That loads SoftHSM2 into this process with SOFTHSM2_CONF
    pointing at `directory`, so call it from a process of its own (`meridian hsm init`
    is one). Calling it again for a finished token returns that token.
    """
    directory = directory.resolve()
    token = existing_token(directory, token_label)
    if token is not None:
        if token.key_label != key_label:
            raise SoftHsmError(
                f"token {token_label!r} in {directory} already has the root key "
                f"{token.key_label!r}, not {key_label!r}"
            )
        return token
    problem = available()
    if problem is not None:
        raise SoftHsmError(problem)
    module = module or module_path()
    util = util_path()
    assert module is not None
    assert util is not None
    if not 1 <= len(token_label.encode()) <= 32 or "/" in token_label:
        raise SoftHsmError("a token label is 1 to 32 bytes, without '/'")
    token = SoftHsmToken(directory, module, token_label, key_label)
    _prepare_directory(token, util)
    throwaway_so_pin = secrets.token_hex(8)
    _run_util(util, token.conf, ["--init-token", "--free", "--label", token_label,
              "--so-pin", throwaway_so_pin, "--pin", secrets.token_hex(8)])  # fmt: skip
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    try:
        from meridian.server.domain.crypto import pkcs11_token
    except ImportError as error:
        raise SoftHsmError(
            f"python-pkcs11 is missing ({error}): pip install 'meridian-kms[hsm]'"
        ) from None
    try:
        pkcs11_token.set_pins(
            module,
            token_label,
            old_so_pin=throwaway_so_pin,
            so_pin=read_pin(token.so_pin_file),
            user_pin=read_pin(token.user_pin_file),
        )
    except pkcs11_token.TokenSetupError as error:
        raise SoftHsmError(str(error)) from None
    # Written last: its presence means the token is complete, with the PINs in the files.
    marker = f"module={module}\ntoken_label={token_label}\nkey_label={key_label}\n"
    pki.write_atomic(token.marker, marker.encode(), mode=0o600, overwrite=True)
    return token


def _prepare_directory(token: SoftHsmToken, util: str) -> None:
    """The shared config and token folder, and this token's PIN files.

    A token left half-made by an interrupted run (no marker) is deleted first, so that
    the label stays unique.
    """
    directory = token.directory
    tokens = directory / TOKENS_NAME
    try:
        tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        if not token.conf.exists():
            conf = (
                "# SoftHSM2 config written by `meridian hsm init`\n"
                f"directories.tokendir = {tokens}\n"
                "objectstore.backend = file\n"
                "log.level = ERROR\n"
                "slots.removable = false\n"
            )
            pki.write_atomic(token.conf, conf.encode(), mode=0o600, overwrite=True)
        for path in (token.user_pin_file, token.so_pin_file):
            pin = secrets.token_hex(16) + "\n"
            pki.write_atomic(path, pin.encode(), mode=0o600, overwrite=True)
    except OSError as error:
        raise SoftHsmError(f"cannot prepare {directory}: {error}") from error
    # Usually there is no such token, and softhsm2-util says so: that is fine.
    with contextlib.suppress(SoftHsmError):
        _run_util(util, token.conf, ["--delete-token", "--token", token.token_label])


def _run_util(util: str, conf: Path, arguments: list[str]) -> None:
    environment = dict(os.environ, SOFTHSM2_CONF=str(conf))
    try:
        subprocess.run(
            [util, *arguments],
            env=environment,
            check=True,
            capture_output=True,
            timeout=_UTIL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as error:
        output = (error.stdout + error.stderr).decode(errors="replace").strip()
        raise SoftHsmError(f"softhsm2-util {arguments[0]} failed: {output}") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SoftHsmError(f"softhsm2-util {arguments[0]} failed: {error}") from None


def read_pin(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()
