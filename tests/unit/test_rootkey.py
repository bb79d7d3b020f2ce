"""The file root key provider: the key file's creation and checks, and wrapping."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meridian.server.domain.crypto.rootkey import (
    WRAPPED_MATERIAL_BYTES_MAX,
    FileRootKeyProvider,
    RootKeyError,
    RootKeyProvider,
)

MATERIAL = bytes(range(0xA0, 0xC0))
AAD = b"key-id=1234abcd-12ab-34cd-56ef-1234567890ab;key-material-id=" + bytes(32)
UNWRAP_FAILED = "stored key material failed to unwrap with the region root key"
FILE_BYTES = 56


def counting_randbytes() -> Callable[[int], bytes]:
    """A reproducible random source: successive calls return successive counter bytes."""
    counter = iter(range(1_000_000))

    def randbytes(size: int) -> bytes:
        return bytes(next(counter) % 256 for _ in range(size))

    return randbytes


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "root.key"


@pytest.fixture
def provider(key_path: Path) -> FileRootKeyProvider:
    return FileRootKeyProvider.open_or_create(key_path)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with a umask that would let a careless create make a world-readable file."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# Creating and opening the file.


def test_created_file_has_mode_0600_and_the_documented_size(key_path: Path) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    status = key_path.stat()
    assert stat.S_IMODE(status.st_mode) == 0o600
    assert status.st_size == FILE_BYTES
    assert key_path.read_bytes().startswith(b"MRDNRK1\n")


@pytest.mark.usefixtures("open_umask")
def test_created_file_is_0600_whatever_the_umask(key_path: Path) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_create_leaves_no_temporary_file_behind(key_path: Path) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    assert [path.name for path in key_path.parent.iterdir()] == [key_path.name]


def test_file_holds_the_key_from_randbytes(key_path: Path) -> None:
    root_key = bytes(range(32))
    FileRootKeyProvider.open_or_create(key_path, randbytes=lambda size: root_key[:size])
    assert key_path.read_bytes()[8:40] == root_key


def test_reopening_gives_the_same_key(key_path: Path) -> None:
    first = FileRootKeyProvider.open_or_create(key_path)
    contents = key_path.read_bytes()
    second = FileRootKeyProvider.open_or_create(key_path)
    assert key_path.read_bytes() == contents
    assert second.root_key_id == first.root_key_id


async def test_reopened_provider_gives_the_same_wraps(key_path: Path) -> None:
    first = FileRootKeyProvider.open_or_create(key_path, randbytes=counting_randbytes())
    wrapped = await first.wrap(MATERIAL, aad=AAD)
    # The same nonce source after the same draws (the 32-byte root key) gives the same
    # nonce, so equal wraps prove that the key and the wrapping are the same.
    randbytes = counting_randbytes()
    randbytes(32)
    second = FileRootKeyProvider.open_or_create(key_path, randbytes=randbytes)
    assert await second.wrap(MATERIAL, aad=AAD) == wrapped
    assert await second.unwrap(wrapped, aad=AAD) == MATERIAL


async def test_other_root_key_cannot_unwrap(tmp_path: Path) -> None:
    first = FileRootKeyProvider.open_or_create(tmp_path / "a.key")
    second = FileRootKeyProvider.open_or_create(tmp_path / "b.key")
    assert first.root_key_id != second.root_key_id
    with pytest.raises(RootKeyError, match=f"^{UNWRAP_FAILED}$"):
        await second.unwrap(await first.wrap(MATERIAL, aad=AAD), aad=AAD)


def test_root_key_id_is_16_hex_digits_and_not_a_plain_hash(key_path: Path) -> None:
    provider = FileRootKeyProvider.open_or_create(key_path)
    root_key = key_path.read_bytes()[8:40]
    assert len(provider.root_key_id) == 16
    int(provider.root_key_id, 16)
    assert provider.root_key_id not in hashlib.sha256(root_key).hexdigest()
    assert provider.root_key_id not in root_key.hex()
    assert provider.root_key_id not in key_path.read_bytes().hex()


def test_repr_shows_no_key(key_path: Path) -> None:
    provider = FileRootKeyProvider.open_or_create(key_path)
    root_key = key_path.read_bytes()[8:40]
    assert root_key.hex() not in repr(provider)
    assert repr(root_key) not in repr(provider)
    assert provider.root_key_id in repr(provider)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610, 0o601])
def test_refuses_a_file_accessible_to_group_or_others(key_path: Path, mode: int) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    key_path.chmod(mode)
    with pytest.raises(RootKeyError, match=f"mode {mode:04o}.*chmod 600"):
        FileRootKeyProvider.open_or_create(key_path)


def test_accepts_a_read_only_file(key_path: Path) -> None:
    first = FileRootKeyProvider.open_or_create(key_path)
    key_path.chmod(0o400)
    assert FileRootKeyProvider.open_or_create(key_path).root_key_id == first.root_key_id


@pytest.mark.parametrize("position", range(FILE_BYTES))
def test_detects_a_changed_byte_anywhere_in_the_file(key_path: Path, position: int) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    contents = bytearray(key_path.read_bytes())
    contents[position] ^= 0x01
    key_path.write_bytes(bytes(contents))
    with pytest.raises(RootKeyError, match=r"corrupted|not a Meridian root key file"):
        FileRootKeyProvider.open_or_create(key_path)


@pytest.mark.parametrize("size", [0, 1, 40, FILE_BYTES - 1, FILE_BYTES + 1, 4096])
def test_refuses_a_file_of_the_wrong_size(key_path: Path, size: int) -> None:
    FileRootKeyProvider.open_or_create(key_path)
    contents = key_path.read_bytes()
    key_path.write_bytes((contents * 100)[:size])
    with pytest.raises(RootKeyError, match="wrong size"):
        FileRootKeyProvider.open_or_create(key_path)


def test_refuses_a_directory(key_path: Path) -> None:
    key_path.mkdir(mode=0o700)
    with pytest.raises(RootKeyError, match=r"cannot read root key file .*: Is a directory"):
        FileRootKeyProvider.open_or_create(key_path)


@pytest.mark.timeout(10)
def test_refuses_a_fifo_without_hanging(key_path: Path) -> None:
    os.mkfifo(key_path, 0o600)
    with pytest.raises(RootKeyError, match="not a regular file"):
        FileRootKeyProvider.open_or_create(key_path)


def test_missing_parent_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RootKeyError, match="cannot create root key file"):
        FileRootKeyProvider.open_or_create(tmp_path / "absent" / "root.key")


def test_a_file_created_concurrently_wins(
    tmp_path: Path, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another process creates the file first, its key is used and never replaced."""
    winner = FileRootKeyProvider.open_or_create(tmp_path / "winner.key")
    real_link = os.link

    def link_after_the_other_process(source: Path, destination: Path) -> None:
        real_link(tmp_path / "winner.key", destination)
        real_link(source, destination)

    monkeypatch.setattr(os, "link", link_after_the_other_process)
    loser = FileRootKeyProvider.open_or_create(key_path)
    assert loser.root_key_id == winner.root_key_id
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root.key", "winner.key"]


