"""Root key providers: the region's key that wraps every key material at rest.

A provider wraps and unwraps key material; the caller binds the key id and key material id
into ``aad``, so that wrapped material cannot be moved to another key or version.
:class:`FileRootKeyProvider` keeps the root key in a local file, the embedded default.

Root key file, 56 bytes, mode 0600:

    offset  size  field
    0       8     magic b"MRDNRK1\\n" (the 1 is the file format version)
    8       32    root key
    40      16    check value: HKDF-SHA256 of the root key, info b"meridian/root-key/v1/check"

Wrapped material:

    offset  size  field
    0       1     wrapped format version = 0x01
    1       1     provider = 0x01 (file root key, AES-256-GCM)
    2       12    nonce (random)
    14      n+16  AES-256-GCM ciphertext || tag, authenticated data = the caller's aad

The AES key is not the root key itself but HKDF-SHA256 of it with info
b"meridian/root-key/v1/wrap"; other labels derive the check value and the root key id.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT_KEY_BYTES = 32
# Large enough for every private key Meridian stores (an RSA-4096 or ML-DSA-87 key in
# PKCS#8 is under 8 KiB), small enough that a corrupt length cannot exhaust memory.
WRAPPED_MATERIAL_BYTES_MAX = 65536

_FILE_MAGIC = b"MRDNRK1\n"
_CHECK_VALUE_BYTES = 16
_FILE_BYTES = len(_FILE_MAGIC) + ROOT_KEY_BYTES + _CHECK_VALUE_BYTES
_FILE_MODE = 0o600

# Each use of the root key gets its own HKDF label, so that the key which encrypts
# material, the value that checks the file, and the id shown in logs are independent:
# neither the check value nor the id reveals anything about the wrapping key.
_WRAP_KEY_INFO = b"meridian/root-key/v1/wrap"
_CHECK_VALUE_INFO = b"meridian/root-key/v1/check"
_ROOT_KEY_ID_INFO = b"meridian/root-key/v1/key-id"
_ROOT_KEY_ID_BYTES = 8

_WRAPPED_VERSION = 0x01
_PROVIDER_FILE = 0x01
_WRAPPED_PREFIX = bytes((_WRAPPED_VERSION, _PROVIDER_FILE))
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_OVERHEAD_BYTES = len(_WRAPPED_PREFIX) + _NONCE_BYTES + _TAG_BYTES

_UNWRAP_FAILED = "stored key material failed to unwrap with the region root key"


class RootKeyError(Exception):
    """The root key or material wrapped by it is unusable: corruption or the wrong root key.

    This is an internal error for the operator, never the answer to a caller's input.
    """


class RootKeyProvider(Protocol):
    """Wraps key material under the region's root key. Async because an HSM call blocks."""

    @property
    def name(self) -> str:
        """The provider's kind, for logs and configuration, e.g. ``"file"``."""
        ...

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        """Encrypt ``material``, binding it to ``aad``."""
        ...

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        """Decrypt what :meth:`wrap` returned for the same ``aad``; else raise RootKeyError."""
        ...


