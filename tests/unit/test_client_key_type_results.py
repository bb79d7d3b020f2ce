"""Reading the key-type responses into typed results: absent members are None, timestamps
are UTC datetimes, and secrets stay out of repr."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from meridian.client import key_type_results as results
from meridian.proto.kms.v1 import kms_pb2 as pb

WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_secrets_are_kept_out_of_repr() -> None:
    secret = b"\xaa" * 32
    for result in (
        results.encapsulate_result(
            pb.EncapsulateResponse(key_id="k", shared_secret=secret, region="r"), "r"
        ),
        results.decapsulate_result(
            pb.DecapsulateResponse(key_id="k", shared_secret=secret, region="r"), "r"
        ),
        results.derive_shared_secret_result(
            pb.DeriveSharedSecretResponse(key_id="k", shared_secret=secret, region="r"), "r"
        ),
        results.generate_data_key_pair_result(
            pb.GenerateDataKeyPairResponse(key_id="k", private_key_plaintext=secret), "r"
        ),
    ):
        assert "aa" * 8 not in repr(result) and str(secret) not in repr(result)


def test_rotation_status_presence() -> None:
    off = results.get_key_rotation_status_result(pb.GetKeyRotationStatusResponse(key_id="k"), "r")
    assert (off.key_rotation_enabled, off.rotation_period_in_days, off.next_rotation_date) == (
        False,
        None,
        None,
    )
    assert off.region == "r"
    on = results.get_key_rotation_status_result(
        pb.GetKeyRotationStatusResponse(
            key_id="k",
            key_rotation_enabled=True,
            rotation_period_in_days=90,
            next_rotation_date=_timestamp(WHEN),
            region="us-east-1",
        ),
        "r",
    )
    assert (on.rotation_period_in_days, on.next_rotation_date, on.region) == (90, WHEN, "us-east-1")
    assert on.on_demand_rotation_start_date is None


def test_rotation_entries_leave_out_what_aws_leaves_out() -> None:
    listed = results.list_key_rotations_result(
        pb.ListKeyRotationsResponse(
            rotations=[
                pb.RotationsListEntry(
                    key_id="k",
                    key_material_id="a" * 64,
                    key_material_state="CURRENT",
                    rotation_type="AUTOMATIC",
                    rotation_date=_timestamp(WHEN),
                ),
                pb.RotationsListEntry(key_id="k", key_material_id="b" * 64),
            ],
            truncated=False,
        ),
        "r",
    )
    first, second = listed.rotations
    assert (first.rotation_type, first.rotation_date, first.import_state) == (
        "AUTOMATIC",
        WHEN,
        None,
    )
    assert (second.rotation_type, second.rotation_date, second.key_material_state) == (
        None,
        None,
        None,
    )
    assert listed.next_marker is None


def test_import_results() -> None:
    parameters = results.get_parameters_for_import_result(
        pb.GetParametersForImportResponse(
            key_id="arn", import_token=b"t", public_key=b"p", parameters_valid_to=_timestamp(WHEN)
        ),
        "r",
    )
    assert (parameters.import_token, parameters.parameters_valid_to) == (b"t", WHEN)
    deleted = results.delete_imported_key_material_result(
        pb.DeleteImportedKeyMaterialResponse(key_id="arn"), "r"
    )
    assert deleted.key_material_id is None