def test_a_root_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FileRootKeyProvider(bytes(31))


# Wrapping.


async def test_wrap_unwrap_round_trip(provider: FileRootKeyProvider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    assert await provider.unwrap(wrapped, aad=AAD) == MATERIAL


async def test_wrapped_format_is_versioned_and_hides_the_material(
    provider: FileRootKeyProvider,
) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    assert wrapped[:2] == b"\x01\x01"
    assert len(wrapped) == 2 + 12 + len(MATERIAL) + 16
    assert MATERIAL not in wrapped


async def test_each_wrap_draws_a_fresh_nonce(provider: FileRootKeyProvider) -> None:
    assert await provider.wrap(MATERIAL, aad=AAD) != await provider.wrap(MATERIAL, aad=AAD)


@pytest.mark.parametrize("size", [1, 32, 2400, WRAPPED_MATERIAL_BYTES_MAX])
async def test_wraps_material_of_every_allowed_size(
    provider: FileRootKeyProvider, size: int
) -> None:
    material = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert await provider.unwrap(await provider.wrap(material, aad=AAD), aad=AAD) == material


@pytest.mark.parametrize("size", [0, WRAPPED_MATERIAL_BYTES_MAX + 1])
async def test_refuses_to_wrap_material_of_a_bad_size(
    provider: FileRootKeyProvider, size: int
) -> None:
    with pytest.raises(ValueError, match="material must be"):
        await provider.wrap(bytes(size), aad=AAD)


@pytest.mark.parametrize("aad", [b"", AAD + b"x", AAD[:-1], AAD.replace(b"1234", b"4321")])
async def test_wrong_aad_fails(provider: FileRootKeyProvider, aad: bytes) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    with pytest.raises(RootKeyError) as raised:
        await provider.unwrap(wrapped, aad=aad)
    assert str(raised.value) == UNWRAP_FAILED
    assert raised.value.__cause__ is None


async def test_changing_any_byte_of_a_wrap_fails(provider: FileRootKeyProvider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    for position in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(RootKeyError, match=f"^{UNWRAP_FAILED}$"):
            await provider.unwrap(bytes(tampered), aad=AAD)


async def test_truncated_wraps_fail(provider: FileRootKeyProvider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    for length in range(len(wrapped)):
        with pytest.raises(RootKeyError, match=f"^{UNWRAP_FAILED}$"):
            await provider.unwrap(wrapped[:length], aad=AAD)


async def test_overlong_wrap_fails_before_decrypting(provider: FileRootKeyProvider) -> None:
    with pytest.raises(RootKeyError, match=f"^{UNWRAP_FAILED}$"):
        await provider.unwrap(b"\x01\x01" + bytes(12 + WRAPPED_MATERIAL_BYTES_MAX + 17), aad=AAD)


async def test_file_provider_is_a_root_key_provider(provider: FileRootKeyProvider) -> None:
    generic: RootKeyProvider = provider
    assert generic.name == "file"
    assert await generic.unwrap(await generic.wrap(MATERIAL, aad=AAD), aad=AAD) == MATERIAL
