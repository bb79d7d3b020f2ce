"""The blocking side of the PKCS#11 root key: one logged-in session on one token.

This is the only module that talks to a PKCS#11 library (through python-pkcs11). It knows
nothing of Meridian's wrapped-material format (``rootkey_pkcs11.py``) or of asyncio: every
method blocks, and the async provider runs them on one worker thread of its own, because a
PKCS#11 session must not be used by two threads at once and C_Login is per application.

Three kinds of failure, because callers must treat them differently:

- :class:`TokenSetupError` — the operator's configuration cannot work (module missing,
  token absent, PIN wrong, key unsuitable). Raised while connecting, with a message that
  says what to fix. Never contains the PIN.
- :class:`TokenUnavailable` — the device or the session failed (removed, reset, not
  answering properly). Transient: the next call reconnects.
- :class:`TokenDataError` — the token refused the data itself (a GCM tag or key-wrap
  integrity check failed): the wrapped material is corrupt or under another key.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import Mechanism as CKM
from pkcs11 import exceptions as ck
from pkcs11.mechanisms import GCMParams

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

ROOT_KEY_BITS = 256
ROOT_KEY_ID_BYTES = 16
TOKEN_LABEL_CHARS_MAX = 32
GCM_NONCE_BYTES = 12
GCM_TAG_BITS = 128

_T = TypeVar("_T")


class TokenSetupError(Exception):
    """The module, token, PIN or key as configured cannot be used; the message says why."""


class TokenUnavailable(Exception):
    """The token did not complete a call (device error, lost session); retry later."""


class TokenDataError(Exception):
    """The token refused the wrapped data: corrupt, tampered with, or under another key."""


class WrapMechanism(enum.Enum):
    """How the token wraps material; the value is the byte recorded in each wrapped blob."""

    AES_GCM = 0x01  # CKM_AES_GCM through C_Encrypt/C_Decrypt
    AES_KEY_WRAP_KWP = 0x02  # CKM_AES_KEY_WRAP_KWP (RFC 5649) through C_WrapKey/C_UnwrapKey
    AES_KEY_WRAP_PAD = 0x03  # CKM_AES_KEY_WRAP_PAD, the pre-3.1 name tokens use for RFC 5649

    @property
    def config_name(self) -> str:
        """The name in the node config's ``mechanism`` setting."""
        return "aes-gcm" if self is WrapMechanism.AES_GCM else "aes-key-wrap-pad"


_CKM_OF = {
    WrapMechanism.AES_GCM: CKM.AES_GCM,
    WrapMechanism.AES_KEY_WRAP_KWP: CKM.AES_KEY_WRAP_KWP,
    WrapMechanism.AES_KEY_WRAP_PAD: CKM.AES_KEY_WRAP_PAD,
}

# Errors that mean "this session or its handles are gone": the cure is a new session.
_SESSION_LOST: tuple[type[Exception], ...] = (
    ck.SessionHandleInvalid,
    ck.SessionClosed,
    ck.DeviceRemoved,
    ck.DeviceError,
    ck.TokenNotPresent,
    ck.TokenNotRecognised,
    ck.UserNotLoggedIn,
    ck.KeyHandleInvalid,
    ck.ObjectHandleInvalid,
    ck.WrappingKeyHandleInvalid,
    ck.UnwrappingKeyHandleInvalid,
)
# Errors about the data given to a decrypt or unwrap. SoftHSM2 reports a failed GCM tag
# as CKR_GENERAL_ERROR rather than CKR_ENCRYPTED_DATA_INVALID, so on the decrypting side
# GeneralError counts as bad data too (after one retry on a fresh session).
_BAD_DATA: tuple[type[Exception], ...] = (
    ck.EncryptedDataInvalid,
    ck.EncryptedDataLenRange,
    ck.WrappedKeyInvalid,
    ck.WrappedKeyLenRange,
    ck.DataInvalid,
    ck.DataLenRange,
    ck.GeneralError,
)


class _AesKey(Protocol):
    """What python-pkcs11's dynamically built key class offers (its stubs say only Key)."""

    def __getitem__(self, attribute: Attribute) -> Any: ...

    def encrypt(self, data: bytes, **kwargs: Any) -> bytes: ...

    def decrypt(self, data: bytes, **kwargs: Any) -> bytes: ...

    def wrap_key(self, key: Any, mechanism: CKM | None = None) -> bytes: ...

    def unwrap_key(
        self, object_class: ObjectClass, key_type: KeyType, key_data: bytes, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class TokenSettings:
    """Where the root key lives. ``pin`` is kept out of ``repr`` so it never reaches a log."""

    module: str
    token_label: str
    key_label: str
    pin: str = field(repr=False)
    # Whether connecting may generate the root key when the token has none by that label.
    create_key: bool = True


@dataclass(frozen=True)
class TokenInfo:
    """What an operator wants to see about the connected token and key."""

    module: str
    library: str
    token_label: str
    token_serial: str
    token_model: str
    key_label: str
    key_id: str
    key_created: bool
    mechanisms: frozenset[WrapMechanism]


class TokenSession(Protocol):
    """The blocking token operations the async provider needs (tests may wrap them)."""

    def connect(self) -> TokenInfo: ...

    def encrypt_gcm(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    def decrypt_gcm(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes: ...

    def wrap_pad(self, mechanism: WrapMechanism, plaintext: bytes) -> bytes: ...

    def unwrap_pad(self, mechanism: WrapMechanism, wrapped: bytes) -> bytes: ...

    def close(self) -> None: ...


class Pkcs11Token:
    """One session on the configured token, reopened when the device drops it."""

    def __init__(self, settings: TokenSettings) -> None:
        self._settings = settings
        self._session: Any = None
        self._key: _AesKey | None = None

    def __repr__(self) -> str:
        settings = self._settings
        return (
            f"Pkcs11Token(module={settings.module!r}, token={settings.token_label!r}, "
            f"key={settings.key_label!r})"
        )

    # ---- connecting ---------------------------------------------------------------

    def connect(self) -> TokenInfo:
        """Load the module, log in, find (or generate) the root key; clear errors if not."""
        self.close()
        settings = self._settings
        library = _load_library(settings.module)
        token = _find_token(library, settings)
        session = _log_in(token, settings)
        try:
            key, created = _find_or_create_key(session, settings)
            mechanisms = _supported_mechanisms(token)
            key_id = key[Attribute.ID]
        except BaseException:
            _close_quietly(session)
            raise
        self._session = session
        self._key = key
        return TokenInfo(
            module=settings.module,
            library=f"{library.manufacturer_id.strip()} {library.library_description.strip()}",
            token_label=settings.token_label,
            token_serial=str(token.serial.decode("ascii", "replace")).strip(),
            token_model=str(token.model).strip(),
            key_label=settings.key_label,
            key_id=bytes(key_id or b"").hex(),
            key_created=created,
            mechanisms=mechanisms,
        )

    def close(self) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None:
            _close_quietly(session)

    # ---- operations ---------------------------------------------------------------

    def encrypt_gcm(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        parameters = GCMParams(nonce, aad, GCM_TAG_BITS)
        return self._run(
            lambda key: key.encrypt(plaintext, mechanism=CKM.AES_GCM, mechanism_param=parameters),
            decrypting=False,
        )

    def decrypt_gcm(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        parameters = GCMParams(nonce, aad, GCM_TAG_BITS)
        return self._run(
            lambda key: key.decrypt(ciphertext, mechanism=CKM.AES_GCM, mechanism_param=parameters),
            decrypting=True,
        )

    def wrap_pad(self, mechanism: WrapMechanism, plaintext: bytes) -> bytes:
        """Key-wrap ``plaintext``: C_WrapKey accepts only key objects, so the bytes become
        a short-lived session object (a generic secret) that is destroyed at once."""

        def wrap(key: _AesKey) -> bytes:
            carrier = self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.VALUE: plaintext,
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                }
            )
            try:
                return key.wrap_key(carrier, mechanism=_CKM_OF[mechanism])
            finally:
                carrier.destroy()

        return self._run(wrap, decrypting=False)

    def unwrap_pad(self, mechanism: WrapMechanism, wrapped: bytes) -> bytes:
        def unwrap(key: _AesKey) -> bytes:
            carrier = key.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                wrapped,
                mechanism=_CKM_OF[mechanism],
                store=False,
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                return bytes(carrier[Attribute.VALUE])
            finally:
                carrier.destroy()

        return self._run(unwrap, decrypting=True)

    def _run(self, operation: Callable[[_AesKey], _T], *, decrypting: bool) -> _T:
        """Run ``operation`` with the root key; on a lost session reconnect and retry once."""
        for attempt in (1, 2):
            try:
                if self._key is None:
                    self.connect()
                assert self._key is not None
                return operation(self._key)
            except TokenSetupError as error:
                # A token that was fine at start and now refuses us (removed, PIN changed)
                # is, for a running node, an unavailable dependency.
                raise TokenUnavailable(str(error)) from error
            except _SESSION_LOST as error:
                self.close()
                if attempt == 2:
                    raise TokenUnavailable(_describe(error)) from error
            except _BAD_DATA as error:
                if decrypting and not isinstance(error, ck.GeneralError):
                    raise TokenDataError(_describe(error)) from error
                if decrypting and attempt == 2:
                    raise TokenDataError(_describe(error)) from error
                # A general error while encrypting is the device's, not the data's; while
                # decrypting it may be either, so a fresh session gets one more try.
                self.close()
                if attempt == 2:
                    raise TokenUnavailable(_describe(error)) from error
            except ck.PKCS11Error as error:
                self.close()
                raise TokenUnavailable(_describe(error)) from error
        raise AssertionError("unreachable")


# ---- connecting, step by step, each with its own operator message -----------------


def _load_library(module: str) -> Library:
    if os.sep in module and not os.path.isfile(module):
        raise TokenSetupError(
            f"PKCS#11 module {module} does not exist (for SoftHSM2 on Debian: "
            "apt-get install softhsm2; for an HSM, its vendor's client package)"
        )
    try:
        return pkcs11.lib(module)
    except ck.PKCS11Error as error:
        raise TokenSetupError(f"PKCS#11 module {module} cannot be loaded: {error}") from None


def _find_token(library: Library, settings: TokenSettings) -> Any:
    try:
        return library.get_token(token_label=settings.token_label)
    except ck.NoSuchToken:
        present = sorted(
            label for label in (str(token.label).strip() for token in library.get_tokens()) if label
        )
        names = ", ".join(repr(label) for label in present) or "none"
        raise TokenSetupError(
            f"no token labelled {settings.token_label!r} in PKCS#11 module {settings.module} "
            f"(tokens present: {names}); create it with `meridian hsm init` (SoftHSM2) or "
            "your HSM's tools"
        ) from None
    except ck.MultipleTokensReturned:
        raise TokenSetupError(
            f"more than one token is labelled {settings.token_label!r} in {settings.module}; "
            "token labels must be unique"
        ) from None
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot list the tokens of PKCS#11 module {settings.module}: {_describe(error)}"
        ) from None


def _log_in(token: Any, settings: TokenSettings) -> Any:
    label = settings.token_label
    try:
        return token.open(rw=True, user_pin=settings.pin)
    except ck.PinIncorrect:
        raise TokenSetupError(f"token {label!r} refused the PIN (wrong PIN)") from None
    except ck.PinLocked:
        raise TokenSetupError(
            f"token {label!r} has locked its user PIN; its security officer must unlock it"
        ) from None
    except (ck.PinExpired, ck.PinInvalid, ck.PinLenRange) as error:
        raise TokenSetupError(f"token {label!r} refused the PIN: {_describe(error)}") from None
    except ck.UserPinNotInitialized:
        raise TokenSetupError(f"token {label!r} has no user PIN set yet") from None
    except ck.UserAlreadyLoggedIn:
        # Login state belongs to the process, not the session: another session of this
        # process has logged in to the token already, so this one is logged in too.
        try:
            return token.open(rw=True)
        except ck.PKCS11Error as error:
            raise TokenSetupError(f"cannot open token {label!r}: {_describe(error)}") from None
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot open a session on token {label!r}: {_describe(error)}"
        ) from None


def _find_or_create_key(session: Any, settings: TokenSettings) -> tuple[_AesKey, bool]:
    label = settings.key_label
    try:
        key = cast(
            _AesKey,
            session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label),
        )
    except ck.NoSuchKey:
        if not settings.create_key:
            raise TokenSetupError(
                f"token {settings.token_label!r} holds no AES key labelled {label!r}"
            ) from None
        return _generate_key(session, settings), True
    except ck.MultipleObjectsReturned:
        raise TokenSetupError(
            f"token {settings.token_label!r} holds more than one AES key labelled {label!r}; "
            "key labels must be unique"
        ) from None
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot search the token for the root key: {_describe(error)}"
        ) from None
    _check_key(key, settings)
    return key, False


