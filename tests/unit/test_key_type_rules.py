"""Rules of the key-type domain that need no node: how MessageType reads a message, and
when the next automatic rotation falls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meridian.server.domain.crypto.signatures import Form
from meridian.server.domain.errors import ValidationException
from meridian.server.domain.key_specs import MessageType, SigningAlgorithm
from meridian.server.domain.rotation import next_rotation_after
from meridian.server.domain.signing import message_form

A = SigningAlgorithm


@pytest.mark.parametrize(
    ("algorithm", "kind", "length", "form"),
    [
        (A.ECDSA_SHA_256, MessageType.RAW, 1, Form.RAW),
        (A.ECDSA_SHA_256, MessageType.DIGEST, 32, Form.DIGEST),
        (A.ECDSA_SHA_384, MessageType.DIGEST, 48, Form.DIGEST),
        (A.RSASSA_PSS_SHA_512, MessageType.DIGEST, 64, Form.DIGEST),
        (A.RSASSA_PKCS1_V1_5_SHA_256, MessageType.RAW, 4096, Form.RAW),
        (A.ML_DSA_SHAKE_256, MessageType.EXTERNAL_MU, 64, Form.EXTERNAL_MU),
        (A.ML_DSA_SHAKE_256, MessageType.RAW, 64, Form.RAW),
        (A.ED25519_SHA_512, MessageType.RAW, 64, Form.RAW),
    ],
)
def test_message_forms(algorithm, kind, length: int, form: Form) -> None:
    assert message_form(algorithm, kind, b"m" * length) is form


@pytest.mark.parametrize(
    ("algorithm", "kind", "length"),
    [
        (A.ECDSA_SHA_256, MessageType.DIGEST, 31),
        (A.ECDSA_SHA_256, MessageType.DIGEST, 33),
        (A.RSASSA_PSS_SHA_384, MessageType.DIGEST, 32),
        (A.ECDSA_SHA_256, MessageType.EXTERNAL_MU, 64),
        (A.ML_DSA_SHAKE_256, MessageType.EXTERNAL_MU, 32),
        (A.ML_DSA_SHAKE_256, MessageType.DIGEST, 64),
        (A.ED25519_SHA_512, MessageType.DIGEST, 64),
    ],
)
def test_message_forms_aws_refuses(algorithm, kind, length: int) -> None:
    with pytest.raises(ValidationException):
        message_form(algorithm, kind, b"m" * length)


def test_next_rotation_keeps_the_schedule_and_restarts_after_a_long_gap() -> None:
    due = datetime(2026, 1, 1, tzinfo=UTC)
    # A late pass keeps the cadence: no drift.
    assert next_rotation_after(due, 90, due + timedelta(hours=1)) == due + timedelta(days=90)
    # A key disabled past a whole period rotates now, and every period from now.
    late = due + timedelta(days=200)
    assert next_rotation_after(due, 90, late) == late + timedelta(days=90)
    assert next_rotation_after(due, 90, due + timedelta(days=90)) == due + timedelta(days=180)
