"""The batch workloads' figures (docs/batch-operations.md): items per second, and how
many times the single operation's calls per second that is.

A batch call counts as one "op" in the load generator; the figure that matters is the
items it carries, compared with the single calls measured on the same node in the same
run (so a noisy machine moves both alike). The load generator only sees gRPC statuses,
so before a batch workload is measured one call is checked to answer every item
successfully: a batch whose items all fail (a bad key, too large a payload) would
otherwise look fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from meridian.cli.bench.stats import RunStats
from meridian.cli.bench.workloads import Workload, workload
from meridian.proto.kms.v1 import kms_pb2 as pb

CHECK_TIMEOUT_S = 30.0

_RESPONSES: dict[str, Callable[[bytes], Any]] = {
    "BatchEncrypt": pb.BatchEncryptResponse.FromString,
    "BatchDecrypt": pb.BatchDecryptResponse.FromString,
    "BatchGenerateDataKey": pb.BatchGenerateDataKeyResponse.FromString,
}


def batch_workload(operation: str) -> Workload | None:
    """The workload if ``operation`` names a batch workload, else None."""
    try:
        work = workload(operation)
    except ValueError:
        return None
    return work if work.items_per_call > 1 else None


def items_per_s(stats: RunStats) -> float | None:
    work = batch_workload(stats.operation)
    return None if work is None else round(stats.ops_per_s * work.items_per_call, 1)


def batch_row(
    result: RunStats,
    by_target: Mapping[tuple[str, str], RunStats],
    *,
    audit_off_target: str | None = None,
) -> dict[str, float | None]:
    """items/s of a batch run and its ratio to the single operation's ops/s (same target),
    and the same for the audit-off node when ``audit_off_target`` ran."""
    work = batch_workload(result.operation)
    if work is None:
        return {}
    row = _items_row(result, work, by_target, prefix="")
    off = by_target.get((audit_off_target or "", result.operation))
    if off is not None:
        row.update(_items_row(off, work, by_target, prefix="audit_off_"))
    return row


def _items_row(
    result: RunStats, work: Workload, by_target: Mapping[tuple[str, str], RunStats], prefix: str
) -> dict[str, float | None]:
    items = round(result.ops_per_s * work.items_per_call, 1)
    row: dict[str, float | None] = {f"{prefix}items_per_s": items}
    single = by_target.get((result.target, work.single_operation or ""))
    if single is not None and single.ops_per_s:
        row[f"{prefix}single_ops_per_s"] = single.ops_per_s
        row[f"{prefix}items_vs_single"] = round(items / single.ops_per_s, 2)
    if result.server_cpu_ms_per_op is not None:
        row[f"{prefix}server_cpu_ms_per_item"] = round(
            result.server_cpu_ms_per_op / work.items_per_call, 4
        )
        if single is not None and single.server_cpu_ms_per_op:
            # How many times less server CPU an item costs than a single call: the
            # steadiest figure on a busy machine.
            row[f"{prefix}cpu_per_item_vs_single"] = round(
                single.server_cpu_ms_per_op / (result.server_cpu_ms_per_op / work.items_per_call),
                2,
            )
    return row


def batch_summary(ratios: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """One line per batch workload and node: items/s and the ratios to single calls."""
    lines = []
    for operation, row in ratios.items():
        work = batch_workload(operation)
        if work is None:
            continue
        for prefix, node in (("", "audit on"), ("audit_off_", "audit off")):
            items = row.get(f"{prefix}items_per_s")
            if items is None:
                continue
            line = f"{operation} ({node}): {items:,.0f} items/s"
            ratio = row.get(f"{prefix}items_vs_single")
            if ratio is not None:
                single = row.get(f"{prefix}single_ops_per_s") or 0.0
                line += f" = {ratio:.2f} x {work.single_operation}'s {single:,.0f} calls/s"
            cpu = row.get(f"{prefix}server_cpu_ms_per_item")
            if cpu is not None:
                line += f"; server CPU {cpu:.3f} ms per item"
                cpu_ratio = row.get(f"{prefix}cpu_per_item_vs_single")
                if cpu_ratio is not None:
                    line += f" ({cpu_ratio:.2f} x less than a single call)"
            lines.append(line)
    return lines


def check_items(spec: Mapping[str, Any], work: Workload, request: bytes) -> str:
    """Send ``request`` once; "" if every item succeeded, else the first item's error."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=spec["ca_cert"],
        private_key=spec["client_key"],
        certificate_chain=spec["client_cert"],
    )
    options = [("grpc.ssl_target_name_override", spec["server_name"])]
    with grpc.secure_channel(spec["endpoint"], credentials, options=options) as channel:
        call = channel.unary_unary(
            work.method,
            request_serializer=lambda data: data,
            response_deserializer=_RESPONSES[work.name],
        )
        try:
            response = call(request, timeout=CHECK_TIMEOUT_S)
        except grpc.RpcError as error:
            return f"{error.code()}: {error.details()}"
    for result in response.results:
        if result.WhichOneof("outcome") != "response":
            return f"item error {result.error.reason}: {result.error.message}"
    if len(response.results) != work.items_per_call:
        return f"{len(response.results)} results for {work.items_per_call} items"
    return ""
