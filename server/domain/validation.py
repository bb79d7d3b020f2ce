"""Limits and checks for request fields that are not keys or aliases (AWS's quotas)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from meridian.server.domain.access.policy import parse_key_policy
from meridian.server.domain.errors import (
    LimitExceededException,
    TagException,
    ValidationException,
)
from meridian.server.domain.model import Tag

DESCRIPTION_CHARS_MAX = 8192
TAG_KEY_CHARS_MAX = 128
TAG_VALUE_CHARS_MAX = 256
TAGS_PER_KEY_MAX = 50
ALIASES_PER_KEY_MAX = 50
POLICY_BYTES_MAX = 32 * 1024
PLAINTEXT_BYTES_MAX = 4096
DATA_KEY_BYTES_MAX = 1024
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
GRANT_TOKENS_MAX = 10
PENDING_WINDOW_DAYS_MIN = 7
PENDING_WINDOW_DAYS_MAX = 30
PENDING_WINDOW_DAYS_DEFAULT = 30


def validate_description(description: str) -> None:
    if len(description) > DESCRIPTION_CHARS_MAX:
        raise ValidationException(f"Description must be at most {DESCRIPTION_CHARS_MAX} characters")


def validate_tags(tags: Sequence[Tag]) -> None:
    seen: set[str] = set()
    for tag in tags:
        if not 1 <= len(tag.tag_key) <= TAG_KEY_CHARS_MAX:
            raise TagException(f"TagKey must be 1 to {TAG_KEY_CHARS_MAX} characters long")
        if len(tag.tag_value) > TAG_VALUE_CHARS_MAX:
            raise TagException(f"TagValue must be at most {TAG_VALUE_CHARS_MAX} characters")
        if tag.tag_key.lower().startswith("aws:"):
            raise TagException("Tag keys beginning with 'aws:' are reserved")
        if tag.tag_key in seen:
            raise TagException("Duplicate tag keys in one request")
        seen.add(tag.tag_key)


def validate_tag_count(count: int) -> None:
    if count > TAGS_PER_KEY_MAX:
        raise LimitExceededException(f"A key can have at most {TAGS_PER_KEY_MAX} tags")


def validate_grant_tokens(tokens: Sequence[str]) -> None:
    if len(tokens) > GRANT_TOKENS_MAX:
        raise ValidationException(f"At most {GRANT_TOKENS_MAX} grant tokens are allowed")
    for token in tokens:
        if not 1 <= len(token) <= 8192:
            raise ValidationException("Each grant token must be 1 to 8192 characters long")


def validate_limit(limit: int | None) -> int:
    if limit is None:
        return LIST_LIMIT_DEFAULT
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValidationException(f"Limit must be between 1 and {LIST_LIMIT_MAX}")
    return limit


def validate_policy_document(policy: str) -> None:
    """A key policy must be a well-formed policy of at most 32 KB.

    The policy language lives in ``domain/access/policy.py``: a document is parsed
    completely, so nothing that could not be evaluated is ever stored, and a malformed
    one is refused with a MalformedPolicyDocumentException that says what is wrong.
    """
    parse_key_policy(policy)


def default_key_policy(account_id: str) -> str:
    """AWS's default key policy: the account's principals may do everything."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:meridian:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )
