"""Imported key material (BYOK): GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial, and the expiry of imported material.

A key created with origin EXTERNAL has no material and waits in PendingImport.
GetParametersForImport makes a fresh RSA wrapping key and an import token valid for 24
hours; ImportKeyMaterial unwraps the customer's material with it, checks the material
fits the key spec, and stores it wrapped by the root key like any other material.

The import token is stateless: the wrapping private key, the algorithm, the key spec
and the expiry, wrapped by the region's root key with the key id as authenticated data.
Nothing is stored per token, a token cannot be used for another key, and a node restart
does not invalidate it.

    offset  size  field
    0       1     token format version = 0x01
    1       n     root_key.wrap(payload, aad = b"meridian/import-token/v1\\x00" + key id)

    payload: valid-to (8, microseconds since the epoch, big-endian) || algorithm code (1)
             || wrapping key spec code (1) || wrapping private key (PKCS#8 DER)

Material ids of imported material are derived from the key id and the material (as AWS
does), so importing the same material again finds the same version, and the ciphertexts
it sealed decrypt again.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meridian.server.domain.crypto import import_wrapping, key_pairs
from meridian.server.domain.crypto.rootkey import RootKeyError
from meridian.server.domain.errors import (
    ExpiredImportTokenException,
    IncorrectKeyMaterialException,
    InvalidImportTokenException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from meridian.server.domain.key_context import KeyContext
from meridian.server.domain.key_material import (
    ExpirationModel,
    ImportState,
    ImportType,
    KeyMaterial,
    KeyMaterialTransaction,
    WrappingAlgorithm,
    WrappingKeySpec,
)
from meridian.server.domain.key_specs import parse_required, spec_info
from meridian.server.domain.model import Caller, Key, KeySpec, KeyState, KeyVersion, Origin
from meridian.server.domain.service import state_phrase

TOKEN_FORMAT_VERSION = 1
TOKEN_BYTES_MAX = 6144
ENCRYPTED_MATERIAL_BYTES_MAX = 6144
PARAMETERS_VALID_FOR = timedelta(hours=24)
VALID_TO_AHEAD_MAX = timedelta(days=365)
MATERIAL_DESCRIPTION_CHARS_MAX = 256
EXPIRY_BATCH_MAX = 100

_TOKEN_AAD_PREFIX = b"meridian/import-token/v1\x00"
_MATERIAL_ID_LABEL = b"meridian/imported-key-material-id/v1\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALGORITHM_CODES = {
    WrappingAlgorithm.RSAES_OAEP_SHA_1: 1,
    WrappingAlgorithm.RSAES_OAEP_SHA_256: 2,
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1: 3,
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256: 4,
}
_SPEC_CODES = {
    WrappingKeySpec.RSA_2048: 1,
    WrappingKeySpec.RSA_3072: 2,
    WrappingKeySpec.RSA_4096: 3,
}
# States in which material may be imported or its import parameters fetched.
_IMPORTABLE_STATES = frozenset({KeyState.ENABLED, KeyState.DISABLED, KeyState.PENDING_IMPORT})


@dataclass(frozen=True, slots=True)
class ImportParameters:
    key_arn: str
    import_token: bytes
    public_key: bytes
    parameters_valid_to: datetime


@dataclass(frozen=True, slots=True)
class MaterialResult:
    key_arn: str
    # 64 hex digits; "" when DeleteImportedKeyMaterial found no material to delete.
    key_material_id: str


@dataclass(frozen=True, slots=True)
class _Token:
    valid_to: datetime
    algorithm: WrappingAlgorithm
    wrapping_key_spec: WrappingKeySpec
    private_pkcs8: bytes


@dataclass(frozen=True, slots=True)
class _Material:
    secret: bytes
    public_key: bytes | None
    material_id: bytes


class KeyImport:
    def __init__(self, context: KeyContext) -> None:
        self._context = context

    async def get_parameters_for_import(
        self, caller: Caller, *, key_id: str, wrapping_algorithm: str, wrapping_key_spec: str
    ) -> ImportParameters:
        algorithm = parse_required(WrappingAlgorithm, wrapping_algorithm, "WrappingAlgorithm")
        spec = parse_required(WrappingKeySpec, wrapping_key_spec, "WrappingKeySpec")
        if spec not in _SPEC_CODES or algorithm not in _ALGORITHM_CODES:
            raise UnsupportedOperationException(
                f"Wrapping {spec.value} keys with {algorithm.value} is not supported; use an "
                "RSA wrapping key with RSAES_OAEP_SHA_* or RSA_AES_KEY_WRAP_SHA_*"
            )
        key = await self._context.resolve_key_only(self._context.service.store.reader, key_id)
        _require_importable(key)
        valid_to = self._context.service.clock.now() + PARAMETERS_VALID_FOR
        pair = await asyncio.to_thread(import_wrapping.new_wrapping_key, spec)
        payload = b"".join(
            (
                _microseconds(valid_to).to_bytes(8, "big"),
                bytes((_ALGORITHM_CODES[algorithm], _SPEC_CODES[spec])),
                pair.private_pkcs8,
            )
        )
        wrapped = await self._context.service.root_key.wrap(payload, aad=_token_aad(key.key_id))
        return ImportParameters(
            key.arn, bytes((TOKEN_FORMAT_VERSION,)) + wrapped, pair.public_spki, valid_to
        )

    async def import_key_material(
        self,
        caller: Caller,
        *,
        key_id: str,
        import_token: bytes,
        encrypted_key_material: bytes,
        valid_to: datetime | None,
        expiration_model: str,
        import_type: str,
        key_material_description: str,
        key_material_id: str,
    ) -> MaterialResult:
        service = self._context.service
        now = service.clock.now()
        expiry = _checked_expiry(expiration_model, valid_to, now)
        kind = None if not import_type else parse_required(ImportType, import_type, "ImportType")
        named_id = _checked_material_id(key_material_id)
        if named_id is not None and kind is ImportType.NEW_KEY_MATERIAL:
            raise ValidationException("KeyMaterialId cannot be given with NEW_KEY_MATERIAL")
        if len(key_material_description) > MATERIAL_DESCRIPTION_CHARS_MAX:
            raise ValidationException(
                f"KeyMaterialDescription must be at most {MATERIAL_DESCRIPTION_CHARS_MAX} "
                "characters"
            )
        if not 1 <= len(import_token) <= TOKEN_BYTES_MAX:
            raise ValidationException(f"ImportToken must be 1 to {TOKEN_BYTES_MAX} bytes")
        if not 1 <= len(encrypted_key_material) <= ENCRYPTED_MATERIAL_BYTES_MAX:
            raise ValidationException(
                f"EncryptedKeyMaterial must be 1 to {ENCRYPTED_MATERIAL_BYTES_MAX} bytes"
            )
        key = await self._context.resolve_key_only(service.store.reader, key_id)
        _require_importable(key)
        token = await self._open_token(key, import_token, now)
        unwrapped = import_wrapping.unwrap(
            token.private_pkcs8, token.algorithm, encrypted_key_material
        )
        # Checking an RSA private key takes tens of milliseconds: off the event loop.
        material = await asyncio.to_thread(_checked_material, key, unwrapped)
        if named_id is not None and named_id != material.material_id:
            raise IncorrectKeyMaterialException(
                "The key material does not match the KeyMaterialId given"
            )
        version = await self._context.wrap_version(
            key.key_id, material.material_id, material.secret, now
        )
        async with self._context.materials.write() as tx:
            key = await self._context.resolve_key_only(tx.keys, key_id)
            _require_importable(key)
            await self._store_import(
                tx,
                key,
                material,
                kind,
                version=version,
                expiry=expiry,
                description=key_material_description,
            )
        service.remember_material(key.key_id, material.material_id, material.secret)
        return MaterialResult(key.arn, material.material_id.hex())

    async def delete_imported_key_material(
        self, caller: Caller, *, key_id: str, key_material_id: str
    ) -> MaterialResult:
        named_id = _checked_material_id(key_material_id)
        async with self._context.materials.write() as tx:
            key = await self._context.resolve_key_only(tx.keys, key_id)
            _require_external(key)
            if key.state not in _IMPORTABLE_STATES | {KeyState.PENDING_DELETION}:
                raise KMSInvalidStateException(f"{key.arn} is {state_phrase(key.state)}.")
            target_id = key.current_material_id if named_id is None else named_id
            if not target_id:
                # Nothing was ever imported: there is nothing to delete.
                return MaterialResult(key.arn, "")
            material = await tx.materials.get_material(key.key_id, target_id)
            if material is None:
                raise NotFoundException(
                    f"Key material {target_id.hex()} is not associated with {key.arn}"
                )
            await _remove_material(tx, key, material)
        self._context.service.forget_materials(key.key_id)
        return MaterialResult(key.arn, target_id.hex())

    async def expire_due_materials(self) -> list[tuple[str, bytes]]:
        """Delete every imported material whose ValidTo has passed; returns each
        (key id, material id)."""
        return [
            (key_id, material_id)
            for key_id, material_id in await self.materials_due_to_expire()
            if await self.expire_if_due(key_id, material_id)
        ]

    async def materials_due_to_expire(self) -> list[tuple[str, bytes]]:
        """(key id, material id) of imported material past its ValidTo."""
        now = self._context.service.clock.now()
        return await self._context.materials.reader.materials_due_to_expire(
            now, limit=EXPIRY_BATCH_MAX
        )

    async def expire_if_due(self, key_id: str, material_id: bytes) -> bool:
        """Delete the material if it is still imported and expired; False if not."""
        now = self._context.service.clock.now()
        async with self._context.materials.write() as tx:
            key = await tx.keys.get_key(key_id)
            material = await tx.materials.get_material(key_id, material_id)
            # It may have been deleted or imported again since the scan.
            if (
                key is None
                or material is None
                or material.import_state is not ImportState.IMPORTED
                or material.valid_to is None
                or material.valid_to > now
            ):
                return False
            await _remove_material(tx, key, material)
        self._context.service.forget_materials(key_id)
        return True

    async def lacks_material(self, key: Key) -> bool:
        """True for an EXTERNAL key some of whose material is not imported (any more)."""
        if key.origin is not Origin.EXTERNAL:
            return False
        if not key.current_material_id:
            return True
        materials = await self._context.materials.reader.list_materials(key.key_id)
        return any(material.import_state is ImportState.PENDING_IMPORT for material in materials)

    async def _open_token(self, key: Key, import_token: bytes, now: datetime) -> _Token:
        if import_token[0] != TOKEN_FORMAT_VERSION:
            raise InvalidImportTokenException("The import token is not valid")
        try:
            payload = await self._context.service.root_key.unwrap(
                import_token[1:], aad=_token_aad(key.key_id)
            )
        except RootKeyError:
            raise InvalidImportTokenException(
                "The import token is not valid for this key"
            ) from None
        algorithms = {code: algorithm for algorithm, code in _ALGORITHM_CODES.items()}
        specs = {code: spec for spec, code in _SPEC_CODES.items()}
        # Only this module makes tokens and the root key authenticated this one, so a bad
        # layout is a bug or a foreign format version; refuse it rather than trust it.
        if len(payload) <= 10 or payload[8] not in algorithms or payload[9] not in specs:
            raise InvalidImportTokenException("The import token is not valid")
        token = _Token(
            valid_to=_EPOCH + timedelta(microseconds=int.from_bytes(payload[:8], "big")),
            algorithm=algorithms[payload[8]],
            wrapping_key_spec=specs[payload[9]],
            private_pkcs8=payload[10:],
        )
        if token.valid_to <= now:
            raise ExpiredImportTokenException(
                "The import token has expired; call GetParametersForImport again"
            )
        return token

    async def _store_import(
        self,
        tx: KeyMaterialTransaction,
        key: Key,
        material: _Material,
        kind: ImportType | None,
        *,
        version: KeyVersion,
        expiry: tuple[ExpirationModel, datetime | None],
        description: str,
    ) -> None:
        records = await tx.materials.list_materials(key.key_id)
        existing = next((r for r in records if r.material_id == material.material_id), None)
        kind = kind or (
            ImportType.EXISTING_KEY_MATERIAL if records else ImportType.NEW_KEY_MATERIAL
        )
        expiration_model, valid_to = expiry
        if kind is ImportType.EXISTING_KEY_MATERIAL:
            if existing is None:
                raise IncorrectKeyMaterialException(
                    f"The key material is not the key material previously imported into {key.arn}"
                )
            record = existing
            record.description = description or record.description
        else:
            if existing is not None:
                raise IncorrectKeyMaterialException(
                    f"This key material is already associated with {key.arn}; import it "
                    "with ImportType EXISTING_KEY_MATERIAL"
                )
            if records and key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
                raise IncorrectKeyMaterialException(
                    f"{key.arn} is a {key.key_spec.value} key: after the first import, only "
                    "the same key material can be imported again"
                )
            if any(record.pending_rotation for record in records):
                raise KMSInvalidStateException(
                    f"{key.arn} already has key material pending rotation; rotate it or "
                    "delete it first"
                )
            record = KeyMaterial(
                key_id=key.key_id,
                material_id=material.material_id,
                created_at=version.created_at,
                public_key=material.public_key,
                # Later material waits for RotateKeyOnDemand; the first is current at once.
                pending_rotation=bool(records),
                imported=True,
                description=description,
                present=False,  # stored just below
            )
        if not record.present:
            await tx.materials.insert_version(version)
            record.present = True
        record.import_state = ImportState.IMPORTED
        record.expiration_model = expiration_model
        record.valid_to = valid_to
        await tx.materials.put_material(record)
        if not records:
            key.current_material_id = material.material_id
        # Enabled again once every material the key depends on is back (AWS).
        others_missing = any(
            r.import_state is ImportState.PENDING_IMPORT
            for r in records
            if r.material_id != material.material_id
        )
        if key.state is KeyState.PENDING_IMPORT and not others_missing:
            key.state = KeyState.ENABLED
        await tx.keys.update_key(key)


async def _remove_material(tx: KeyMaterialTransaction, key: Key, material: KeyMaterial) -> None:
    """Delete one imported material (DeleteImportedKeyMaterial, or expiry)."""
    if material.pending_rotation:
        # Material waiting for a rotation is not yet part of the key: it goes entirely.
        await tx.materials.delete_material(key.key_id, material.material_id)
        return
    if material.present:
        await tx.materials.delete_version(key.key_id, material.material_id)
        material.present = False
        material.import_state = ImportState.PENDING_IMPORT
        await tx.materials.put_material(material)
    # A key pending deletion stays so (AWS); any other becomes unusable until re-import.
    if key.state is not KeyState.PENDING_DELETION and key.state is not KeyState.PENDING_IMPORT:
        key.state = KeyState.PENDING_IMPORT
        await tx.keys.update_key(key)


def _require_external(key: Key) -> None:
    if key.origin is not Origin.EXTERNAL:
        raise UnsupportedOperationException(
            f"{key.arn} has origin {key.origin.value}; only EXTERNAL keys take imported material"
        )


def _require_importable(key: Key) -> None:
    _require_external(key)
    if key.state not in _IMPORTABLE_STATES:
        raise KMSInvalidStateException(f"{key.arn} is {state_phrase(key.state)}.")


def _checked_expiry(
    expiration_model: str, valid_to: datetime | None, now: datetime
) -> tuple[ExpirationModel, datetime | None]:
    model = parse_required(
        ExpirationModel,
        expiration_model or ExpirationModel.KEY_MATERIAL_EXPIRES.value,
        "ExpirationModel",
    )
    if model is ExpirationModel.KEY_MATERIAL_DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise ValidationException(
                "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE"
            )
        return model, None
    if valid_to is None:
        raise ValidationException(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default)"
        )
    if valid_to <= now:
        raise ValidationException("ValidTo must be in the future")
    if valid_to > now + VALID_TO_AHEAD_MAX:
        raise ValidationException("ValidTo must be at most 365 days from now")
    return model, valid_to


def _checked_material_id(key_material_id: str) -> bytes | None:
    if not key_material_id:
        return None
    if len(key_material_id) != 64:
        raise ValidationException("KeyMaterialId must be 64 hexadecimal digits")
    try:
        return bytes.fromhex(key_material_id)
    except ValueError:
        raise ValidationException("KeyMaterialId must be 64 hexadecimal digits") from None


def _checked_material(key: Key, unwrapped: bytes) -> _Material:
    """The imported material in canonical form, or IncorrectKeyMaterialException."""
    info = spec_info(key.key_spec)
    public_key = None
    if info.asymmetric:
        try:
            pair = key_pairs.check_imported(key.key_spec, unwrapped)
        except ValueError as error:
            raise IncorrectKeyMaterialException(
                f"The key material is not a valid {key.key_spec.value} private key: {error}"
            ) from None
        secret, public_key = pair.private_pkcs8, pair.public_spki
    else:
        if not info.import_bytes_min <= len(unwrapped) <= info.import_bytes_max:
            raise IncorrectKeyMaterialException(
                f"Key material for a {key.key_spec.value} key must be "
                + (
                    f"{info.import_bytes_min} bytes"
                    if info.import_bytes_min == info.import_bytes_max
                    else f"{info.import_bytes_min} to {info.import_bytes_max} bytes"
                )
            )
        secret = unwrapped
    digest = hashlib.sha256(
        _MATERIAL_ID_LABEL + key.key_id.encode("ascii") + b"\x00" + secret
    ).digest()
    return _Material(secret=secret, public_key=public_key, material_id=digest)


def _token_aad(key_id: str) -> bytes:
    return _TOKEN_AAD_PREFIX + key_id.encode("ascii")


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)
