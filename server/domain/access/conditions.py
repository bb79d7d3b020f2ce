"""Condition operators: compiled once when a policy is parsed, evaluated per request.

The semantics are IAM's (documented with examples in docs/access-control.md):

- Within one Condition block every operator must hold; within one operator every key;
  within one key *any* of the listed values may match.
- Negated operators (StringNotEquals, NotIpAddress, ArnNotLike, ...) hold when the
  request value matches *none* of the listed values, and hold when the key is absent.
- Positive operators do not hold when the key is absent. ``...IfExists`` holds when the
  key is absent and otherwise is the operator without the suffix. ``Null`` tests
  absence: ``true`` holds when the key is absent, ``false`` when it is present.
- ``ForAnyValue:`` holds when at least one request value satisfies the operator (never
  for an absent or empty key); ``ForAllValues:`` when every request value does (always
  for an absent or empty key). Without a qualifier a multi-valued key behaves as
  ``ForAnyValue:`` for positive operators and as its negation for negated ones.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from meridian.server.domain.access.condition_keys import ConditionContext
from meridian.server.domain.access.wildcards import Wildcard

Matcher = Callable[[str], bool]

# How long one condition value may be; the policy size limit bounds the count.
CONDITION_VALUE_CHARS_MAX = 4096


class ConditionSyntaxError(ValueError):
    """A condition cannot be compiled; the message is shown to the caller as is."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One (operator, key, values) triple of a policy's Condition block."""

    operator: str
    key: str  # lower case
    values: tuple[str, ...]
    _holds: Callable[[tuple[str, ...] | None], bool]

    def holds(self, context: ConditionContext) -> bool:
        return self._holds(context.get(self.key))


@dataclass(frozen=True, slots=True)
class _Base:
    """A base operator: how to read a policy value, and how one request value matches it."""

    make_matcher: Callable[[str, str], Matcher]  # (policy value, operator) -> matcher
    negated: bool


def _string_equals(expected: str, operator: str) -> Matcher:
    return expected.__eq__


def _string_equals_ignore_case(expected: str, operator: str) -> Matcher:
    folded = expected.casefold()
    return lambda value: value.casefold() == folded


def _string_like(expected: str, operator: str) -> Matcher:
    return Wildcard.compile(expected).matches


def _arn_like(expected: str, operator: str) -> Matcher:
    # IAM compares ARNs component by component with wildcards; with the component count
    # checked first, matching the whole string as a glob is the same except that a '*'
    # could span a ':', which the count check rules out for well-formed ARNs.
    parts = expected.count(":")
    if not expected.startswith("arn:") or parts < 5:
        raise ConditionSyntaxError(
            f"Condition operator {operator} requires ARN values; '{_short(expected)}' is not an ARN"
        )
    pattern = Wildcard.compile(expected)

    def match(value: str) -> bool:
        return value.count(":") >= 5 and pattern.matches(value)

    return match