def _generate_key(session: Any, settings: TokenSettings) -> _AesKey:
    """An AES-256 key made inside the token, which can never leave it."""
    try:
        key = session.generate_key(
            KeyType.AES,
            ROOT_KEY_BITS,
            id=os.urandom(ROOT_KEY_ID_BYTES),
            label=settings.key_label,
            store=True,
            capabilities=(
                MechanismFlag.ENCRYPT
                | MechanismFlag.DECRYPT
                | MechanismFlag.WRAP
                | MechanismFlag.UNWRAP
            ),
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot generate the root key {settings.key_label!r} in token "
            f"{settings.token_label!r}: {_describe(error)}"
        ) from None
    return cast(_AesKey, key)


def _check_key(key: _AesKey, settings: TokenSettings) -> None:
    """A root key must be AES-256 and impossible to read out of the token."""
    where = f"key {settings.key_label!r} in token {settings.token_label!r}"
    try:
        length_bytes = int(key[Attribute.VALUE_LEN])
        sensitive = bool(key[Attribute.SENSITIVE])
        extractable = bool(key[Attribute.EXTRACTABLE])
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot read the attributes of {where}: {_describe(error)}"
        ) from None
    if length_bytes * 8 != ROOT_KEY_BITS:
        raise TokenSetupError(f"{where} is AES-{length_bytes * 8}; the root key must be AES-256")
    if extractable or not sensitive:
        raise TokenSetupError(
            f"{where} can be extracted from the token (CKA_EXTRACTABLE true or CKA_SENSITIVE "
            "false); the root key must never leave the HSM"
        )


