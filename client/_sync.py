"""KmsClient: the blocking twin. It only creates channels and waits on calls;
every decision is made in ``_core`` so that AsyncKmsClient behaves the same."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Self

import grpc
from grpc_status import rpc_status

from meridian.client import _core
from meridian.client._batch_methods import BatchMethods
from meridian.client._core import (
    BaseKmsClient,
    ContextEntriesArgument,
    GrantConstraintsArgument,
    Operation,
    Pager,
    RequestT,
    ResponseT,
    ResultT,
)
from meridian.client._failover import run_sync
from meridian.client._key_types_sync import KeyTypeMethods
from meridian.client._replication_methods import ReplicationMethods
from meridian.client._usage_methods import UsageMethods
from meridian.client.access_results import (
    CreateGrantResult,
    GetKeyPolicyResult,
    GetUserPolicyResult,
    ListGrantsResult,
    ListKeyPoliciesResult,
    ListUserPoliciesResult,
    SimulatePrincipalPolicyResult,
)
from meridian.client.cluster_file import load_cluster_file
from meridian.client.errors import KmsError
from meridian.client.health import SyncHealthChecker
from meridian.client.options import RoutingOptions
from meridian.client.regions import ClientStats
from meridian.client.results import (
    AliasListEntry,
    CancelKeyDeletionResult,
    CreateKeyResult,
    DecryptResult,
    DescribeKeyResult,
    EmptyResult,
    EncryptResult,
    GenerateDataKeyResult,
    GenerateDataKeyWithoutPlaintextResult,
    GenerateRandomResult,
    KeyListEntry,
    ListAliasesResult,
    ListKeysResult,
    ListResourceTagsResult,
    ReEncryptResult,
    ScheduleKeyDeletionResult,
)
from meridian.proto.kms.v1 import kms_pb2_grpc

ChannelFactory = Callable[[str, str], grpc.Channel]
"""``channel_factory(region, endpoint) -> grpc.Channel``; the client closes what it returns."""


class KmsClient(BaseKmsClient, KeyTypeMethods, UsageMethods, ReplicationMethods, BatchMethods):
    """A blocking Meridian KMS client over one gRPC channel per region.

    Use it as a context manager (or call close()); channels are opened on a
    region's first call. Safe to share between threads.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        ca_cert: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        server_names: Mapping[str, str] | None = None,
        region: str | None = None,
        preferred_region: str | None = None,
        timeout_s: float = 10.0,
        channel_factory: ChannelFactory | None = None,
        routing: RoutingOptions | None = None,
    ) -> None:
        super().__init__(
            endpoints,
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            server_names=server_names,
            region=region,
            preferred_region=preferred_region,
            timeout_s=timeout_s,
            has_channel_factory=channel_factory is not None,
            routing=routing,
        )
        self._channel_factory = channel_factory or self._secure_channel
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, kms_pb2_grpc.KeyManagementServiceStub] = {}
        self._lock = threading.Lock()
        self._health = SyncHealthChecker(
            regions=self.regions,
            channel_for=self._channel,
            book=self._regions,
            options=self._routing,
        )

    @classmethod
    def from_cluster_file(
        cls,
        path: str | os.PathLike[str],
        *,
        region: str | None = None,
        preferred_region: str | None = None,
        timeout_s: float = 10.0,
        channel_factory: ChannelFactory | None = None,
        routing: RoutingOptions | None = None,
    ) -> Self:
        """A client for the cluster described by ``cluster.json`` (``meridian cluster up``)."""
        cluster = load_cluster_file(path)
        tls = cluster.read_tls_material()
        return cls(
            cluster.endpoints,
            ca_cert=tls.ca_cert,
            client_cert=tls.client_cert,
            client_key=tls.client_key,
            server_names=cluster.server_names,
            region=region,
            preferred_region=preferred_region,
            timeout_s=timeout_s,
            channel_factory=channel_factory,
            routing=routing,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._ensure_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every channel; later calls raise ClientClosedError. Idempotent."""
        with self._lock:
            if not self._mark_closed():
                return
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()
        self._health.stop()

    def check_health(self) -> ClientStats:
        """Measure every region's round-trip time and health now; returns ``stats()``."""
        self._ensure_open()
        self._health.check_all()
        return self.stats()

    # ---- I/O -------------------------------------------------------------------------------

    def _secure_channel(self, region: str, endpoint: str) -> grpc.Channel:
        return grpc.secure_channel(
            endpoint, self._channel_credentials(), options=self._secure_channel_options(region)
        )

    def _stub(self, region: str) -> kms_pb2_grpc.KeyManagementServiceStub:
        with self._lock:
            # Checked again under the lock: a close() racing this call must not
            # leave a freshly opened channel behind.
            self._ensure_open()
            stub = self._stubs.get(region)
            if stub is None:
                channel = self._channel_factory(region, self._channel_target(region))
                self._channels[region] = channel
                stub = self._stubs[region] = kms_pb2_grpc.KeyManagementServiceStub(channel)
            return stub

    def _channel(self, region: str) -> grpc.Channel:
        self._stub(region)
        with self._lock:
            self._ensure_open()
            return self._channels[region]

    def _invoke(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        timeout_s: float | None,
        **fields: object,
    ) -> ResultT:
        plan = self._plan(operation, fields, timeout_s)
        self._health.start()
        try:
            response, region = run_sync(
                plan, lambda region: getattr(self._stub(region), operation.name), _error
            )
        except ValueError:
            # grpc's "closed channel" error: close() in another thread won the race.
            self._ensure_open()
            raise
        return operation.to_result(response, region)

    # ---- key management --------------------------------------------------------------------

    def create_key(
        self,
        *,
        policy: str | None = None,
        description: str | None = None,
        key_usage: str | None = None,
        customer_master_key_spec: str | None = None,
        key_spec: str | None = None,
        origin: str | None = None,
        bypass_policy_lockout_safety_check: bool | None = None,
        tags: _core.TagsArgument | None = None,
        multi_region: bool | None = None,
        timeout_s: float | None = None,
    ) -> CreateKeyResult:
        return self._invoke(
            _core.CREATE_KEY,
            timeout_s,
            policy=policy,
            description=description,
            key_usage=key_usage,
            customer_master_key_spec=customer_master_key_spec,
            key_spec=key_spec,
            origin=origin,
            bypass_policy_lockout_safety_check=bypass_policy_lockout_safety_check,
            tags=tags,
            multi_region=multi_region,
        )

    def describe_key(
        self,
        *,
        key_id: str,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> DescribeKeyResult:
        return self._invoke(_core.DESCRIBE_KEY, timeout_s, key_id=key_id, grant_tokens=grant_tokens)

    def list_keys(
        self, *, limit: int | None = None, marker: str | None = None, timeout_s: float | None = None
    ) -> ListKeysResult:
        return self._invoke(_core.LIST_KEYS, timeout_s, limit=limit, marker=marker)

    def update_key_description(
        self, *, key_id: str, description: str, timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(
            _core.UPDATE_KEY_DESCRIPTION, timeout_s, key_id=key_id, description=description
        )

    def enable_key(self, *, key_id: str, timeout_s: float | None = None) -> EmptyResult:
        return self._invoke(_core.ENABLE_KEY, timeout_s, key_id=key_id)

    def disable_key(self, *, key_id: str, timeout_s: float | None = None) -> EmptyResult:
        return self._invoke(_core.DISABLE_KEY, timeout_s, key_id=key_id)

    def schedule_key_deletion(
        self,
        *,
        key_id: str,
        pending_window_in_days: int | None = None,
        timeout_s: float | None = None,
    ) -> ScheduleKeyDeletionResult:
        return self._invoke(
            _core.SCHEDULE_KEY_DELETION,
            timeout_s,
            key_id=key_id,
            pending_window_in_days=pending_window_in_days,
        )

    def cancel_key_deletion(
        self, *, key_id: str, timeout_s: float | None = None
    ) -> CancelKeyDeletionResult:
        return self._invoke(_core.CANCEL_KEY_DELETION, timeout_s, key_id=key_id)

    # ---- cryptographic operations ----------------------------------------------------------

    def encrypt(
        self,
        *,
        key_id: str,
        plaintext: bytes,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        encryption_algorithm: str | None = None,
        timeout_s: float | None = None,
    ) -> EncryptResult:
        return self._invoke(
            _core.ENCRYPT,
            timeout_s,
            key_id=key_id,
            plaintext=plaintext,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
            encryption_algorithm=encryption_algorithm,
        )

    def decrypt(
        self,
        *,
        ciphertext_blob: bytes,
        encryption_context: Mapping[str, str] | None = None,
        grant_tokens: Sequence[str] | None = None,
        key_id: str | None = None,
        encryption_algorithm: str | None = None,
        timeout_s: float | None = None,
    ) -> DecryptResult:
        return self._invoke(
            _core.DECRYPT,
            timeout_s,
            ciphertext_blob=ciphertext_blob,
            encryption_context=encryption_context,
            grant_tokens=grant_tokens,
            key_id=key_id,
            encryption_algorithm=encryption_algorithm,
        )

    def re_encrypt(
        self,
        *,
        ciphertext_blob: bytes,
        destination_key_id: str,
        source_encryption_context: Mapping[str, str] | None = None,
        source_key_id: str | None = None,
        destination_encryption_context: Mapping[str, str] | None = None,
        source_encryption_algorithm: str | None = None,
        destination_encryption_algorithm: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> ReEncryptResult:
        return self._invoke(
            _core.RE_ENCRYPT,
            timeout_s,
            ciphertext_blob=ciphertext_blob,
            destination_key_id=destination_key_id,
            source_encryption_context=source_encryption_context,
            source_key_id=source_key_id,
            destination_encryption_context=destination_encryption_context,
            source_encryption_algorithm=source_encryption_algorithm,
            destination_encryption_algorithm=destination_encryption_algorithm,
            grant_tokens=grant_tokens,
        )

    def generate_data_key(
        self,
        *,
        key_id: str,
        encryption_context: Mapping[str, str] | None = None,
        number_of_bytes: int | None = None,
        key_spec: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyResult:
        return self._invoke(
            _core.GENERATE_DATA_KEY,
            timeout_s,
            key_id=key_id,
            encryption_context=encryption_context,
            number_of_bytes=number_of_bytes,
            key_spec=key_spec,
            grant_tokens=grant_tokens,
        )

    def generate_data_key_without_plaintext(
        self,
        *,
        key_id: str,
        encryption_context: Mapping[str, str] | None = None,
        number_of_bytes: int | None = None,
        key_spec: str | None = None,
        grant_tokens: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> GenerateDataKeyWithoutPlaintextResult:
        return self._invoke(
            _core.GENERATE_DATA_KEY_WITHOUT_PLAINTEXT,
            timeout_s,
            key_id=key_id,
            encryption_context=encryption_context,
            number_of_bytes=number_of_bytes,
            key_spec=key_spec,
            grant_tokens=grant_tokens,
        )

    def generate_random(
        self, *, number_of_bytes: int | None = None, timeout_s: float | None = None
    ) -> GenerateRandomResult:
        return self._invoke(_core.GENERATE_RANDOM, timeout_s, number_of_bytes=number_of_bytes)

    # ---- aliases ---------------------------------------------------------------------------

    def create_alias(
        self, *, alias_name: str, target_key_id: str, timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(
            _core.CREATE_ALIAS, timeout_s, alias_name=alias_name, target_key_id=target_key_id
        )

    def update_alias(
        self, *, alias_name: str, target_key_id: str, timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(
            _core.UPDATE_ALIAS, timeout_s, alias_name=alias_name, target_key_id=target_key_id
        )

    def delete_alias(self, *, alias_name: str, timeout_s: float | None = None) -> EmptyResult:
        return self._invoke(_core.DELETE_ALIAS, timeout_s, alias_name=alias_name)

    def list_aliases(
        self,
        *,
        key_id: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListAliasesResult:
        return self._invoke(
            _core.LIST_ALIASES, timeout_s, key_id=key_id, limit=limit, marker=marker
        )

    # ---- tags ------------------------------------------------------------------------------

    def tag_resource(
        self, *, key_id: str, tags: _core.TagsArgument, timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(_core.TAG_RESOURCE, timeout_s, key_id=key_id, tags=tags)

    def untag_resource(
        self, *, key_id: str, tag_keys: Sequence[str], timeout_s: float | None = None
    ) -> EmptyResult:
        return self._invoke(_core.UNTAG_RESOURCE, timeout_s, key_id=key_id, tag_keys=tag_keys)

    def list_resource_tags(
        self,
        *,
        key_id: str,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListResourceTagsResult:
        return self._invoke(
            _core.LIST_RESOURCE_TAGS, timeout_s, key_id=key_id, limit=limit, marker=marker
        )

    # ---- access control --------------------------------------------------------------------

    def put_key_policy(
        self,
        *,
        key_id: str,
        policy: str,
        policy_name: str | None = None,
        bypass_policy_lockout_safety_check: bool | None = None,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        """Replace the key's policy (its only one, ``default``)."""
        return self._invoke(
            _core.PUT_KEY_POLICY,
            timeout_s,
            key_id=key_id,
            policy=policy,
            policy_name=policy_name,
            bypass_policy_lockout_safety_check=bypass_policy_lockout_safety_check,
        )

    def get_key_policy(
        self,
        *,
        key_id: str,
        policy_name: str | None = None,
        timeout_s: float | None = None,
    ) -> GetKeyPolicyResult:
        return self._invoke(
            _core.GET_KEY_POLICY,
            timeout_s,
            key_id=key_id,
            policy_name=policy_name,
        )

    def list_key_policies(
        self,
        *,
        key_id: str,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListKeyPoliciesResult:
        return self._invoke(
            _core.LIST_KEY_POLICIES,
            timeout_s,
            key_id=key_id,
            limit=limit,
            marker=marker,
        )

    def create_grant(
        self,
        *,
        key_id: str,
        grantee_principal: str,
        operations: Sequence[str],
        retiring_principal: str | None = None,
        constraints: GrantConstraintsArgument | None = None,
        grant_tokens: Sequence[str] | None = None,
        name: str | None = None,
        timeout_s: float | None = None,
    ) -> CreateGrantResult:
        """Allow ``grantee_principal`` the ``operations`` on a key; returns its id and token."""
        return self._invoke(
            _core.CREATE_GRANT,
            timeout_s,
            key_id=key_id,
            grantee_principal=grantee_principal,
            operations=operations,
            retiring_principal=retiring_principal,
            constraints=constraints,
            grant_tokens=grant_tokens,
            name=name,
        )

    def list_grants(
        self,
        *,
        key_id: str,
        limit: int | None = None,
        marker: str | None = None,
        grant_id: str | None = None,
        grantee_principal: str | None = None,
        timeout_s: float | None = None,
    ) -> ListGrantsResult:
        return self._invoke(
            _core.LIST_GRANTS,
            timeout_s,
            key_id=key_id,
            limit=limit,
            marker=marker,
            grant_id=grant_id,
            grantee_principal=grantee_principal,
        )

    def list_retirable_grants(
        self,
        *,
        retiring_principal: str,
        limit: int | None = None,
        marker: str | None = None,
        timeout_s: float | None = None,
    ) -> ListGrantsResult:
        return self._invoke(
            _core.LIST_RETIRABLE_GRANTS,
            timeout_s,
            retiring_principal=retiring_principal,
            limit=limit,
            marker=marker,
        )

    def retire_grant(
        self,
        *,
        grant_token: str | None = None,
        key_id: str | None = None,
        grant_id: str | None = None,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        """Retire a grant, named by ``grant_token`` or by ``key_id`` and ``grant_id``."""
        return self._invoke(
            _core.RETIRE_GRANT,
            timeout_s,
            grant_token=grant_token,
            key_id=key_id,
            grant_id=grant_id,
        )

    def revoke_grant(
        self,
        *,
        key_id: str,
        grant_id: str,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        return self._invoke(
            _core.REVOKE_GRANT,
            timeout_s,
            key_id=key_id,
            grant_id=grant_id,
        )

    def put_user_policy(
        self,
        *,
        user_name: str,
        policy_name: str,
        policy_document: str,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        """Attach (or replace) an identity policy of a principal in this region."""
        return self._invoke(
            _core.PUT_USER_POLICY,
            timeout_s,
            user_name=user_name,
            policy_name=policy_name,
            policy_document=policy_document,
        )

    def get_user_policy(
        self,
        *,
        user_name: str,
        policy_name: str,
        timeout_s: float | None = None,
    ) -> GetUserPolicyResult:
        return self._invoke(
            _core.GET_USER_POLICY,
            timeout_s,
            user_name=user_name,
            policy_name=policy_name,
        )

    def list_user_policies(
        self,
        *,
        user_name: str,
        marker: str | None = None,
        max_items: int | None = None,
        timeout_s: float | None = None,
    ) -> ListUserPoliciesResult:
        return self._invoke(
            _core.LIST_USER_POLICIES,
            timeout_s,
            user_name=user_name,
            marker=marker,
            max_items=max_items,
        )

    def delete_user_policy(
        self,
        *,
        user_name: str,
        policy_name: str,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        return self._invoke(
            _core.DELETE_USER_POLICY,
            timeout_s,
            user_name=user_name,
            policy_name=policy_name,
        )

    def simulate_principal_policy(
        self,
        *,
        policy_source_arn: str,
        action_names: Sequence[str],
        resource_arns: Sequence[str] | None = None,
        context_entries: ContextEntriesArgument | None = None,
        timeout_s: float | None = None,
    ) -> SimulatePrincipalPolicyResult:
        """Would the principal be allowed each action on each resource, and why?"""
        return self._invoke(
            _core.SIMULATE_PRINCIPAL_POLICY,
            timeout_s,
            policy_source_arn=policy_source_arn,
            action_names=action_names,
            resource_arns=resource_arns,
            context_entries=context_entries,
        )

    # ---- paginators ------------------------------------------------------------------------

    def iter_keys(
        self, *, limit: int | None = None, timeout_s: float | None = None
    ) -> Iterator[KeyListEntry]:
        """Every key, following next_marker; ``limit`` is the page size asked for."""
        pager = Pager()
        while True:
            page = self.list_keys(limit=limit, marker=pager.marker, timeout_s=timeout_s)
            yield from page.keys
            if not pager.advance("ListKeys", page.truncated, page.next_marker):
                return

    def iter_aliases(
        self,
        *,
        key_id: str | None = None,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[AliasListEntry]:
        """Every alias (of ``key_id`` if given), following next_marker."""
        pager = Pager()
        while True:
            page = self.list_aliases(
                key_id=key_id, limit=limit, marker=pager.marker, timeout_s=timeout_s
            )
            yield from page.aliases
            if not pager.advance("ListAliases", page.truncated, page.next_marker):
                return


def _error(operation: str, region: str, rpc_error: grpc.RpcError) -> KmsError:
    code = rpc_error.code()
    status = None
    # Blocking calls raise an error that is also the finished grpc.Call, which
    # is what grpc_status reads the rich status from.
    if isinstance(rpc_error, grpc.Call):
        try:
            status = rpc_status.from_call(rpc_error)
        except ValueError:
            # Details that contradict the call's own status are not trusted.
            status = None
    initial = rpc_error.initial_metadata() if isinstance(rpc_error, grpc.Call) else None
    return _core.error_from_rpc(
        operation=operation,
        region=region,
        code=code,
        message=rpc_error.details(),
        status=status,
        metadata=(rpc_error.trailing_metadata(), initial),
    )
