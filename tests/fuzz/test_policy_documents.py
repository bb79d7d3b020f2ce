"""Fuzzing policy documents: whatever the text, parsing either succeeds or refuses with
MalformedPolicyDocumentException (LimitExceededException when oversized) — never
another exception — and a policy that parses evaluates without crashing. Over gRPC,
PutKeyPolicy/PutUserPolicy/CreateKey answer with documented reasons only."""

from __future__ import annotations

import json
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_grpc_boundary import _run_async_given

from conftest import ACCOUNT, error_reason
from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.domain.access.condition_keys import ConditionContext
from meridian.server.domain.access.evaluator import EvaluationRequest, evaluate
from meridian.server.domain.access.policy import PolicyKind, parse_policy
from meridian.server.domain.errors import LimitExceededException, MalformedPolicyDocumentException
from meridian.server.domain.validation import default_key_policy

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BOB = f"arn:meridian:iam::{ACCOUNT}:user/bob"
KEY = f"arn:meridian:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# Words a policy is made of, so generated documents get deep into the parser.
WORDS = [
    "Version", "2012-10-17", "Statement", "Sid", "Effect", "Allow", "Deny", "Principal",
    "NotPrincipal", "AWS", "*", ACCOUNT, BOB, f"arn:meridian:iam::{ACCOUNT}:root", "Action",
    "NotAction", "kms:*", "kms:Decrypt", "kms:Gen*", "Resource", "NotResource", KEY,
    "Condition", "StringEquals", "StringLike", "ForAnyValue:StringEquals",
    "ForAllValues:StringNotLike", "NumericLessThanIfExists", "DateGreaterThan", "Bool",
    "IpAddress", "NotIpAddress", "Null", "ArnLike", "kms:EncryptionContext:tenant",
    "kms:EncryptionContextKeys", "aws:SourceIp", "aws:CurrentTime", "aws:PrincipalArn",
    "10.0.0.0/8", "2026-01-01T00:00:00Z", "true", "acme", "a*?b",
]  # fmt: skip
words = st.sampled_from(WORDS) | st.text(max_size=20)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | words
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(words, children, max_size=5),
    max_leaves=40,
)