def _number(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _numeric(compare: Callable[[Decimal, Decimal], bool]) -> Callable[[str, str], Matcher]:
    def make(expected: str, operator: str) -> Matcher:
        bound = _number(expected)
        if bound is None:
            raise ConditionSyntaxError(
                f"Condition operator {operator} requires numeric values; "
                f"'{_short(expected)}' is not a number"
            )

        def match(value: str) -> bool:
            number = _number(value)
            return number is not None and compare(number, bound)

        return match

    return make


def parse_date(text: str) -> datetime | None:
    """ISO 8601 (``2026-01-31T12:00:00Z``) or epoch seconds; None if neither."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        if stripped.lstrip("-").replace(".", "", 1).isdigit():
            seconds = float(stripped)
            if not math.isfinite(seconds):
                return None
            return datetime.fromtimestamp(seconds, tz=UTC)
        moment = datetime.fromisoformat(stripped)
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _date(compare: Callable[[datetime, datetime], bool]) -> Callable[[str, str], Matcher]:
    def make(expected: str, operator: str) -> Matcher:
        bound = parse_date(expected)
        if bound is None:
            raise ConditionSyntaxError(
                f"Condition operator {operator} requires dates (ISO 8601 or epoch seconds); "
                f"'{_short(expected)}' is not a date"
            )

        def match(value: str) -> bool:
            moment = parse_date(value)
            return moment is not None and compare(moment, bound)

        return match

    return make


def _bool(expected: str, operator: str) -> Matcher:
    lowered = expected.strip().lower()
    if lowered not in ("true", "false"):
        raise ConditionSyntaxError(
            f"Condition operator {operator} requires true or false; got '{_short(expected)}'"
        )
    return lambda value: value.strip().lower() == lowered


def _ip(expected: str, operator: str) -> Matcher:
    try:
        network = ipaddress.ip_network(expected.strip(), strict=False)
    except ValueError:
        raise ConditionSyntaxError(
            f"Condition operator {operator} requires IP addresses or CIDR ranges; "
            f"'{_short(expected)}' is neither"
        ) from None

    def match(value: str) -> bool:
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            return False
        return address.version == network.version and address in network

    return match


_BASE_OPERATORS: dict[str, _Base] = {
    "StringEquals": _Base(_string_equals, negated=False),
    "StringNotEquals": _Base(_string_equals, negated=True),
    "StringEqualsIgnoreCase": _Base(_string_equals_ignore_case, negated=False),
    "StringNotEqualsIgnoreCase": _Base(_string_equals_ignore_case, negated=True),
    "StringLike": _Base(_string_like, negated=False),
    "StringNotLike": _Base(_string_like, negated=True),
    "NumericEquals": _Base(_numeric(lambda a, b: a == b), negated=False),
    "NumericNotEquals": _Base(_numeric(lambda a, b: a == b), negated=True),
    "NumericLessThan": _Base(_numeric(lambda a, b: a < b), negated=False),
    "NumericLessThanEquals": _Base(_numeric(lambda a, b: a <= b), negated=False),
    "NumericGreaterThan": _Base(_numeric(lambda a, b: a > b), negated=False),
    "NumericGreaterThanEquals": _Base(_numeric(lambda a, b: a >= b), negated=False),
    "DateEquals": _Base(_date(lambda a, b: a == b), negated=False),
    "DateNotEquals": _Base(_date(lambda a, b: a == b), negated=True),
    "DateLessThan": _Base(_date(lambda a, b: a < b), negated=False),
    "DateLessThanEquals": _Base(_date(lambda a, b: a <= b), negated=False),
    "DateGreaterThan": _Base(_date(lambda a, b: a > b), negated=False),
    "DateGreaterThanEquals": _Base(_date(lambda a, b: a >= b), negated=False),
    "Bool": _Base(_bool, negated=False),
    "IpAddress": _Base(_ip, negated=False),
    "NotIpAddress": _Base(_ip, negated=True),
    "ArnEquals": _Base(_arn_like, negated=False),
    "ArnLike": _Base(_arn_like, negated=False),
    "ArnNotEquals": _Base(_arn_like, negated=True),
    "ArnNotLike": _Base(_arn_like, negated=True),
}

_QUALIFIERS = ("ForAllValues:", "ForAnyValue:")


def operator_names() -> list[str]:
    """Every operator name without qualifiers, for messages and documentation."""
    return [*_BASE_OPERATORS, "Null"]


def compile_condition(operator: str, key: str, values: Sequence[str]) -> Condition:
    """Compile one condition; ConditionSyntaxError says precisely what is wrong."""
    if not values:
        raise ConditionSyntaxError(f"Condition {operator} on {key} must list at least one value")
    for value in values:
        if len(value) > CONDITION_VALUE_CHARS_MAX:
            raise ConditionSyntaxError(
                f"Condition values must be at most {CONDITION_VALUE_CHARS_MAX} characters"
            )
    qualifier = ""
    name = operator
    for prefix in _QUALIFIERS:
        if operator.startswith(prefix):
            qualifier, name = prefix[:-1], operator[len(prefix) :]
            break
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base_name = name.removesuffix("IfExists") if if_exists else name
    lowered_key = key.lower()
    if base_name == "Null":
        if qualifier or if_exists:
            raise ConditionSyntaxError(f"Condition operator {operator} is not valid")
        return _null_condition(operator, lowered_key, tuple(values))
    base = _BASE_OPERATORS.get(base_name)
    if base is None:
        raise ConditionSyntaxError(
            f"Unknown condition operator '{_short(operator)}'; valid operators are "
            f"{', '.join(operator_names())}, each optionally with IfExists and "
            "ForAllValues:/ForAnyValue:"
        )
    matchers = tuple(base.make_matcher(value, operator) for value in values)

    def any_listed(value: str) -> bool:
        return any(match(value) for match in matchers)

    negated = base.negated

    def satisfied(value: str) -> bool:
        return any_listed(value) != negated

    def holds(request_values: tuple[str, ...] | None) -> bool:
        if request_values is None:
            if if_exists:
                return True
            if qualifier == "ForAllValues":
                return True
            if qualifier == "ForAnyValue":
                return False
            return negated
        if qualifier == "ForAllValues":
            return all(satisfied(value) for value in request_values)
        if qualifier == "ForAnyValue":
            return any(satisfied(value) for value in request_values)
        matched = any(any_listed(value) for value in request_values)
        return matched != negated

    return Condition(operator=operator, key=lowered_key, values=tuple(values), _holds=holds)


def _null_condition(operator: str, key: str, values: tuple[str, ...]) -> Condition:
    expected: set[bool] = set()
    for value in values:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise ConditionSyntaxError(
                f"Condition operator Null requires true or false; got '{_short(value)}'"
            )
        expected.add(lowered == "true")

    def holds(request_values: tuple[str, ...] | None) -> bool:
        absent = request_values is None or len(request_values) == 0
        return absent in expected

    return Condition(operator=operator, key=key, values=values, _holds=holds)


def _short(text: str, chars_max: int = 80) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[:chars_max])
    return printable + ("..." if len(text) > chars_max else "")
