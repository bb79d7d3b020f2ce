"""`meridian kms replicate-key|update-primary-region` and `meridian replication status`."""

from __future__ import annotations

from meridian.cli import kms_cmd, replication_cmd
from meridian.client import Tag


def _arguments(*argv: str) -> dict[str, object]:
    return kms_cmd.sdk_arguments(kms_cmd.build_parser().parse_args(list(argv)))


def test_replicate_key_takes_the_aws_cli_flags() -> None:
    assert _arguments(
        "replicate-key",
        "--key-id",
        "mrk-1",
        "--replica-region",
        "eu-west-1",
        "--description",
        "d",
        "--tags",
        "TagKey=team,TagValue=payments",
    ) == {
        "key_id": "mrk-1",
        "replica_region": "eu-west-1",
        "description": "d",
        "tags": [Tag("team", "payments")],
    }


def test_update_primary_region_force_is_a_switch() -> None:
    plain = _arguments("update-primary-region", "--key-id", "k", "--primary-region", "eu-west-1")
    assert plain == {"key_id": "k", "primary_region": "eu-west-1"}
    forced = _arguments(
        "update-primary-region", "--key-id", "k", "--primary-region", "eu-west-1", "--force"
    )
    assert forced["force"] is True


def test_status_rendering_names_every_peer_and_pending_version() -> None:
    document = {
        "us-east-1": {
            "log_id": "ab" * 16,
            "head_seq": 12,
            "first_retained_seq": 3,
            "multi_region_keys": 2,
            "signing_key_fingerprint": "cd" * 32,
            "peers": [
                {
                    "region": "eu-west-1",
                    "connection_state": "backing-off",
                    "snapshotting": False,
                    "acked_seq": 7,
                    "backlog_entries": 5,
                    "lag_s": 12.5,
                    "last_error": "UNAVAILABLE: connection refused",
                }
            ],
            "inbound": [{"origin_region": "eu-west-1", "applied_seq": 4, "applied_at": None}],
            "pending_versions": [
                {
                    "key_id": "mrk-1",
                    "key_material_id": "ef" * 32,
                    "primary_region": "us-east-1",
                    "missing_regions": ["eu-west-1"],
                }
            ],
        },
        "ap-south-1": {"unreachable": "ServiceUnavailableError: refused"},
    }
    text = replication_cmd.render(document)
    assert "us-east-1: log abababab at 12 (retained from 3), 2 multi-Region key(s)" in text
    assert "eu-west-1        backing-off         7        5    12.500  UNAVAILABLE" in text
    assert "applied from eu-west-1: up to 4" in text
    assert (
        "pending version efefefefefefefef of mrk-1 (primary us-east-1): waiting for eu-west-1"
        in text
    )
    assert "ap-south-1: unreachable (ServiceUnavailableError: refused)" in text
