"""Parsing policy documents: what is accepted, and precise refusals for what is not."""

from __future__ import annotations

import json

import pytest

from meridian.server.domain.access.policy import (
    POLICY_BYTES_MAX,
    Effect,
    PolicyKind,
    PrincipalMatch,
    parse_identity_policy,
    parse_key_policy,
    parse_policy,
)
from meridian.server.domain.errors import (
    LimitExceededException,
    MalformedPolicyDocumentException,
)
from meridian.server.domain.validation import default_key_policy, validate_policy_document

ACCOUNT = "111122223333"
BOB = f"arn:meridian:iam::{ACCOUNT}:user/bob"


def key_policy(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(**extra: object) -> dict[str, object]:
    statement: dict[str, object] = {
        "Effect": "Allow",
        "Principal": {"AWS": BOB},
        "Action": "kms:Encrypt",
        "Resource": "*",
    }
    statement.update(extra)
    return statement


def test_the_default_key_policy_delegates_to_the_account() -> None:
    policy = parse_key_policy(default_key_policy(ACCOUNT))
    (statement,) = policy.statements
    assert statement.sid == "Enable IAM User Permissions"
    assert statement.effect is Effect.ALLOW
    assert statement.principal_match(BOB, ACCOUNT) is PrincipalMatch.ACCOUNT
    assert statement.principal_match("arn:meridian:iam::999999999999:user/x", "999999999999") is (
        PrincipalMatch.NONE
    )
    assert statement.action_matches("kms:Decrypt")
    assert not statement.action_matches("iam:PutUserPolicy")


def test_a_full_statement() -> None:
    policy = parse_key_policy(
        key_policy(
            {
                "Sid": "TenantOnly",
                "Effect": "Deny",
                "NotPrincipal": {"AWS": [BOB, ACCOUNT]},
                "NotAction": ["kms:Describe*", "kms:Get*"],
                "NotResource": "arn:meridian:kms:*:*:key/other",
                "Condition": {
                    "StringEquals": {"kms:EncryptionContext:tenant": ["a", "b"]},
                    "Bool": {"kms:MultiRegion": False},
                    "NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": 10},
                },
            }
        )
    )
    (statement,) = policy.statements
    assert statement.not_principal and statement.not_action and statement.not_resource
    assert statement.principal_match(BOB, ACCOUNT) is PrincipalMatch.NONE
    assert statement.principal_match("arn:meridian:iam::444455556666:user/x", "444455556666") is (
        PrincipalMatch.DIRECT
    )
    assert not statement.action_matches("kms:DescribeKey")
    assert statement.action_matches("kms:Encrypt")
    assert [c.values for c in statement.conditions] == [("a", "b"), ("false",), ("10",)]
    assert policy.condition_keys == {
        "kms:encryptioncontext:tenant",
        "kms:multiregion",
        "kms:schedulekeydeletionpendingwindowindays",
    }


def test_single_statement_object_and_string_lists() -> None:
    document = json.dumps({"Statement": allow(Action=["kms:Encrypt", "kms:Decrypt"])})
    assert len(parse_key_policy(document).statements) == 1


def test_actions_are_case_insensitive() -> None:
    (statement,) = parse_key_policy(key_policy(allow(Action="KMS:encrypt"))).statements
    assert statement.action_matches("kms:Encrypt")


def test_identity_policies_name_no_principal() -> None:
    document = json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:Get*"], "Resource": "*"}]}
    )
    (statement,) = parse_identity_policy(document).statements
    assert statement.principals is None
    assert statement.principal_match(BOB, ACCOUNT) is PrincipalMatch.DIRECT


