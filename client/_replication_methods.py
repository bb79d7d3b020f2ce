"""KmsClient's and AsyncKmsClient's multi-Region key methods (mixins, like _key_types_*).

``replicate_key`` and ``update_primary_region`` are AWS operations in the operation table
(``_core``): they go to the key's primary region (the ARN's region, else the primary the
client learned, else the home region). Two calls are Meridian's own and go to the
operators' service, ``meridian.replication_admin.v1.ReplicationAdmin``, over the same
channels:

- ``update_primary_region(..., force=True)`` / ``force_primary_region``: promote the
  replica in ``primary_region`` while its primary's region is lost. Sent to
  ``primary_region`` itself (the lost primary cannot be asked), once: not repeated on an
  unknown outcome, like UpdatePrimaryRegion.
- ``get_replication_status``: one region's view of replication (per peer: acknowledged
  position, backlog, lag, last error, connection state; pending key versions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import grpc

from meridian.client import _core
from meridian.client._core import Operation, RequestT, ResponseT, ResultT, TagsArgument
from meridian.client.errors import KmsError, UnknownRegionError
from meridian.client.replication_results import (
    ForcePrimaryRegionResult,
    ReplicateKeyResult,
    ReplicationStatusResult,
    force_primary_region_result,
    replication_status_result,
)
from meridian.client.results import EmptyResult
from meridian.proto.replication_admin.v1 import replication_admin_pb2 as admin_pb
from meridian.proto.replication_admin.v1 import replication_admin_pb2_grpc


class _Base(Protocol):
    @property
    def regions(self) -> tuple[str, ...]: ...

    @property
    def home_region(self) -> str: ...

    @property
    def pinned_region(self) -> str | None: ...

    _timeout_s: float

    def _ensure_open(self) -> None: ...


class _Client(_Base, Protocol):
    def _invoke(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        timeout_s: float | None,
        **fields: object,
    ) -> ResultT: ...

    def _channel(self, region: str) -> grpc.Channel: ...


class _AsyncClient(_Base, Protocol):
    async def _invoke(
        self,
        operation: Operation[RequestT, ResponseT, ResultT],
        timeout_s: float | None,
        **fields: object,
    ) -> ResultT: ...

    def _channel(self, region: str) -> grpc.aio.Channel: ...


def force_region(client: _Base, primary_region: str) -> str:
    """Where a forced promotion is sent: the promoted region (a pinned client's region;
    the node there refuses a promotion of another region)."""
    client._ensure_open()
    if client.pinned_region is not None:
        return client.pinned_region
    if primary_region not in client.regions:
        raise UnknownRegionError(
            f"primary_region {primary_region!r} has no endpoint; known regions: "
            f"{', '.join(client.regions)}"
        )
    return primary_region


def _timeout(client: _Base, timeout_s: float | None) -> float:
    return client._timeout_s if timeout_s is None else _core._checked_timeout(timeout_s)


def status_region(client: _Base, region: str | None) -> str:
    client._ensure_open()
    if region is None:
        return client.home_region
    if region not in client.regions:
        raise UnknownRegionError(
            f"region {region!r} has no endpoint; known regions: {', '.join(client.regions)}"
        )
    return region


def rpc_error(operation: str, region: str, error: grpc.RpcError) -> KmsError:
    """The typed error of a failed operator call (the reason travels in the trailers)."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    trailing: Iterable[object] = ()
    initial: Iterable[object] = ()
    details = None
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        trailing = tuple(error.trailing_metadata() or ())
        initial = tuple(error.initial_metadata() or ())
        details = error.details()
    return _core.error_from_rpc(
        operation=operation,
        region=region,
        code=code,
        message=details,
        status=_core.status_from_metadata(code, trailing),
        metadata=(trailing, initial),
    )