def _supported_mechanisms(token: Any) -> frozenset[WrapMechanism]:
    try:
        listed = set(token.slot.get_mechanisms())
    except ck.PKCS11Error as error:
        raise TokenSetupError(f"cannot list the token's mechanisms: {_describe(error)}") from None
    return frozenset(mechanism for mechanism, code in _CKM_OF.items() if code in listed)


def _close_quietly(session: Any) -> None:
    # The session is being dropped because it is broken; closing it may fail too.
    with contextlib.suppress(ck.PKCS11Error):
        session.close()


def _describe(error: BaseException) -> str:
    """A PKCS#11 error for a log: its CKR name and, if any, its text."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def set_pins(module: str, token_label: str, *, old_so_pin: str, so_pin: str, user_pin: str) -> None:
    """As the token's security officer: replace the SO PIN and set the user PIN.

    ``meridian hsm init`` creates a SoftHSM2 token with throwaway PINs on softhsm2-util's
    command line (visible to other local users for a moment) and sets the real ones here,
    through PKCS#11, so the real PINs never appear in a process list.
    """
    library = _load_library(module)
    settings = TokenSettings(module=module, token_label=token_label, key_label="", pin="")
    token = _find_token(library, settings)
    try:
        with token.open(rw=True, so_pin=old_so_pin) as session:
            session.init_pin(user_pin)
            session.set_pin(old_so_pin, so_pin)
    except ck.PKCS11Error as error:
        raise TokenSetupError(
            f"cannot set the PINs of token {token_label!r}: {_describe(error)}"
        ) from None