MALFORMED = [
    ("not json", "is not valid JSON: Expecting value at line 1 column 1"),
    ("[]", "must be a JSON object"),
    ("{}", "must have a Statement"),
    ('{"Statement": []}', "Statement must be an object or a non-empty list"),
    ('{"Statement": [1]}', r"Statement\[0\] must be a JSON object"),
    ('{"Statement": {}, "Extra": 1}', "unknown element 'Extra'"),
    ('{"Version": "2020-01-01", "Statement": {}}', "Version must be one of"),
    ('{"Id": 5, "Statement": {}}', "Id must be a string"),
    ('{"Statement": {}, "Statement": {}}', "has the JSON key 'Statement' twice"),
    (key_policy(allow(Effect="Permit")), r"Statement\[0\].Effect must be Allow or Deny"),
    (key_policy(allow(Sid=7)), "Sid must be a string"),
    (key_policy(allow(Colour="red")), "unknown element 'Colour'"),
    (key_policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}), "must have Principal"),
    (key_policy(allow(NotPrincipal="*")), "must not have both Principal and NotPrincipal"),
    (key_policy(allow(Principal={"Service": "s3"})), "principal type 'Service'"),
    (key_policy(allow(Principal="bob")), 'Principal must be "\\*" or an object'),
    (key_policy(allow(Principal={"AWS": "bob"})), "invalid principal 'bob'"),
    (
        key_policy(allow(Principal={"AWS": f"arn:meridian:iam::{ACCOUNT}:user/*"})),
        "wildcards are not allowed in principals",
    ),
    (key_policy(allow(Principal={"AWS": []})), "must not be an empty list"),
    (key_policy(allow(Action="Encrypt")), "invalid action 'Encrypt'"),
    (key_policy(allow(Action="kms:Encrpyt")), "unknown action 'kms:Encrpyt'"),
    (key_policy(allow(Action="s3:GetObject")), "names the service 's3'"),
    (key_policy(allow(Action="iam:PutUserPolicy")), "a key policy may name only kms actions"),
    (key_policy(allow(NotAction="kms:*", Action="kms:*")), "both Action and NotAction"),
    (key_policy(allow(Resource="key/1")), "invalid resource 'key/1'"),
    (key_policy({"Effect": "Allow", "Principal": "*", "Action": "kms:*"}), "must have Resource"),
    (key_policy(allow(Condition=[])), "Condition must be an object of operators"),
    (key_policy(allow(Condition={"StringEquals": {}})), "must be a non-empty object"),
    (
        key_policy(allow(Condition={"StringEquals": {"aws:SourceVpc": "v"}})),
        "unsupported condition key 'aws:SourceVpc'",
    ),
    (
        key_policy(allow(Condition={"StringEqualz": {"kms:KeySpec": "x"}})),
        r"Statement\[0\].Condition.StringEqualz: Unknown condition operator",
    ),
    (
        key_policy(allow(Condition={"StringEquals": {"kms:KeySpec": {"a": 1}}})),
        "must be a string, number, boolean or a non-empty list",
    ),
    (
        key_policy(allow(Condition={"StringEquals": {"kms:KeySpec": []}})),
        "must be a string, number, boolean or a non-empty list",
    ),
    (
        key_policy(allow(Sid="a"), allow(Sid="a")),
        "Statement ids must be unique; 'a' is repeated",
    ),
    ("[" * 30_000, "nested too deeply"),
    ('{"Statement": ' * 2000, "nested too deeply|not valid JSON"),
    ("", "must not be empty"),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_key_policies_say_why(document: str, message: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException, match=message):
        parse_policy(document, PolicyKind.KEY)


def test_identity_policies_refuse_principals() -> None:
    with pytest.raises(MalformedPolicyDocumentException, match="must not name a Principal"):
        parse_identity_policy(key_policy(allow()))


def test_identity_policies_may_name_iam_and_meridian_actions() -> None:
    document = json.dumps(
        {
            "Statement": {
                "Effect": "Allow",
                "Action": ["iam:PutUserPolicy", "meridian:ListAuditRecords"],
                "Resource": "*",
            }
        }
    )
    assert len(parse_identity_policy(document).statements) == 1


def test_the_size_limit() -> None:
    padding = "x" * POLICY_BYTES_MAX
    with pytest.raises(LimitExceededException, match=f"at most {POLICY_BYTES_MAX} bytes"):
        parse_key_policy(key_policy(allow(Sid=padding)))


def test_messages_echo_input_only_in_a_bounded_printable_form() -> None:
    hostile = "\x00\x1b[31m" + "A" * 500
    with pytest.raises(MalformedPolicyDocumentException) as caught:
        parse_key_policy(key_policy(allow(Action=hostile)))
    assert "\x00" not in caught.value.message and "\x1b" not in caught.value.message
    assert len(caught.value.message) < 300


def test_create_key_validation_uses_the_full_parser() -> None:
    with pytest.raises(MalformedPolicyDocumentException, match="Effect must be Allow or Deny"):
        validate_policy_document(key_policy(allow(Effect="allow")))
