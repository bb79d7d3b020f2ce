"""The batch authorization memo shares a decision only between identical requests."""

from __future__ import annotations

import os
import uuid

from meridian.server.api.batch_memo import AuthorizationMemo
from meridian.server.domain.access.authorizer import (
    AuthorizationRequest,
    AuthorizationResult,
    KeyTarget,
    RetireTarget,
)
from meridian.server.domain.crypto import blob as blob_recipe
from meridian.server.domain.model import Caller

ALICE = Caller(principal_arn="arn:meridian:iam::111122223333:user/alice", source_address="10.0.0.1")
RESULT = AuthorizationResult(ALICE.principal_arn, (), ())


def _blob(key_id: str, plaintext: bytes = b"x") -> bytes:
    return blob_recipe.seal(
        os.urandom(32),
        key_id=key_id,
        key_material_id=os.urandom(32),
        plaintext=plaintext,
        encryption_context={},
    )


def _request(
    *,
    caller: Caller = ALICE,
    reference: str = "",
    blob: bytes = b"",
    context: dict[str, str] | None = None,
    tokens: tuple[str, ...] = (),
    algorithm: str = "SYMMETRIC_DEFAULT",
) -> AuthorizationRequest:
    return AuthorizationRequest(
        caller=caller,
        action="kms:Decrypt",
        keys=(KeyTarget(reference=reference, ciphertext_blob=blob, encryption_context=context),),
        values={"kms:EncryptionAlgorithm": algorithm},
        grant_tokens=tokens,
    )


def test_identical_requests_share_a_decision_and_others_do_not() -> None:
    memo = AuthorizationMemo()
    key_a, key_b = str(uuid.uuid4()), str(uuid.uuid4())
    first = _request(blob=_blob(key_a, b"one"), context={"k": "v"})
    key, found = memo.get(first)
    assert key is not None and found is None
    memo.put(key, RESULT)
    # Another ciphertext of the same key, same context: the same decision.
    assert memo.get(_request(blob=_blob(key_a, b"two"), context={"k": "v"}))[1] is RESULT
    for different in (
        _request(blob=_blob(key_b), context={"k": "v"}),  # another key
        _request(blob=_blob(key_a), context={"k": "w"}),  # another context
        _request(blob=_blob(key_a)),  # no context
        _request(blob=_blob(key_a), context={"k": "v"}, tokens=("t",)),
        _request(blob=_blob(key_a), context={"k": "v"}, algorithm="RSAES_OAEP_SHA_256"),
        _request(
            caller=Caller(principal_arn=ALICE.principal_arn, source_address="10.0.0.2"),
            blob=_blob(key_a),
            context={"k": "v"},
        ),
        _request(reference=key_a, context={"k": "v"}),  # named, not from a blob
    ):
        assert memo.get(different)[1] is None, different


def test_requests_it_cannot_judge_are_not_memoized() -> None:
    memo = AuthorizationMemo()
    assert memo.get(_request(blob=b"\x01garbage"))[0] is None
    retire = AuthorizationRequest(caller=ALICE, action="kms:RetireGrant", retiring=RetireTarget())
    assert memo.get(retire)[0] is None
    aliased = AuthorizationRequest(caller=ALICE, action="kms:CreateAlias", aliases=("alias/x",))
    assert memo.get(aliased)[0] is None
