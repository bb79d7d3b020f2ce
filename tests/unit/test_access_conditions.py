"""Condition operators and their IAM semantics, each with positive and negative cases.

Every base operator is exercised with a matching and a non-matching value, with the key
absent, in its ``...IfExists`` form and, for multi-valued keys, under
``ForAnyValue:``/``ForAllValues:``.
"""

from __future__ import annotations

import pytest

from meridian.server.domain.access.condition_keys import ConditionContext
from meridian.server.domain.access.conditions import (
    ConditionSyntaxError,
    compile_condition,
    operator_names,
)
from meridian.server.domain.access.wildcards import Wildcard

KEY = "kms:EncryptionContext:tenant"


def holds(
    operator: str, values: list[str], request: str | list[str] | None, key: str = KEY
) -> bool:
    context = ConditionContext()
    context.set(key, request)
    return compile_condition(operator, key, values).holds(context)


# (operator, policy values, request value that matches, request value that does not)
CASES = [
    ("StringEquals", ["acme"], "acme", "Acme"),
    ("StringNotEquals", ["acme"], "other", "acme"),
    ("StringEqualsIgnoreCase", ["ACME"], "acme", "acme2"),
    ("StringNotEqualsIgnoreCase", ["ACME"], "other", "Acme"),
    ("StringLike", ["ac*e?"], "acmeX", "acme"),
    ("StringNotLike", ["ac*"], "bcme", "acme"),
    ("NumericEquals", ["30"], "30.0", "31"),
    ("NumericNotEquals", ["30"], "7", "30"),
    ("NumericLessThan", ["30"], "29", "30"),
    ("NumericLessThanEquals", ["30"], "30", "31"),
    ("NumericGreaterThan", ["30"], "31", "30"),
    ("NumericGreaterThanEquals", ["30"], "30", "29"),
    ("DateEquals", ["2026-01-01T00:00:00Z"], "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00Z"),
    ("DateNotEquals", ["2026-01-01T00:00:00Z"], "2026-01-02T00:00:00Z", "1767225600"),
    ("DateLessThan", ["2026-01-01T00:00:00Z"], "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"),
    ("DateLessThanEquals", ["2026-01-01"], "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
    ("DateGreaterThan", ["2026-01-01T00:00:00Z"], "2026-06-01T00:00:00Z", "2025-06-01T00:00:00Z"),
    ("DateGreaterThanEquals", ["1767225600"], "2026-01-01T00:00:00Z", "2025-12-31T00:00:00Z"),
    ("Bool", ["true"], "true", "false"),
    ("IpAddress", ["10.0.0.0/8"], "10.1.2.3", "11.1.2.3"),
    ("NotIpAddress", ["10.0.0.0/8"], "192.168.1.1", "10.0.0.1"),
    (
        "ArnEquals",
        ["arn:meridian:iam::111122223333:user/bob"],
        "arn:meridian:iam::111122223333:user/bob",
        "arn:meridian:iam::111122223333:user/eve",
    ),
    (
        "ArnLike",
        ["arn:meridian:iam::111122223333:user/app-*"],
        "arn:meridian:iam::111122223333:user/app-1",
        "arn:meridian:iam::111122223333:user/bob",
    ),
    (
        "ArnNotEquals",
        ["arn:meridian:iam::111122223333:user/bob"],
        "arn:meridian:iam::111122223333:user/eve",
        "arn:meridian:iam::111122223333:user/bob",
    ),
    (
        "ArnNotLike",
        ["arn:meridian:iam::*:user/app-*"],
        "arn:meridian:iam::111122223333:user/bob",
        "arn:meridian:iam::111122223333:user/app-2",
    ),
]
NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "NumericNotEquals",
    "DateNotEquals",
    "NotIpAddress",
    "ArnNotEquals",
    "ArnNotLike",
}


def test_every_operator_has_cases() -> None:
    assert {case[0] for case in CASES} | {"Null"} == set(operator_names())


