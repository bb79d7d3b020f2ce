"""The work behind `meridian usage report` (cli/usage_cmd.py parses; this module runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from meridian.cli.audit_sources import NodeSource, SourceError, cluster_regions, open_cluster
from meridian.proto.audit.v1 import audit_pb2 as pb
from meridian.server.audit.events import to_us
from meridian.server.audit.ports import KeyInventoryRow, LastUse, UsageRow
from meridian.server.audit.pricing import (
    PriceTable,
    RegionUsage,
    UsageReport,
    build_report,
    load_price_table,
)

CLUSTER_FILE_ENV = "MERIDIAN_CLUSTER_FILE"
CLUSTER_FILE_DEFAULT = Path("demo-cluster") / "cluster.json"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_report(args: argparse.Namespace) -> int:
    try:
        prices = load_price_table(args.prices) if args.prices else PriceTable()
        cluster = open_cluster(
            args.cluster_file or Path(os.environ.get(CLUSTER_FILE_ENV) or CLUSTER_FILE_DEFAULT)
        )
    except (ValueError, SourceError) as error:
        print(f"meridian usage report: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.days < 1 or args.top < 0 or args.unused_days < 0 or args.data_key_reuse < 1:
        print(
            "meridian usage report: --days, --top, --unused-days must be sensible", file=sys.stderr
        )
        return EXIT_USAGE
    today = datetime.now(UTC).date()
    last_day = args.last_day or today.isoformat()
    first_day = args.first_day or ""
    if not first_day:
        try:
            first_day = (
                datetime.fromisoformat(last_day).date() - timedelta(days=args.days - 1)
            ).isoformat()
        except ValueError:
            print("meridian usage report: --last-day must be YYYY-MM-DD", file=sys.stderr)
            return EXIT_USAGE
    regions = args.region or list(cluster_regions(cluster))
    answers: list[RegionUsage] = []
    unreachable: list[str] = []
    for region in regions:
        try:
            source = NodeSource(cluster, region)
        except SourceError as error:
            print(f"meridian usage report: {error}", file=sys.stderr)
            return EXIT_USAGE
        try:
            answers.append(region_usage(source, first_day, last_day))
        except grpc.RpcError as error:
            unreachable.append(f"{region} ({error.code().name}: {error.details()})")
        finally:
            source.close()
    if not answers:
        print(
            f"meridian usage report: no region answered: {', '.join(unreachable)}", file=sys.stderr
        )
        return EXIT_FAILED
    report = build_report(
        answers,
        prices,
        today=today,
        unused_days=args.unused_days,
        data_key_reuse=args.data_key_reuse,
    )
    if args.json:
        print(json.dumps(report_document(report, top=args.top, unreachable=unreachable), indent=2))
    else:
        print(render(report, top=args.top, unreachable=unreachable))
    return EXIT_OK


def region_usage(source: NodeSource, first_day: str, last_day: str) -> RegionUsage:
    answer = source.stub.GetUsageReport(
        pb.GetUsageReportRequest(first_day=first_day, last_day=last_day), timeout=30
    )
    return RegionUsage(
        region=source.region,
        first_day=answer.first_day,
        last_day=answer.last_day,
        counts=[
            UsageRow(row.day, row.key_arn, row.operation, row.requests, row.failures)
            for row in answer.counts
        ],
        last_uses=[
            LastUse(
                use.key_arn,
                use.operation,
                to_us(use.timestamp.ToDatetime(tzinfo=UTC)),
                use.cloud_trail_event_id,
                use.kms_request_id,
            )
            for use in answer.last_uses
        ],
        keys=[
            KeyInventoryRow(
                key.key_arn, key.key_state, to_us(key.creation_date.ToDatetime(tzinfo=UTC))
            )
            for key in answer.keys
        ],
        tracking_start=answer.tracking_start_date.ToDatetime(tzinfo=UTC),
    )


def _money(value: float, report: UsageReport) -> str:
    return f"{value:,.4f} {report.prices.currency}"


def render(report: UsageReport, *, top: int, unreachable: list[str]) -> str:
    lines = [
        f"Usage {report.first_day} .. {report.last_day} ({report.days} days)",
        f"  requests: {report.total_requests:,} ({report.free_requests:,} within the free tier)",
        f"  estimated cost: {_money(report.total_cost, report)} "
        f"(requests {_money(report.request_cost, report)}, "
        f"keys {_money(report.key_cost, report)})",
    ]
    if unreachable:
        lines.append(f"  not counted (unreachable): {', '.join(unreachable)}")
    lines += ["", "Requests by region and operation:"]
    for (region, operation), count in sorted(report.by_region_operation.items()):
        lines.append(f"  {region:<16} {operation:<36} {count:>12,}")
    lines += ["", f"Top {top} keys by requests:"]
    for entry in report.keys[:top]:
        last = entry.last_use
        used = (
            f"last used {datetime.fromtimestamp(last.used_at_us / 1e6, UTC):%Y-%m-%d %H:%M} "
            f"({last.operation})"
            if last
            else "no use recorded"
        )
        lines.append(
            f"  {entry.key_arn}  {entry.state:<16} {entry.requests:>10,} req  "
            f"{_money(entry.total, report)}  {used}"
        )
    lines += ["", "Keys unused for --unused-days or longer (deletion candidates):"]
    if not report.unused:
        lines.append("  none")
    for entry in report.unused:
        lines.append(
            f"  {entry.key_arn}  {entry.state}  saves ~{_money(report.prices.key_month, report)}"
            "/month if deleted (disable it first and watch for DisabledException)"
        )
    lines += [
        "",
        "Data keys: "
        f"{report.data_key_requests:,} GenerateDataKey requests; with the SDK's data-key cache "
        f"reusing each key for {report.data_key_reuse} messages: "
        f"{report.data_key_requests_with_cache:,} requests, saving "
        f"{_money(report.data_key_saving, report)}",
    ]
    return "\n".join(lines)


def report_document(report: UsageReport, *, top: int, unreachable: list[str]) -> dict[str, Any]:
    def key_entry(entry: Any) -> dict[str, Any]:
        last = entry.last_use
        return {
            "KeyArn": entry.key_arn,
            "Region": entry.region,
            "KeyState": entry.state,
            "Requests": entry.requests,
            "Failures": entry.failures,
            "RequestsByOperation": entry.by_operation,
            "EstimatedCost": round(entry.total, 6),
            "KeyLastUsage": None
            if last is None
            else {
                "Operation": last.operation,
                "Timestamp": datetime.fromtimestamp(last.used_at_us / 1e6, UTC).isoformat(),
                "CloudTrailEventId": last.event_id,
                "KmsRequestId": last.request_id,
            },
        }

    return {
        "FirstDay": report.first_day,
        "LastDay": report.last_day,
        "Currency": report.prices.currency,
        "TotalRequests": report.total_requests,
        "FreeRequests": report.free_requests,
        "RequestCost": round(report.request_cost, 6),
        "KeyCost": round(report.key_cost, 6),
        "TotalCost": round(report.total_cost, 6),
        "RequestsByRegionAndOperation": [
            {"Region": region, "Operation": operation, "Requests": count}
            for (region, operation), count in sorted(report.by_region_operation.items())
        ],
        "TopKeys": [key_entry(entry) for entry in report.keys[:top]],
        "UnusedKeys": [key_entry(entry) for entry in report.unused],
        "DataKeys": {
            "Requests": report.data_key_requests,
            "Reuse": report.data_key_reuse,
            "RequestsWithCache": report.data_key_requests_with_cache,
            "Saving": round(report.data_key_saving, 6),
        },
        "Unreachable": unreachable,
    }