OPERATORS = [
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike",
    "StringNotLikeIfExists", "ForAnyValue:StringEquals", "ForAllValues:StringLike",
    "NumericLessThan", "NumericGreaterThanEqualsIfExists", "DateLessThan", "DateGreaterThan",
    "Bool", "IpAddress", "NotIpAddress", "Null", "ArnLike", "ArnNotEquals",
]  # fmt: skip
CONDITION_KEYS = [
    "kms:EncryptionContext:tenant", "kms:EncryptionContextKeys", "aws:SourceIp",
    "aws:CurrentTime", "aws:PrincipalArn", "kms:CallerAccount", "aws:EpochTime",
]  # fmt: skip
CONDITION_VALUES = [
    "acme", "a*", "true", "false", "10.0.0.0/8", "::1", "2026-01-01T00:00:00Z", "5",
    BOB, "arn:meridian:iam::*:user/*",
]  # fmt: skip


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes anything at all."""
    return st.integers(0, 7).flatmap(lambda n: json_values if n == 3 else valid)


conditions = st.dictionaries(
    st.sampled_from(OPERATORS) | words,
    st.dictionaries(
        st.sampled_from(CONDITION_KEYS) | words,
        mostly(st.sampled_from(CONDITION_VALUES) | st.lists(st.sampled_from(CONDITION_VALUES))),
        min_size=1,
        max_size=2,
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def policy_like(draw: st.DrawFn) -> str:
    """Mostly-valid documents with random parts swapped for random JSON."""
    statement: dict[str, Any] = {
        "Effect": draw(mostly(st.sampled_from(["Allow", "Deny"]))),
        draw(st.sampled_from(["Principal", "NotPrincipal"])): draw(
            mostly(st.sampled_from(["*", {"AWS": BOB}, {"AWS": [ACCOUNT, BOB]}]))
        ),
        draw(st.sampled_from(["Action", "NotAction"])): draw(
            mostly(st.sampled_from(["kms:*", ["kms:Decrypt", "kms:En*"]]))
        ),
        "Resource": draw(mostly(st.sampled_from(["*", KEY]))),
    }
    if draw(st.booleans()):
        statement["Condition"] = draw(mostly(conditions))
    if draw(st.integers(0, 7)) == 3:
        statement[draw(words)] = draw(json_values)
    document = {"Version": "2012-10-17", "Statement": [statement]}
    return json.dumps(document, allow_nan=True)


documents = policy_like() | st.text(max_size=400) | json_values.map(json.dumps)


def _parse_or_refuse(document: str, kind: PolicyKind) -> None:
    try:
        policy = parse_policy(document, kind)
    except (MalformedPolicyDocumentException, LimitExceededException) as error:
        assert error.message and "Traceback" not in error.message
        return
    context = ConditionContext()
    context.set("aws:PrincipalArn", BOB)
    context.set("kms:EncryptionContext:tenant", "acme")
    context.set("kms:EncryptionContextKeys", ["tenant"])
    context.set("aws:SourceIp", "10.1.2.3")
    context.set("aws:CurrentTime", "2026-01-01T00:00:00+00:00")
    for action in ("kms:Decrypt", "kms:Encrypt"):
        evaluate(
            EvaluationRequest(
                principal_arn=BOB,
                action=action,
                resource=KEY,
                context=context,
                key_policy=policy if kind is PolicyKind.KEY else None,
                identity_policies=(),
            )
        )


@FUZZ
@given(documents)
def test_key_policies_never_crash_the_parser(document: str) -> None:
    _parse_or_refuse(document, PolicyKind.KEY)


@FUZZ
@given(documents)
def test_identity_policies_never_crash_the_parser(document: str) -> None:
    _parse_or_refuse(document, PolicyKind.IDENTITY)


def test_hostile_documents() -> None:
    hostile = [
        "[" * 20_000,
        '{"Statement":' * 2000,
        json.dumps({"Statement": [{"Effect": "Allow"}] * 1000}),
        json.dumps({"Statement": {"Sid": "x" * 40_000}}),
        '{"Statement": {"Effect": "Allow", "Effect": "Deny"}}',
        json.dumps({"Statement": {"Condition": {"NumericEquals": {"kms:KeySpec": "1e999999"}}}}),
        '{"Statement": [' + "1" * 5000 + "]}",
        "\ud800",
        json.dumps({"Statement": "\x00" * 100}),
    ]
    for document in hostile:
        for kind in PolicyKind:
            _parse_or_refuse(document, kind)


async def test_policy_operations_answer_documented_reasons(running_node) -> None:
    stub = running_node.stub
    key_id = (await stub.CreateKey(pb.CreateKeyRequest())).key_metadata.key_id
    allowed = {"MalformedPolicyDocumentException", "LimitExceededException"}

    @settings(FUZZ, max_examples=100)
    @given(document=documents, operation=st.sampled_from(["put", "user", "create"]))
    async def run(document: str, operation: str) -> None:
        if operation == "put":
            # With the lockout check on, no accepted policy can lock the admin out.
            call = stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key_id=key_id, policy=document))
        elif operation == "user":
            call = stub.PutUserPolicy(
                pb.PutUserPolicyRequest(
                    user_name="fuzz", policy_name="fuzz", policy_document=document
                )
            )
        else:
            call = stub.CreateKey(
                pb.CreateKeyRequest(policy=document, bypass_policy_lockout_safety_check=True)
            )
        try:
            await call
        except grpc.aio.AioRpcError as error:
            assert error.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ), error
            assert error_reason(error) in allowed, error

    await _run_async_given(run)
    await stub.PutKeyPolicy(
        pb.PutKeyPolicyRequest(key_id=key_id, policy=default_key_policy(ACCOUNT))
    )
    await stub.Encrypt(pb.EncryptRequest(key_id=key_id, plaintext=b"still serving"))