class FileRootKeyProvider:
    """A root key kept in a local file with mode 0600.

    Wrapping takes microseconds, so the async methods work inline instead of in a thread.
    """

    __slots__ = ("_aead", "_path", "_randbytes", "_root_key_id")

    def __init__(
        self,
        root_key: bytes,
        *,
        path: Path | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Use ``root_key`` directly; :meth:`open_or_create` is the way to use a file."""
        if not isinstance(root_key, bytes) or len(root_key) != ROOT_KEY_BYTES:
            raise ValueError(f"root_key must be {ROOT_KEY_BYTES} bytes")
        self._aead = AESGCM(_derive(root_key, _WRAP_KEY_INFO, ROOT_KEY_BYTES))
        self._root_key_id = _derive(root_key, _ROOT_KEY_ID_INFO, _ROOT_KEY_ID_BYTES).hex()
        self._path = path
        self._randbytes = randbytes

    @classmethod
    def open_or_create(
        cls, path: Path, *, randbytes: Callable[[int], bytes] = os.urandom
    ) -> FileRootKeyProvider:
        """Open the root key file at ``path``, creating it with a new random key if absent.

        Raises RootKeyError if the file is accessible to group or others, has the wrong
        size or format, fails its check value, or cannot be read or created.
        """
        try:
            root_key = _read_root_key_file(path)
        except FileNotFoundError:
            created = _create_root_key_file(path, randbytes)
            # None means that another process created the file between our read and our
            # create; its key is the one that counts, since it may already wrap material.
            root_key = _read_root_key_file(path) if created is None else created
        return cls(root_key, path=path, randbytes=randbytes)

    @property
    def name(self) -> str:
        return "file"

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def root_key_id(self) -> str:
        """A 16-hex-digit id of the root key for logs; derived by HKDF, not a hash of the key."""
        return self._root_key_id

    def __repr__(self) -> str:
        return f"FileRootKeyProvider(path={self._path!r}, root_key_id={self._root_key_id!r})"

    async def wrap(self, material: bytes, *, aad: bytes) -> bytes:
        if not 1 <= len(material) <= WRAPPED_MATERIAL_BYTES_MAX:
            raise ValueError(f"material must be 1 to {WRAPPED_MATERIAL_BYTES_MAX} bytes")
        nonce = self._randbytes(_NONCE_BYTES)
        if len(nonce) != _NONCE_BYTES:
            raise ValueError(f"randbytes({_NONCE_BYTES}) returned {len(nonce)} bytes")
        # A random nonce under one key is safe for 2^32 messages; a region wraps one
        # material per key version it stores, which stays many orders of magnitude below.
        return _WRAPPED_PREFIX + nonce + self._aead.encrypt(nonce, material, aad)

    async def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        material_bytes = len(wrapped) - _WRAPPED_OVERHEAD_BYTES
        if not 1 <= material_bytes <= WRAPPED_MATERIAL_BYTES_MAX:
            raise RootKeyError(_UNWRAP_FAILED)
        if not wrapped.startswith(_WRAPPED_PREFIX):
            raise RootKeyError(_UNWRAP_FAILED)
        nonce_end = len(_WRAPPED_PREFIX) + _NONCE_BYTES
        try:
            return self._aead.decrypt(
                wrapped[len(_WRAPPED_PREFIX) : nonce_end], wrapped[nonce_end:], aad
            )
        except InvalidTag:
            raise RootKeyError(_UNWRAP_FAILED) from None


def _derive(root_key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(root_key)


def _read_root_key_file(path: Path) -> bytes:
    """Return the root key in ``path``; FileNotFoundError if there is none."""
    try:
        # O_NONBLOCK keeps a FIFO planted at the path from hanging the node at open; it has
        # no effect on the regular file that the check below then insists on.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(descriptor, "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise RootKeyError(f"root key file {path} is not a regular file")
            mode = stat.S_IMODE(status.st_mode)
            if mode & 0o077:
                raise RootKeyError(
                    f"root key file {path} has mode {mode:04o}; it must not be accessible "
                    f"to group or others (chmod 600 {path})"
                )
            # One byte more than expected tells an overlong file from a correct one.
            contents = file.read(_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RootKeyError(f"cannot read root key file {path}: {error.strerror}") from error
    if len(contents) != _FILE_BYTES:
        raise RootKeyError(
            f"root key file {path} has the wrong size ({len(contents)} bytes, "
            f"expected {_FILE_BYTES}); it is damaged or not a root key file"
        )
    if not contents.startswith(_FILE_MAGIC):
        raise RootKeyError(f"root key file {path} is not a Meridian root key file, version 1")
    root_key = contents[len(_FILE_MAGIC) : len(_FILE_MAGIC) + ROOT_KEY_BYTES]
    check_value = contents[len(_FILE_MAGIC) + ROOT_KEY_BYTES :]
    if not hmac.compare_digest(
        check_value, _derive(root_key, _CHECK_VALUE_INFO, _CHECK_VALUE_BYTES)
    ):
        raise RootKeyError(f"root key file {path} is corrupted: its check value does not match")
    return root_key


def _create_root_key_file(path: Path, randbytes: Callable[[int], bytes]) -> bytes | None:
    """Create ``path`` atomically with a new root key; None if ``path`` exists already.

    The key is written and synced under a temporary name, then hard-linked to ``path``.
    A crash therefore never leaves a partial root key file, and unlike a rename, a link
    never replaces a root key file that another process created meanwhile.
    """
    root_key = randbytes(ROOT_KEY_BYTES)
    if len(root_key) != ROOT_KEY_BYTES:
        raise ValueError(f"randbytes({ROOT_KEY_BYTES}) returned {len(root_key)} bytes")
    contents = _FILE_MAGIC + root_key + _derive(root_key, _CHECK_VALUE_INFO, _CHECK_VALUE_BYTES)
    # The temporary name needs only to be unique, not reproducible, so it does not draw
    # on the injected randomness.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        _write_synced(temporary, contents)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        _fsync_directory(path.parent)
    except OSError as error:
        raise RootKeyError(f"cannot create root key file {path}: {error}") from error
    return root_key


def _write_synced(path: Path, contents: bytes) -> None:
    """Write a new file readable by its owner only, and sync it to disk."""
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, _FILE_MODE)
    try:
        # The umask may only have narrowed the mode; this makes it exactly 0600 regardless.
        os.fchmod(descriptor, _FILE_MODE)
        written = os.write(descriptor, contents)
        if written != len(contents):
            raise OSError(f"short write of {written} of {len(contents)} bytes")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, so that a crash cannot lose the root key."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
