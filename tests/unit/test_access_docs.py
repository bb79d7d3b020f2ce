"""The policies shown in docs/access-control.md are valid policies (the docs cannot rot)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from meridian.server.domain.access.policy import parse_identity_policy, parse_key_policy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "access-control.md"


def test_every_policy_in_the_documentation_parses() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.DOTALL)
    policies = [block for block in blocks if '"Statement"' in block]
    assert len(policies) >= 3
    for block in policies:
        document = json.loads(block)
        statements = document["Statement"]
        statements = statements if isinstance(statements, list) else [statements]
        if any("Principal" in statement for statement in statements):
            parse_key_policy(block)
        else:
            parse_identity_policy(block)
