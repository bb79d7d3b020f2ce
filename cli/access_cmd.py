"""`meridian kms simulate-policy`: would a principal be allowed, and by which statement?

    meridian kms simulate-policy --principal bob --action kms:Decrypt \\
        --key-id alias/orders --encryption-context tenant=acme

It asks every region that holds the key — each replica of a multi-Region key has its
own key policy and grants (DESIGN.md §4), so the answer can differ by region — and
prints one IAM-style evaluation result per region and action:

    {"EvaluationResults": [{"Region": "us-east-1", "EvalActionName": "kms:Decrypt",
      "EvalDecision": "allowed", "MatchedStatements": [{"SourcePolicyId": "default",
      "SourcePolicyType": "resource", "Sid": "TenantAcme"}], ...}]}

The raw operation, one region at a time, is ``meridian kms simulate-principal-policy``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from meridian.client import (
    ClientClosedError,
    ClientConfigError,
    ContextEntry,
    KeyMetadata,
    KmsError,
    ProtocolError,
    arn_region,
)

if TYPE_CHECKING:
    from meridian.client import KmsClient

ClientFactory = Callable[[argparse.Namespace], "KmsClient"]
EncryptionContextPrefix = "kms:EncryptionContext:"


def register(
    operations: argparse._SubParsersAction[Any],
    *,
    add_global_options: Callable[..., None],
    handle: Callable[..., int],
    parse_map: Callable[[str], dict[str, str]],
) -> None:
    description = (
        "Evaluate one principal's access to one key with the node's own evaluator, in "
        "every region that holds the key (its replicas' policies and grants are their own)."
    )
    sub = operations.add_parser("simulate-policy", help=description, description=description)
    sub.add_argument(
        "--principal", required=True, help="principal name (its certificate's) or principal ARN"
    )
    sub.add_argument(
        "--action",
        dest="actions",
        action="append",
        required=True,
        help="an action such as kms:Decrypt (repeatable)",
    )
    sub.add_argument("--key-id", required=True, help="key id, key ARN, alias name or alias ARN")
    sub.add_argument("--encryption-context", type=parse_map, help="k=v[,k2=v2] or a JSON object")
    sub.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another condition key's value, e.g. aws:SourceIp=10.0.0.1 (repeatable)",
    )
    add_global_options(sub, suppress=True)
    sub.set_defaults(func=handle, kms_handler=simulate_policy, kms_command=None)


def regions_holding(
    key: KeyMetadata, known_regions: Sequence[str], pinned: str | None
) -> list[str]:
    """The regions to ask: the key's region, or for a multi-Region key its primary and
    replicas (every known region while the key does not list them)."""
    if pinned is not None:
        return [pinned]
    if not key.multi_region:
        return [arn_region(key.arn) or known_regions[0]]
    configuration = key.multi_region_configuration
    if configuration is None or configuration.primary_key is None:
        return list(known_regions)
    holding = [configuration.primary_key.region]
    holding += [replica.region for replica in configuration.replica_keys]
    return [region for region in holding if region in known_regions]


def context_entries(args: argparse.Namespace) -> list[ContextEntry]:
    entries = [
        ContextEntry(context_key_name=EncryptionContextPrefix + key, context_key_values=(value,))
        for key, value in (args.encryption_context or {}).items()
    ]
    for item in args.context:
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise ValueError(f"--context expects KEY=VALUE, got {item!r}")
        entries.append(ContextEntry(context_key_name=name, context_key_values=(value,)))
    return entries


def simulate_policy(
    args: argparse.Namespace,
    *,
    client_factory: ClientFactory,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    # kms_cmd imports this module; its output helpers are read when a command runs.
    from meridian.cli import kms_cmd

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        entries = context_entries(args)
        with client_factory(args) as client:
            key = client.describe_key(key_id=args.key_id).key_metadata
            regions = regions_holding(key, client.regions, client.pinned_region)
        principal = (
            args.principal
            if args.principal.startswith("arn:")
            else f"arn:meridian:iam::{key.aws_account_id}:user/{args.principal}"
        )
        results: list[dict[str, Any]] = []
        for region in regions:
            results += _ask(client_factory, args, region, principal, key.key_id, entries)
    except KmsError as error:
        print(
            f"An error occurred ({error.error_name}) when calling the {error.operation} "
            f"operation: {error.message}",
            file=err,
        )
        return kms_cmd.EXIT_SERVICE
    except ValueError as error:  # ClientConfigError too
        print(f"meridian kms: {error}", file=err)
        code = kms_cmd.EXIT_CONFIG if isinstance(error, ClientConfigError) else kms_cmd.EXIT_USAGE
        return code
    except (ProtocolError, ClientClosedError) as error:
        print(f"meridian kms: {error}", file=err)
        return kms_cmd.EXIT_OTHER
    document: Any = {"EvaluationResults": results}
    value = kms_cmd._query(document, args.query) if args.query else document
    out.write(kms_cmd._format_json(value) if args.output == "json" else kms_cmd._format_text(value))
    if results and all("Error" in result for result in results):
        return kms_cmd.EXIT_SERVICE
    return kms_cmd.EXIT_OK


def _ask(
    client_factory: ClientFactory,
    args: argparse.Namespace,
    region: str,
    principal: str,
    key_id: str,
    entries: list[ContextEntry],
) -> list[dict[str, Any]]:
    from meridian.cli import kms_cmd

    regional_args = argparse.Namespace(**{**vars(args), "region": region})
    try:
        with client_factory(regional_args) as client:
            answer = client.simulate_principal_policy(
                policy_source_arn=principal,
                action_names=args.actions,
                resource_arns=[key_id],
                context_entries=entries,
            )
    except KmsError as error:
        # A replica not created yet, a region down: say so for that region only.
        return [{"Region": region, "Error": error.error_name, "Message": error.message}]
    return [
        {"Region": region, **kms_cmd._aws_document(result)} for result in answer.evaluation_results
    ]
