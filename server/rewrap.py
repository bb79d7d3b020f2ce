"""Re-wrapping everything stored under the root key, from one provider to another.

``meridian node rewrap-root --from file --to pkcs11`` (docs/hsm.md) moves a region's
secrets from its key file into an HSM, or back, while the node keeps serving:

1. The node is configured with the new provider as ``[root_key]`` and the old one as
   ``[root_key.previous]``, so it wraps new secrets with the new root key and unwraps
   each blob with whichever root key its header names (``rootkey_ring.py``).
2. This job walks every wrapped column (:func:`stored_secrets`: key material, and the
   other features' secrets) in key order, in batches. For each blob still under the old
   provider it unwraps, wraps with the new one, unwraps that again and compares (constant
   time) before anything is written; a batch is then one transaction of compare-and-set
   updates (``storage/wrapped_material.py``).
3. A final pass unwraps every blob with the new provider and counts what is left.

Crash safety needs no progress table: each blob's header says which provider wrapped it,
and each batch commits atomically, so after a kill -9 a new run simply skips the blobs
already under the new provider. The secrets are the same before and after, so neither
the node's caches nor any ciphertext is affected.

A feature that stores something wrapped by the root key adds its column to
:func:`stored_secrets`; tables that a database does not have are skipped.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meridian.server.domain.crypto.rootkey import RootKeyError, RootKeyProvider
from meridian.server.domain.crypto.rootkey_ring import PROVIDER_IDS, wrapped_by
from meridian.server.domain.service import material_aad
from meridian.server.storage.wrapped_material import (
    Replacement,
    WrappedColumn,
    WrappedMaterialStore,
    WrappedRow,
)

BATCH_ROWS_DEFAULT = 100
BATCH_ROWS_MAX = 10_000
# Problems are listed for the operator, but a database full of them is summarized.
PROBLEMS_LISTED_MAX = 100


@dataclass(frozen=True)
class StoredSecrets:
    """One column of wrapped blobs: where it is, and the AAD each blob is bound to."""

    name: str  # for the operator, e.g. "key material"
    column: WrappedColumn
    aad: Callable[[tuple[Any, ...]], bytes]


def _key_material_aad(key: tuple[Any, ...]) -> bytes:
    return material_aad(str(key[0]), bytes(key[1]))


KEY_MATERIAL = StoredSecrets(
    "key material",
    WrappedColumn("key_versions", ("key_id", "material_id"), "wrapped_material"),
    _key_material_aad,
)


def stored_secrets() -> tuple[StoredSecrets, ...]:
    """Every column whose blobs the root key wraps; a new one must be added here."""
    # Imported here: these features are optional parts of a node, and their modules are
    # needed only to know how their blobs are bound.
    from meridian.replication.identity import IDENTITY_AAD
    from meridian.server.audit.trail import signing_key_aad
    from meridian.server.gateway.access_keys import secret_aad

    return (
        KEY_MATERIAL,
        StoredSecrets(
            "audit signing key",
            WrappedColumn("audit_signing_keys", ("key_id",), "wrapped_private_key"),
            lambda key: signing_key_aad(str(key[0])),
        ),
        StoredSecrets(
            "AWS access key secret",
            WrappedColumn("aws_access_keys", ("access_key_id",), "wrapped_secret"),
            lambda key: secret_aad(str(key[0])),
        ),
        StoredSecrets(
            "replication identity",
            WrappedColumn("replication_identity", ("singleton",), "wrapped_seeds"),
            lambda key: IDENTITY_AAD,
        ),
    )


@dataclass
class RewrapReport:
    """What a run did, and what the final verification found."""

    source: str
    target: str
    rows_seen: int = 0
    rewrapped: int = 0
    already_under_target: int = 0
    # Rows the node changed or deleted between our read and our write: left alone.
    skipped_concurrent: int = 0
    rows_seen_in_verification: int = 0
    verified: int = 0
    remaining_under_source: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def complete(self) -> bool:
        return (
            self.problem_count == 0
            and self.remaining_under_source == 0
            and self.verified == self.rows_seen_in_verification
        )

    def problem(self, secrets: StoredSecrets, row: WrappedRow, what: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_LISTED_MAX:
            key = ", ".join(
                part.hex() if isinstance(part, bytes) else str(part) for part in row.key
            )
            self.problems.append(f"{secrets.name} ({key}): {what}")


Progress = Callable[[RewrapReport], None]


def _no_progress(report: RewrapReport) -> None:
    del report


async def present(
    store: WrappedMaterialStore, secrets: Sequence[StoredSecrets]
) -> list[StoredSecrets]:
    """The columns whose tables this database has."""
    return [item for item in secrets if await store.has_table(item.column.table)]


async def rewrap(
    store: WrappedMaterialStore,
    source: RootKeyProvider,
    target: RootKeyProvider,
    *,
    secrets: Sequence[StoredSecrets] = (KEY_MATERIAL,),
    batch_rows: int = BATCH_ROWS_DEFAULT,
    pause_s: float = 0.0,
    progress: Progress = _no_progress,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RewrapReport:
    """Move every blob under ``source`` to ``target``, then verify every blob."""
    if source.name == target.name or not {source.name, target.name} <= PROVIDER_IDS.keys():
        raise ValueError("source and target must be the two different provider kinds")
    if not 1 <= batch_rows <= BATCH_ROWS_MAX:
        raise ValueError(f"batch_rows must be 1 to {BATCH_ROWS_MAX}")
    report = RewrapReport(source=source.name, target=target.name)
    for item in await present(store, secrets):
        after: tuple[Any, ...] | None = None
        while rows := await store.page(item.column, after, limit=batch_rows):
            replacements = [
                replacement
                for row in rows
                if (replacement := await _rewrap_row(item, row, source, target, report))
            ]
            swapped = await store.replace(item.column, replacements)
            report.rewrapped += swapped
            report.skipped_concurrent += len(replacements) - swapped
            report.rows_seen += len(rows)
            after = rows[-1].key
            progress(report)
            if pause_s > 0:
                # Lets an operator spread the load on a busy HSM and database over time.
                await sleep(pause_s)
    return await verify(store, target, report, secrets=secrets, batch_rows=batch_rows)


async def verify(
    store: WrappedMaterialStore,
    target: RootKeyProvider,
    report: RewrapReport,
    *,
    secrets: Sequence[StoredSecrets] = (KEY_MATERIAL,),
    batch_rows: int = BATCH_ROWS_DEFAULT,
) -> RewrapReport:
    """Unwrap every blob with ``target``; count those still under another provider."""
    report.verified = report.remaining_under_source = report.rows_seen_in_verification = 0
    for item in await present(store, secrets):
        after: tuple[Any, ...] | None = None
        while rows := await store.page(item.column, after, limit=batch_rows):
            for row in rows:
                report.rows_seen_in_verification += 1
                if await _verify_row(item, row, target, report):
                    report.verified += 1
            after = rows[-1].key
    return report


async def _verify_row(
    item: StoredSecrets, row: WrappedRow, target: RootKeyProvider, report: RewrapReport
) -> bool:
    kind = wrapped_by(row.wrapped)
    if kind != target.name:
        if kind == report.source:
            report.remaining_under_source += 1
        else:
            report.problem(item, row, "its header names no known root key provider")
        return False
    try:
        await target.unwrap(row.wrapped, aad=item.aad(row.key))
    except RootKeyError as error:
        report.problem(item, row, f"does not unwrap under the {target.name} root key: {error}")
        return False
    return True


async def _rewrap_row(
    item: StoredSecrets,
    row: WrappedRow,
    source: RootKeyProvider,
    target: RootKeyProvider,
    report: RewrapReport,
) -> Replacement | None:
    kind = wrapped_by(row.wrapped)
    if kind == target.name:
        report.already_under_target += 1
        return None
    if kind != source.name:
        report.problem(item, row, "its header names no known root key provider")
        return None
    aad = item.aad(row.key)
    try:
        secret = await source.unwrap(row.wrapped, aad=aad)
    except RootKeyError as error:
        # Left as it is: the row may be repairable, and the node reports it when used.
        report.problem(item, row, f"does not unwrap under the {source.name} root key: {error}")
        return None
    rewrapped = await target.wrap(secret, aad=aad)
    # A provider that wraps without error but cannot give the secret back would lose it
    # for good once the old blob is overwritten; this is the one check that matters.
    if not hmac.compare_digest(await target.unwrap(rewrapped, aad=aad), secret):
        raise RootKeyError(
            f"the {target.name} root key did not give back what it wrapped; nothing was "
            "written for this batch"
        )
    return Replacement(row=row, wrapped=rewrapped)
