"""SoftHSM2 for the PKCS#11 root key tests (a pytest plugin, listed in conftest.py).

A PKCS#11 module reads its configuration once, when a process first loads it, and sees
only the tokens that existed then. So the test process gets one SoftHSM2 folder for the
whole session, made before anything loads the module: a token with the root key that
``meridian hsm init`` generates, plus a second token for the wrong-PIN test (a process that
is logged in to a token stays logged in, whatever PIN a new session offers). Tests keep
apart by key label: each in-process node gets a fresh label, and so a fresh root key.

Without SoftHSM2 or python-pkcs11 every test that needs them is skipped, saying why;
scripts/bootstrap installs both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from meridian.cli import softhsm as softhsm_tools
from meridian.server.config import Pkcs11Config, RootKeyConfig

if TYPE_CHECKING:
    from meridian.server.domain.crypto.pkcs11_token import (
        Pkcs11Token,
        TokenInfo,
        WrapMechanism,
    )

TOKEN_LABEL = "meridian-test"
PIN_TEST_TOKEN_LABEL = "meridian-pin-test"
PIN_TEST_PIN = "correct-pin-1234"
KEY_LABEL = softhsm_tools.KEY_LABEL_DEFAULT
PIN_ENV = "MERIDIAN_TEST_HSM_PIN"


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("pkcs11") is None:
        return "python-pkcs11 is not installed (pip install -e '.[dev]' installs it)"
    problem = softhsm_tools.available()
    if problem is not None:
        return f"{problem}; scripts/bootstrap installs it"
    return None


@dataclass(frozen=True)
class SoftHsm:
    directory: Path
    module: str
    user_pin_file: Path

    @property
    def conf(self) -> Path:
        return self.directory / softhsm_tools.CONF_NAME

    def pkcs11_config(self, key_label: str | None = None, **changes: object) -> Pkcs11Config:
        """A Pkcs11Config for the session token; a new key label unless one is given."""
        config = Pkcs11Config(
            module=self.module,
            token_label=TOKEN_LABEL,
            key_label=key_label or f"test-{uuid.uuid4().hex[:12]}",
            pin_file=self.user_pin_file,
        )
        return dataclasses.replace(config, **changes)

    def root_key_config(
        self, data_dir: Path, key_label: str | None = None, **changes: object
    ) -> RootKeyConfig:
        return RootKeyConfig(
            provider="pkcs11",
            path=data_dir / "root.key",
            pkcs11=self.pkcs11_config(key_label, **changes),
        )


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("softhsm")
    # `meridian hsm init` runs in a process of its own, as it must (it loads the module).
    subprocess.run(
        [sys.executable, "-m", "meridian", "hsm", "init", "--dir", str(directory),
         "--token-label", TOKEN_LABEL],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    token = softhsm_tools.existing_token(directory, TOKEN_LABEL)
    assert token is not None
    environment = dict(os.environ, SOFTHSM2_CONF=str(token.conf))
    subprocess.run(
        [softhsm_tools.util_path() or "softhsm2-util", "--init-token", "--free", "--label",
         PIN_TEST_TOKEN_LABEL, "--so-pin", "so-pin-1234", "--pin", PIN_TEST_PIN],
        env=environment, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    try:
        yield SoftHsm(directory=directory, module=token.module, user_pin_file=token.user_pin_file)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@asynccontextmanager
async def hsm_node(test_pki, data_dir: Path, softhsm: SoftHsm, **changes: object) -> AsyncIterator:
    """An in-process node (conftest.RunningNode) whose root key is a new key in SoftHSM2."""
    from conftest import RunningNode, node_config, secure_channel
    from meridian.proto.kms.v1 import kms_pb2_grpc
    from meridian.server.domain.clock import FakeClock
    from meridian.server.node import Node

    config = dataclasses.replace(
        node_config(test_pki, data_dir), root_key=softhsm.root_key_config(data_dir, **changes)
    )
    clock = FakeClock()
    node = Node(config=config, clock=clock)
    port = await node.start()
    endpoint = f"127.0.0.1:{port}"
    channel = secure_channel(test_pki, endpoint)
    try:
        yield RunningNode(
            node=node,
            clock=clock,
            channel=channel,
            stub=kms_pb2_grpc.KeyManagementServiceStub(channel),
            endpoint=endpoint,
        )
    finally:
        await channel.close()
        await node.stop()


class GatedToken:
    """The real token behind a gate: while the gate is shut, every call blocks."""

    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token
        self.open = threading.Event()
        self.open.set()
        self.calls = 0
        self.failure: Exception | None = None

    def _through(self, call: Callable[[], Any]) -> Any:
        self.open.wait()
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return call()

    def connect(self) -> TokenInfo:
        return self._through(self.token.connect)

    def encrypt_gcm(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._through(lambda: self.token.encrypt_gcm(nonce, plaintext, aad))

    def decrypt_gcm(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        return self._through(lambda: self.token.decrypt_gcm(nonce, ciphertext, aad))

    def wrap_pad(self, mechanism: WrapMechanism, plaintext: bytes) -> bytes:
        return self._through(lambda: self.token.wrap_pad(mechanism, plaintext))

    def unwrap_pad(self, mechanism: WrapMechanism, wrapped: bytes) -> bytes:
        return self._through(lambda: self.token.unwrap_pad(mechanism, wrapped))

    def close(self) -> None:
        self.open.set()  # never leave the worker blocked at shutdown
        self.token.close()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` (a deadline, not a pace)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


def gated_token(softhsm: SoftHsm, key_label: str | None = None) -> GatedToken:
    """A gate in front of a real token (a fresh key unless ``key_label`` is given)."""
    from meridian.server.domain.crypto.pkcs11_token import Pkcs11Token, TokenSettings

    config = softhsm.pkcs11_config(key_label)
    return GatedToken(
        Pkcs11Token(
            TokenSettings(
                module=config.module,
                token_label=config.token_label,
                key_label=config.key_label,
                pin=softhsm.user_pin_file.read_text().strip(),
            )
        )
    )
