"""A stand-in for ``grpc.aio.ServicerContext`` when the gateway calls a servicer method.

Servicers receive a context beside the request. They are meant to translate only and
today ignore it, but one may read metadata or abort; this gives them the same answers
over HTTP that they would get over gRPC, so a servicer never needs to know its transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from meridian.server.domain import errors

# The inverse of server/api/errors.py's table is many-to-one; an abort carries only a
# code, so it becomes the most general reason of that code.
_REASON_BY_CODE: dict[grpc.StatusCode, type[errors.KmsError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFoundException,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExistsException,
    grpc.StatusCode.INVALID_ARGUMENT: errors.ValidationException,
    grpc.StatusCode.FAILED_PRECONDITION: errors.KMSInvalidStateException,
    grpc.StatusCode.PERMISSION_DENIED: errors.AccessDeniedException,
    grpc.StatusCode.UNAUTHENTICATED: errors.AccessDeniedException,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.LimitExceededException,
    grpc.StatusCode.UNAVAILABLE: errors.DependencyTimeoutException,
}

Metadata = tuple[tuple[str, str | bytes], ...]


class GatewayContext:
    """The parts of a gRPC servicer context that make sense for an HTTP call."""

    def __init__(self, *, peer: str, metadata: Metadata = ()) -> None:
        self._peer = peer
        self._metadata = metadata
        self._trailing: Metadata = ()
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        # No certificate: the caller was authenticated by SigV4 (see CallInfo.facts).
        return {}

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        del metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str | None:
        return self._details

    def set_compression(self, compression: Any) -> None:
        del compression

    def disable_next_message_compression(self) -> None:
        return None

    def time_remaining(self) -> float | None:
        return None

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        del trailing_metadata
        error_class = _REASON_BY_CODE.get(code, errors.KMSInternalException)
        if error_class is errors.KMSInternalException:
            raise errors.KMSInternalException()
        raise error_class(details or code.name)