class ReplicationMethods:
    def replicate_key(
        self: _Client,
        *,
        key_id: str,
        replica_region: str,
        policy: str | None = None,
        bypass_policy_lockout_safety_check: bool | None = None,
        description: str | None = None,
        tags: TagsArgument | None = None,
        timeout_s: float | None = None,
    ) -> ReplicateKeyResult:
        return self._invoke(
            _core.REPLICATE_KEY,
            timeout_s,
            key_id=key_id,
            replica_region=replica_region,
            policy=policy,
            bypass_policy_lockout_safety_check=bypass_policy_lockout_safety_check,
            description=description,
            tags=tags,
        )

    def update_primary_region(
        self: _Client,
        *,
        key_id: str,
        primary_region: str,
        force: bool = False,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        """AWS's UpdatePrimaryRegion; ``force=True`` promotes the replica in
        ``primary_region`` while the primary's region is lost (see ``force_primary_region``)."""
        if force:
            forced = ReplicationMethods.force_primary_region(
                self, key_id=key_id, primary_region=primary_region, timeout_s=timeout_s
            )
            return EmptyResult(region=forced.region)
        return self._invoke(
            _core.UPDATE_PRIMARY_REGION,
            timeout_s,
            key_id=key_id,
            primary_region=primary_region,
        )

    def force_primary_region(
        self: _Client, *, key_id: str, primary_region: str, timeout_s: float | None = None
    ) -> ForcePrimaryRegionResult:
        region = force_region(self, primary_region)
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(self._channel(region))
        request = admin_pb.ForcePrimaryRegionRequest(key_id=key_id, primary_region=primary_region)
        try:
            response = stub.ForcePrimaryRegion(request, timeout=_timeout(self, timeout_s))
        except grpc.RpcError as error:
            raise rpc_error("ForcePrimaryRegion", region, error) from error
        return force_primary_region_result(response, region)

    def get_replication_status(
        self: _Client, *, region: str | None = None, timeout_s: float | None = None
    ) -> ReplicationStatusResult:
        """``region``'s view of replication (default: the home region)."""
        target = status_region(self, region)
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(self._channel(target))
        try:
            response = stub.GetReplicationStatus(
                admin_pb.GetReplicationStatusRequest(), timeout=_timeout(self, timeout_s)
            )
        except grpc.RpcError as error:
            raise rpc_error("GetReplicationStatus", target, error) from error
        return replication_status_result(response, target)


class AsyncReplicationMethods:
    async def replicate_key(
        self: _AsyncClient,
        *,
        key_id: str,
        replica_region: str,
        policy: str | None = None,
        bypass_policy_lockout_safety_check: bool | None = None,
        description: str | None = None,
        tags: TagsArgument | None = None,
        timeout_s: float | None = None,
    ) -> ReplicateKeyResult:
        return await self._invoke(
            _core.REPLICATE_KEY,
            timeout_s,
            key_id=key_id,
            replica_region=replica_region,
            policy=policy,
            bypass_policy_lockout_safety_check=bypass_policy_lockout_safety_check,
            description=description,
            tags=tags,
        )

    async def update_primary_region(
        self: _AsyncClient,
        *,
        key_id: str,
        primary_region: str,
        force: bool = False,
        timeout_s: float | None = None,
    ) -> EmptyResult:
        """AWS's UpdatePrimaryRegion; ``force=True`` promotes the replica in
        ``primary_region`` while the primary's region is lost (see ``force_primary_region``)."""
        if force:
            forced = await AsyncReplicationMethods.force_primary_region(
                self, key_id=key_id, primary_region=primary_region, timeout_s=timeout_s
            )
            return EmptyResult(region=forced.region)
        return await self._invoke(
            _core.UPDATE_PRIMARY_REGION,
            timeout_s,
            key_id=key_id,
            primary_region=primary_region,
        )

    async def force_primary_region(
        self: _AsyncClient, *, key_id: str, primary_region: str, timeout_s: float | None = None
    ) -> ForcePrimaryRegionResult:
        region = force_region(self, primary_region)
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(self._channel(region))
        request = admin_pb.ForcePrimaryRegionRequest(key_id=key_id, primary_region=primary_region)
        try:
            response = await stub.ForcePrimaryRegion(request, timeout=_timeout(self, timeout_s))
        except grpc.RpcError as error:
            raise rpc_error("ForcePrimaryRegion", region, error) from error
        return force_primary_region_result(response, region)

    async def get_replication_status(
        self: _AsyncClient, *, region: str | None = None, timeout_s: float | None = None
    ) -> ReplicationStatusResult:
        """``region``'s view of replication (default: the home region)."""
        target = status_region(self, region)
        stub = replication_admin_pb2_grpc.ReplicationAdminStub(self._channel(target))
        try:
            response = await stub.GetReplicationStatus(
                admin_pb.GetReplicationStatusRequest(), timeout=_timeout(self, timeout_s)
            )
        except grpc.RpcError as error:
            raise rpc_error("GetReplicationStatus", target, error) from error
        return replication_status_result(response, target)


__all__ = ["AsyncReplicationMethods", "ReplicationMethods"]
