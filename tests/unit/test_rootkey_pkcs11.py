"""The PKCS#11 root key provider against a real SoftHSM2 token.

Round trips with each mechanism the token offers, the blob format, binding to the AAD,
tamper detection, restarts with the same token, the operator's errors (module, token,
PIN, key), and an HSM that stops answering (a gate in front of the real token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import AsyncIterator

import pytest
from hsm_support import (
    PIN_ENV,
    PIN_TEST_PIN,
    PIN_TEST_TOKEN_LABEL,
    TOKEN_LABEL,
    gated_token,
    wait_until,
)

from meridian.server.domain.crypto.rootkey import WRAPPED_MATERIAL_BYTES_MAX, RootKeyError
from meridian.server.domain.errors import DependencyTimeoutException
from meridian.server.rootkeys import open_pkcs11

pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")

from meridian.server.domain.crypto.pkcs11_token import (
    Pkcs11Token,
    TokenSettings,
    TokenUnavailable,
    WrapMechanism,
)
from meridian.server.domain.crypto.rootkey_pkcs11 import (
    Pkcs11RootKeyProvider,
    TokenWorker,
)

AAD = b"meridian/key-material/v1\x00key-id\x00" + bytes(32)
MATERIAL = bytes(range(32))
UNWRAP_FAILED = "stored key material failed to unwrap with the region root key"


@pytest.fixture(params=["aes-gcm", "aes-key-wrap-pad"])
async def provider(request, softhsm) -> AsyncIterator[Pkcs11RootKeyProvider]:
    opened = await open_pkcs11(softhsm.pkcs11_config(mechanism=request.param))
    try:
        yield opened
    finally:
        await opened.aclose()


# ---- round trips and format --------------------------------------------------------


@pytest.mark.parametrize("size", [1, 32, 4096, WRAPPED_MATERIAL_BYTES_MAX])
async def test_round_trip(provider, size) -> None:
    material = os.urandom(size)
    wrapped = await provider.wrap(material, aad=AAD)
    if size >= 16:  # a shorter random string may turn up in any blob by chance
        assert material not in wrapped
    assert await provider.unwrap(wrapped, aad=AAD) == material


async def test_blob_records_provider_and_mechanism(provider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    assert wrapped[:3] == bytes((0x01, 0x02, provider.mechanism.value))
    if provider.mechanism is WrapMechanism.AES_GCM:
        # version, provider, mechanism, 12-byte nonce, ciphertext, 16-byte tag
        assert len(wrapped) == 3 + 12 + len(MATERIAL) + 16
    else:
        # RFC 5649 of digest (32) + length (4) + material, padded to 8, plus 8
        assert len(wrapped) == 3 + 32 + 4 + len(MATERIAL) + 4 + 8


async def test_gcm_wraps_are_randomized_and_key_wrap_is_bound(provider) -> None:
    first = await provider.wrap(MATERIAL, aad=AAD)
    second = await provider.wrap(MATERIAL, aad=AAD)
    if provider.mechanism is WrapMechanism.AES_GCM:
        assert first != second
    assert await provider.unwrap(second, aad=AAD) == MATERIAL


async def test_wrong_aad_is_refused(provider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    with pytest.raises(RootKeyError, match=UNWRAP_FAILED):
        await provider.unwrap(wrapped, aad=AAD + b"x")


async def test_every_tampered_byte_is_refused(provider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    # The header, the start and the end of the body: each position is checked.
    for position in (0, 1, 2, 3, 10, len(wrapped) // 2, len(wrapped) - 1):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(RootKeyError):
            await provider.unwrap(bytes(tampered), aad=AAD)


async def test_truncated_and_foreign_blobs_are_refused(provider) -> None:
    wrapped = await provider.wrap(MATERIAL, aad=AAD)
    for blob in (b"", wrapped[:3], wrapped[:-1], b"\x01\x01" + wrapped[2:], wrapped + b"\x00"):
        with pytest.raises(RootKeyError):
            await provider.unwrap(blob, aad=AAD)


async def test_material_bounds(provider) -> None:
    with pytest.raises(ValueError, match="material must be"):
        await provider.wrap(b"", aad=AAD)
    with pytest.raises(ValueError, match="material must be"):
        await provider.wrap(bytes(WRAPPED_MATERIAL_BYTES_MAX + 1), aad=AAD)


async def test_each_blob_unwraps_with_the_mechanism_it_records(softhsm) -> None:
    config = softhsm.pkcs11_config(mechanism="aes-key-wrap-pad")
    key_wrap = await open_pkcs11(config)
    try:
        wrapped = await key_wrap.wrap(MATERIAL, aad=AAD)
    finally:
        await key_wrap.aclose()
    gcm = await open_pkcs11(dataclasses.replace(config, mechanism="auto"))
    try:
        assert gcm.mechanism is WrapMechanism.AES_GCM
        assert await gcm.unwrap(wrapped, aad=AAD) == MATERIAL
    finally:
        await gcm.aclose()


# ---- the root key in the token -----------------------------------------------------


def user_session(token, softhsm):  # type: ignore[no-untyped-def]
    """A read-write user session on the token, logged in by this test or already before.

    PKCS#11 login belongs to the process: while another session of this process (a node
    an earlier test left open, say) is logged in, a new C_Login fails.
    """
    import pkcs11

    try:
        return token.open(rw=True, user_pin=softhsm.user_pin_file.read_text().strip())
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=True)


async def test_root_key_is_generated_once_and_found_after_a_restart(softhsm) -> None:
    config = softhsm.pkcs11_config()
    first = await open_pkcs11(config)
    try:
        assert first.info.key_created
        wrapped = await first.wrap(MATERIAL, aad=AAD)
    finally:
        await first.aclose()
    again = await open_pkcs11(config)
    try:
        assert not again.info.key_created
        assert again.info.key_id == first.info.key_id
        assert await again.unwrap(wrapped, aad=AAD) == MATERIAL
    finally:
        await again.aclose()


async def test_root_key_never_leaves_the_token(softhsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    config = softhsm.pkcs11_config()
    provider = await open_pkcs11(config)
    await provider.aclose()
    token = pkcs11.lib(softhsm.module).get_token(token_label=TOKEN_LABEL)
    with user_session(token, softhsm) as session:
        key = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=config.key_label)
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.TOKEN] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]


async def test_an_extractable_key_is_refused(softhsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType

    config = softhsm.pkcs11_config()
    token = pkcs11.lib(softhsm.module).get_token(token_label=TOKEN_LABEL)
    with user_session(token, softhsm) as session:
        session.generate_key(
            KeyType.AES, 256, label=config.key_label, store=True,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )  # fmt: skip
    with pytest.raises(RootKeyError, match="can be extracted from the token"):
        await open_pkcs11(config)


async def test_a_missing_key_is_created_only_when_allowed(softhsm) -> None:
    config = softhsm.pkcs11_config()
    with pytest.raises(RootKeyError, match=f"holds no AES key labelled '{config.key_label}'"):
        await open_pkcs11(config, create_key=False)


# ---- what the operator sees when something is wrong --------------------------------


async def test_missing_module(softhsm, tmp_path) -> None:
    config = softhsm.pkcs11_config(module=str(tmp_path / "libnothing.so"))
    with pytest.raises(RootKeyError, match=r"does not exist .*apt-get install softhsm2"):
        await open_pkcs11(config)


async def test_a_file_that_is_no_pkcs11_module(softhsm, tmp_path) -> None:
    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"not a shared library")
    with pytest.raises(RootKeyError, match=f"PKCS#11 module {bogus} cannot be loaded"):
        await open_pkcs11(softhsm.pkcs11_config(module=str(bogus)))


async def test_missing_token(softhsm) -> None:
    config = softhsm.pkcs11_config(token_label="no-such-token")
    with pytest.raises(RootKeyError) as caught:
        await open_pkcs11(config)
    message = str(caught.value)
    assert "no token labelled 'no-such-token'" in message
    assert f"'{TOKEN_LABEL}'" in message  # the tokens that are there
    assert "meridian hsm init" in message


async def test_wrong_pin_is_named_and_not_echoed(softhsm, tmp_path, monkeypatch) -> None:
    wrong = "wrong-pin-5678"
    monkeypatch.setenv(PIN_ENV, wrong)
    config = softhsm.pkcs11_config(token_label=PIN_TEST_TOKEN_LABEL, pin_env=PIN_ENV, pin_file=None)
    with pytest.raises(RootKeyError, match="refused the PIN") as caught:
        await open_pkcs11(config)
    assert wrong not in str(caught.value)
    assert PIN_TEST_PIN not in str(caught.value)


async def test_pin_env_unset(softhsm, monkeypatch) -> None:
    monkeypatch.delenv(PIN_ENV, raising=False)
    config = softhsm.pkcs11_config(pin_env=PIN_ENV, pin_file=None)
    with pytest.raises(RootKeyError, match=f"environment variable {PIN_ENV}"):
        await open_pkcs11(config)


async def test_pin_file_readable_by_others_is_refused(softhsm, tmp_path) -> None:
    pin_file = tmp_path / "user.pin"
    pin_file.write_text(softhsm.user_pin_file.read_text())
    pin_file.chmod(0o644)
    with pytest.raises(RootKeyError, match="accessible to group or others"):
        await open_pkcs11(softhsm.pkcs11_config(pin_file=pin_file))


async def test_pin_from_the_environment(softhsm, monkeypatch) -> None:
    monkeypatch.setenv(PIN_ENV, softhsm.user_pin_file.read_text().strip())
    provider = await open_pkcs11(softhsm.pkcs11_config(pin_env=PIN_ENV, pin_file=None))
    try:
        assert await provider.unwrap(await provider.wrap(MATERIAL, aad=AAD), aad=AAD) == MATERIAL
    finally:
        await provider.aclose()


# ---- an HSM that stops answering, and one that drops the session --------------------


async def test_an_hsm_that_stops_answering_times_out_and_recovers(softhsm) -> None:
    gate = gated_token(softhsm)
    provider = await Pkcs11RootKeyProvider.open(gate, timeout_s=0.2, pending_calls_max=2)
    try:
        wrapped = await provider.wrap(MATERIAL, aad=AAD)
        gate.open.clear()
        with pytest.raises(DependencyTimeoutException):
            await provider.unwrap(wrapped, aad=AAD)  # runs, and hangs in the "HSM"
        with pytest.raises(DependencyTimeoutException):
            await provider.wrap(MATERIAL, aad=AAD)  # waits behind it, then gives up
        waiting = provider._worker.pending
        assert waiting == 2
        # The queue is full: the next call fails at once instead of piling up.
        with pytest.raises(DependencyTimeoutException):
            await provider.unwrap(wrapped, aad=AAD)
        calls_before = gate.calls
        gate.open.set()
        await wait_until(lambda: provider._worker.pending == 0)
        assert await provider.unwrap(wrapped, aad=AAD) == MATERIAL
        # The hung call finished; the one whose caller had given up was never run.
        assert gate.calls == calls_before + 2
    finally:
        await provider.aclose()


async def test_a_lost_session_is_reopened(softhsm) -> None:
    gate = gated_token(softhsm)
    provider = await Pkcs11RootKeyProvider.open(gate, timeout_s=5)
    try:
        wrapped = await provider.wrap(MATERIAL, aad=AAD)
        # The device drops the session (an HSM restart, a network blip to a network HSM).
        gate.token._session.close()
        assert await provider.unwrap(wrapped, aad=AAD) == MATERIAL
    finally:
        await provider.aclose()


async def test_a_failing_device_is_a_dependency_failure(softhsm) -> None:
    gate = gated_token(softhsm)
    provider = await Pkcs11RootKeyProvider.open(gate, timeout_s=5)
    try:
        wrapped = await provider.wrap(MATERIAL, aad=AAD)
        gate.failure = TokenUnavailable("DeviceError")
        with pytest.raises(DependencyTimeoutException, match="did not answer in time"):
            await provider.unwrap(wrapped, aad=AAD)
        gate.failure = None
        assert await provider.unwrap(wrapped, aad=AAD) == MATERIAL
    finally:
        await provider.aclose()


async def test_an_hsm_that_never_answers_at_start_is_a_start_error(softhsm) -> None:
    gate = gated_token(softhsm)
    gate.open.clear()
    with pytest.raises(RootKeyError, match=r"did not answer within 0\.2 s"):
        await Pkcs11RootKeyProvider.open(gate, timeout_s=0.2)
    gate.open.set()


async def test_worker_skips_calls_cancelled_while_queued() -> None:
    worker = TokenWorker(pending_calls_max=4)
    release = threading.Event()
    ran: list[str] = []
    try:
        first = worker.submit(lambda: release.wait() and ran.append("first"))
        second = worker.submit(lambda: ran.append("second"))
        assert second.cancel()
        release.set()
        await asyncio.wrap_future(first)
        third = worker.submit(lambda: ran.append("third"))
        await asyncio.wrap_future(third)
        assert ran == ["first", "third"]
        assert worker.pending == 0
    finally:
        release.set()
        worker.close()


def test_token_settings_never_show_the_pin() -> None:
    settings = TokenSettings(module="m.so", token_label="t", key_label="k", pin="s3cr3t-pin")
    assert "s3cr3t-pin" not in repr(settings)
    assert "s3cr3t-pin" not in repr(Pkcs11Token(settings))