@pytest.mark.parametrize(("operator", "values", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_operator_matches_and_refuses(
    operator: str, values: list[str], good: str, bad: str
) -> None:
    assert holds(operator, values, good)
    assert not holds(operator, values, bad)


@pytest.mark.parametrize(("operator", "values", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_absent_key(operator: str, values: list[str], good: str, bad: str) -> None:
    # IAM: a positive operator on an absent key is false, a negated one true.
    assert holds(operator, values, None) is (operator in NEGATED)


@pytest.mark.parametrize(("operator", "values", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_if_exists_forms(operator: str, values: list[str], good: str, bad: str) -> None:
    name = operator + "IfExists"
    assert holds(name, values, None)
    assert holds(name, values, good)
    assert not holds(name, values, bad)


def test_any_listed_value_may_match() -> None:
    assert holds("StringEquals", ["a", "b", "c"], "b")
    # ...and a negated operator needs the request to match none of them.
    assert not holds("StringNotEquals", ["a", "b"], "b")
    assert holds("StringNotEquals", ["a", "b"], "c")


def test_null() -> None:
    assert holds("Null", ["true"], None)
    assert not holds("Null", ["true"], "x")
    assert holds("Null", ["false"], "x")
    assert not holds("Null", ["false"], None)
    assert holds("Null", ["true"], [], key="kms:EncryptionContextKeys")


def test_for_any_value() -> None:
    key = "kms:EncryptionContextKeys"
    assert holds("ForAnyValue:StringEquals", ["tenant"], ["tenant", "app"], key=key)
    assert not holds("ForAnyValue:StringEquals", ["tenant"], ["app"], key=key)
    assert not holds("ForAnyValue:StringEquals", ["tenant"], None, key=key)
    assert not holds("ForAnyValue:StringEquals", ["tenant"], [], key=key)
    assert holds("ForAnyValue:StringNotEquals", ["tenant"], ["tenant", "app"], key=key)
    assert not holds("ForAnyValue:StringNotEquals", ["tenant"], ["tenant"], key=key)
    assert holds("ForAnyValue:StringLike", ["ten*"], ["tenant"], key=key)


def test_for_all_values() -> None:
    key = "kms:EncryptionContextKeys"
    assert holds("ForAllValues:StringEquals", ["tenant", "app"], ["tenant"], key=key)
    assert not holds("ForAllValues:StringEquals", ["tenant"], ["tenant", "app"], key=key)
    # IAM: true for an absent or empty set (which is why policies pair it with Null).
    assert holds("ForAllValues:StringEquals", ["tenant"], None, key=key)
    assert holds("ForAllValues:StringEquals", ["tenant"], [], key=key)
    assert holds("ForAllValues:StringNotEquals", ["secret"], ["tenant", "app"], key=key)
    assert not holds("ForAllValues:StringNotEquals", ["secret"], ["secret", "app"], key=key)


def test_qualified_if_exists() -> None:
    key = "kms:GrantOperations"
    assert holds("ForAllValues:StringEqualsIfExists", ["Decrypt"], None, key=key)
    assert not holds("ForAllValues:StringEqualsIfExists", ["Decrypt"], ["Encrypt"], key=key)


def test_multi_valued_key_without_qualifier_behaves_as_any() -> None:
    key = "kms:EncryptionContextKeys"
    assert holds("StringEquals", ["tenant"], ["app", "tenant"], key=key)
    assert not holds("StringNotEquals", ["tenant"], ["app", "tenant"], key=key)


def test_ipv6_and_single_addresses() -> None:
    assert holds("IpAddress", ["::1"], "::1")
    assert holds("IpAddress", ["2001:db8::/32"], "2001:db8::5")
    assert not holds("IpAddress", ["10.0.0.0/8"], "::1")
    assert not holds("IpAddress", ["10.0.0.0/8"], "not an address")


def test_unparseable_request_values_never_match() -> None:
    assert not holds("NumericLessThan", ["5"], "five")
    assert not holds("DateLessThan", ["2026-01-01"], "yesterday")
    assert not holds("ArnLike", ["arn:meridian:iam::*:user/*"], "bob")


@pytest.mark.parametrize(
    ("operator", "values", "message"),
    [
        ("StringEqualz", ["a"], "Unknown condition operator 'StringEqualz'"),
        ("NumericLessThan", ["ten"], "requires numeric values; 'ten' is not a number"),
        ("DateLessThan", ["soon"], "requires dates"),
        ("Bool", ["yes"], "requires true or false"),
        ("IpAddress", ["10.0.0.0/33"], "IP addresses or CIDR ranges"),
        ("ArnLike", ["bob"], "requires ARN values"),
        ("Null", ["maybe"], "Null requires true or false"),
        ("ForAnyValue:Null", ["true"], "is not valid"),
        ("NullIfExists", ["true"], "is not valid"),
        ("StringEquals", [], "at least one value"),
        ("IfExists", ["a"], "Unknown condition operator"),
    ],
)
def test_bad_conditions_say_why(operator: str, values: list[str], message: str) -> None:
    with pytest.raises(ConditionSyntaxError, match=message.replace("(", r"\(")):
        compile_condition(operator, KEY, values)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("*", "", True),
        ("*", "anything", True),
        ("a*", "a", True),
        ("a*c", "abbbc", True),
        ("a*c", "abbbd", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("*b*", "abc", True),
        ("*b*b*", "abc", False),
        ("a*b?d*e", "axxbcdyye", True),
        ("a*b?d*e", "axxbcdyy", False),
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("?*", "", False),
        ("a**b", "ab", True),
    ],
)
def test_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert Wildcard.compile(pattern).matches(value) is expected


def test_wildcards_ignoring_case() -> None:
    assert Wildcard.compile("kms:Generate*", ignore_case=True).matches("KMS:GENERATEDATAKEY")
    assert not Wildcard.compile("kms:Generate*").matches("kms:generateDataKey")


def test_hostile_wildcards_stay_linear() -> None:
    # A regex of many '.*' would backtrack for ages on this; the segment matcher does not.
    pattern = Wildcard.compile("*a" * 2000 + "*b")
    assert not pattern.matches("a" * 5000)
    assert pattern.matches("a" * 5000 + "b")
