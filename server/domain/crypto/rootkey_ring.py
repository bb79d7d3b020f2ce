"""The region's root keys: the current one, and the previous one while material moves.

Every wrapped blob names the kind of provider that wrapped it (byte 1 of its header: 0x01
the key file, 0x02 PKCS#11). The ring wraps new material with the current provider and
unwraps each blob with the provider that wrapped it. During a migration from one kind to
the other (``meridian node rewrap-root``) a node therefore serves every key, whichever
root key its material is under at that moment; once the migration is done the previous
provider can be removed from the configuration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from meridian.server.domain.crypto.rootkey import RootKeyError, RootKeyProvider

# The provider byte of each wrapped-material format (rootkey.py, rootkey_pkcs11.py).
PROVIDER_IDS: dict[str, int] = {"file": 0x01, "pkcs11": 0x02}
_PROVIDER_NAMES = {value: name for name, value in PROVIDER_IDS.items()}
_WRAPPED_VERSION = 0x01

Closer = Callable[[], Awaitable[None]]


def wrapped_by(wrapped: bytes) -> str | None:
    """The kind of provider that wrapped ``wrapped`` ("file", "pkcs11"), or None if unknown."""
    if len(wrapped) < 2 or wrapped[0] != _WRAPPED_VERSION:
        return None
    return _PROVIDER_NAMES.get(wrapped[1])


class RootKeyRing:
    """A RootKeyProvider over the current provider and, optionally, the previous one."""

    def __init__(
        self,
        current: RootKeyProvider,
        previous: RootKeyProvider | None = None,
        *,
        closers: Sequence[Closer] = (),
    ) -> None:
        if current.name not in PROVIDER_IDS:
            raise ValueError(f"unknown root key provider {current.name!r}")
        if previous is not None and previous.name == current.name:
            # Blobs say which kind of provider wrapped them, not which instance: two of
            # one kind could not be told apart.
            raise ValueError("the previous root key provider must be of another kind")
        self._current = current
        self._previous = previous
        self._closers = list(closers)

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def current(self) -> RootKeyProvider:
        return self._current

    @property
    def previous(self) -> RootKeyProvider | None:
        return self._previous

    def provider_for(self, kind: str) -> RootKeyProvider | None:
        for provider in (self._current, self._previous):
            if provider is not None and provider.name == kind:
                return provider
        return None

    def __repr__(self) -> str:
        return f"RootKeyRing(current={self._current!r}, previous={self._previous!r})"

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        return await self._current.wrap(material, aad=aad)

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        kind = wrapped_by(wrapped)
        provider = None if kind is None else self.provider_for(kind)
        if provider is None:
            if kind is None:
                raise RootKeyError("stored key material failed to unwrap with the region root key")
            raise RootKeyError(
                f"stored key material is wrapped by a {kind} root key, but this node is "
                f"configured with {self._describe()}; add it as [root_key.previous]"
            )
        return await provider.unwrap(wrapped, aad=aad)

    async def aclose(self) -> None:
        """Release what the providers hold (an HSM session); safe to call twice."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()

    def _describe(self) -> str:
        if self._previous is None:
            return f"a {self._current.name} root key only"
        return f"{self._current.name} and {self._previous.name} root keys"
