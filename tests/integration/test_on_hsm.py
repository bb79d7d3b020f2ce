"""The key-file provider's integration tests, again, on a node whose root key is in SoftHSM2.

Issue 11's bar: "a node runs with its root key in SoftHSM2 through the same tests as the
key-file provider". The tests are imported unchanged; only ``running_node`` is replaced,
by a node whose ``[root_key]`` is a fresh key in the session's SoftHSM2 token (the
fixture defined here takes precedence over conftest's for every test in this module).
Without SoftHSM2 they skip, saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hsm_support import hsm_node
from test_aliases_and_tags import *  # noqa: F403
from test_crypto_operations import *  # noqa: F403
from test_deletion_sweeper import *  # noqa: F403
from test_key_management import *  # noqa: F403
from test_secrets_at_rest import *  # noqa: F403
from test_smoke import *  # noqa: F403


@pytest.fixture
async def running_node(test_pki, tmp_path, softhsm) -> AsyncIterator:
    async with hsm_node(test_pki, tmp_path / "data", softhsm) as running:
        assert running.node.root_keys is not None
        assert running.node.root_keys.name == "pkcs11"
        yield running
