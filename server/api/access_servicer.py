"""The access-control RPCs: proto <-> AccessService, nothing else.

A mixin of ``KeyManagementServicer`` (one gRPC service, one servicer class), kept in
its own module so the access-control translation lives beside nothing else.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.proto.kms.v1 import kms_pb2 as pb
from meridian.server.api.access_rules import grant_spec
from meridian.server.api.interceptor import CURRENT_CALLER, Context
from meridian.server.domain.access.evaluator import SourceType
from meridian.server.domain.access.grants import Grant
from meridian.server.domain.access.service import AccessService, ContextEntry
from meridian.server.domain.errors import KMSInternalException
from meridian.server.domain.identifiers import key_arn

# IAM's PolicySourceType for each of Meridian's policy sources.
_SOURCE_TYPE = {
    SourceType.KEY_POLICY: "resource",
    SourceType.GRANT: "resource",
    SourceType.IDENTITY_POLICY: "user",
}


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _optional_int(message: object, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None  # type: ignore[attr-defined]


class AccessControlServicer:
    """Key policies, grants, identity policies and simulation."""

    _access: AccessService | None
    _region: str

    @property
    def _access_service(self) -> AccessService:
        if self._access is None:
            # The composition root always provides one; without it nothing is authorized.
            raise KMSInternalException()
        return self._access

    def _grant_entry(self, grant: Grant) -> pb.GrantListEntry:
        service = self._access_service
        entry = pb.GrantListEntry(
            key_id=key_arn(service.region, service.account_id, grant.key_id),
            grant_id=grant.grant_id,
            name=grant.name,
            creation_date=_timestamp(grant.created_at),
            grantee_principal=grant.grantee_principal,
            retiring_principal=grant.retiring_principal,
            issuing_account=grant.issuing_account,
            operations=list(grant.operations),
        )
        if grant.constraints.kind is not None:
            entry.constraints.CopyFrom(
                pb.GrantConstraints(
                    encryption_context_equals=dict(grant.constraints.encryption_context_equals),
                    encryption_context_subset=dict(grant.constraints.encryption_context_subset),
                )
            )
        return entry

    # ---- key policies ---------------------------------------------------------------

    async def PutKeyPolicy(
        self, request: pb.PutKeyPolicyRequest, context: Context
    ) -> pb.PutKeyPolicyResponse:
        await self._access_service.put_key_policy(
            CURRENT_CALLER.get(),
            request.key_id,
            request.policy_name,
            request.policy,
            bypass=request.bypass_policy_lockout_safety_check,
        )
        return pb.PutKeyPolicyResponse(region=self._region)

    async def GetKeyPolicy(
        self, request: pb.GetKeyPolicyRequest, context: Context
    ) -> pb.GetKeyPolicyResponse:
        policy = await self._access_service.get_key_policy(
            CURRENT_CALLER.get(), request.key_id, request.policy_name
        )
        return pb.GetKeyPolicyResponse(policy=policy, policy_name="default", region=self._region)

    async def ListKeyPolicies(
        self, request: pb.ListKeyPoliciesRequest, context: Context
    ) -> pb.ListKeyPoliciesResponse:
        page = await self._access_service.list_key_policies(
            CURRENT_CALLER.get(),
            request.key_id,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListKeyPoliciesResponse(
            policy_names=page.items,
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    # ---- grants -----------------------------------------------------------------------

    async def CreateGrant(
        self, request: pb.CreateGrantRequest, context: Context
    ) -> pb.CreateGrantResponse:
        created = await self._access_service.create_grant(
            CURRENT_CALLER.get(), request.key_id, grant_spec(request)
        )
        return pb.CreateGrantResponse(
            grant_token=created.grant_token, grant_id=created.grant_id, region=self._region
        )

    async def ListGrants(
        self, request: pb.ListGrantsRequest, context: Context
    ) -> pb.ListGrantsResponse:
        page = await self._access_service.list_grants(
            CURRENT_CALLER.get(),
            request.key_id,
            grant_id=request.grant_id,
            grantee_principal=request.grantee_principal,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListGrantsResponse(
            grants=[self._grant_entry(grant) for grant in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    async def ListRetirableGrants(
        self, request: pb.ListRetirableGrantsRequest, context: Context
    ) -> pb.ListRetirableGrantsResponse:
        page = await self._access_service.list_retirable_grants(
            CURRENT_CALLER.get(),
            request.retiring_principal,
            limit=_optional_int(request, "limit"),
            marker=request.marker,
        )
        return pb.ListRetirableGrantsResponse(
            grants=[self._grant_entry(grant) for grant in page.items],
            next_marker=page.next_marker,
            truncated=page.truncated,
            region=self._region,
        )

    async def RetireGrant(
        self, request: pb.RetireGrantRequest, context: Context
    ) -> pb.RetireGrantResponse:
        await self._access_service.retire_grant(
            CURRENT_CALLER.get(),
            grant_token=request.grant_token,
            key_id=request.key_id,
            grant_id=request.grant_id,
        )
        return pb.RetireGrantResponse(region=self._region)

    async def RevokeGrant(
        self, request: pb.RevokeGrantRequest, context: Context
    ) -> pb.RevokeGrantResponse:
        await self._access_service.revoke_grant(
            CURRENT_CALLER.get(), request.key_id, request.grant_id
        )
        return pb.RevokeGrantResponse(region=self._region)

    # ---- identity policies ------------------------------------------------------------

    async def PutUserPolicy(
        self, request: pb.PutUserPolicyRequest, context: Context
    ) -> pb.PutUserPolicyResponse:
        await self._access_service.put_user_policy(
            CURRENT_CALLER.get(), request.user_name, request.policy_name, request.policy_document
        )
        return pb.PutUserPolicyResponse(region=self._region)

    async def GetUserPolicy(
        self, request: pb.GetUserPolicyRequest, context: Context
    ) -> pb.GetUserPolicyResponse:
        policy = await self._access_service.get_user_policy(
            CURRENT_CALLER.get(), request.user_name, request.policy_name
        )
        return pb.GetUserPolicyResponse(
            user_name=request.user_name,
            policy_name=policy.policy_name,
            policy_document=policy.document,
            region=self._region,
        )

    async def ListUserPolicies(
        self, request: pb.ListUserPoliciesRequest, context: Context
    ) -> pb.ListUserPoliciesResponse:
        page = await self._access_service.list_user_policies(
            CURRENT_CALLER.get(),
            request.user_name,
            limit=_optional_int(request, "max_items"),
            marker=request.marker,
        )
        return pb.ListUserPoliciesResponse(
            policy_names=page.items,
            is_truncated=page.truncated,
            marker=page.next_marker,
            region=self._region,
        )

    async def DeleteUserPolicy(
        self, request: pb.DeleteUserPolicyRequest, context: Context
    ) -> pb.DeleteUserPolicyResponse:
        await self._access_service.delete_user_policy(
            CURRENT_CALLER.get(), request.user_name, request.policy_name
        )
        return pb.DeleteUserPolicyResponse(region=self._region)

    async def SimulatePrincipalPolicy(
        self, request: pb.SimulatePrincipalPolicyRequest, context: Context
    ) -> pb.SimulatePrincipalPolicyResponse:
        results = await self._access_service.simulate_principal_policy(
            CURRENT_CALLER.get(),
            policy_source_arn=request.policy_source_arn,
            action_names=list(request.action_names),
            resource_arns=list(request.resource_arns),
            context_entries=[
                ContextEntry(entry.context_key_name, tuple(entry.context_key_values))
                for entry in request.context_entries
            ],
        )
        return pb.SimulatePrincipalPolicyResponse(
            evaluation_results=[
                pb.EvaluationResult(
                    eval_action_name=result.action,
                    eval_resource_name=result.resource,
                    eval_decision=result.decision.kind.value,
                    matched_statements=[
                        pb.Statement(
                            source_policy_id=(
                                f"grant/{matched.source_id}"
                                if matched.source_type is SourceType.GRANT
                                else matched.source_id
                            ),
                            source_policy_type=_SOURCE_TYPE[matched.source_type],
                            sid=matched.sid,
                        )
                        for matched in result.matched
                    ],
                    missing_context_values=list(result.missing_context_values),
                )
                for result in results
            ],
            is_truncated=False,
            region=self._region,
        )
