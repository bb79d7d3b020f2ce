"""The authorization fact of a record is converted once per fact object
(server/api/audit_documents.py): items of a batch sharing a decision share it, and a
new fact, even one equal in content or built in the same place, is never taken for
the last one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meridian.server.api.audit_documents import CallSubject, api_call_document


def document(facts: dict[str, Any]) -> dict[str, Any]:
    return api_call_document(
        operation="Encrypt",
        request=None,
        response=None,
        error=None,
        principal_arn="arn:meridian:iam::000000000000:user/alice",
        source_address="127.0.0.1",
        request_id="r",
        event_id="e",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        region="us-east-1",
        account_id="000000000000",
        subject=CallSubject(),
        facts=facts,
    )


def fact(decision: str, resource: str) -> dict[str, Any]:
    return {
        "decision": decision,
        "action": "kms:Encrypt",
        "resource": resource,
        "matched": [{"source": "key-policy", "policy": "default", "sid": "s"}],
        "reason": "",
    }


def test_each_record_shows_its_own_decision() -> None:
    allow = fact("allow", "arn:k1")
    deny = fact("deny", "arn:k2")
    seen = [
        document({"authorization": each})["meridian"]["authorization"]
        for each in (allow, allow, deny, allow, fact("allow", "arn:k3"))
    ]
    assert [(item["decision"], item["resource"]) for item in seen] == [
        ("allow", "arn:k1"),
        ("allow", "arn:k1"),
        ("deny", "arn:k2"),
        ("allow", "arn:k1"),
        ("allow", "arn:k3"),
    ]
    # The same fact object (a batch's shared decision) was converted once.
    assert seen[0] is seen[1]


def test_a_fact_is_still_made_json_safe() -> None:
    unsafe = fact("allow", "x" * 40_000)
    unsafe["matched"] = ({"source": "grant", "policy": "g", "sid": "", "secret": "s3"},)
    shown = document({"authorization": unsafe})["meridian"]["authorization"]
    assert len(shown["resource"]) < 40_000  # capped
    assert shown["matched"] == [{"source": "grant", "policy": "g", "sid": ""}]  # a list, no secret
