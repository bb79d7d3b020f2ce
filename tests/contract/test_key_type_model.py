"""The key types, algorithms and their errors cannot drift from AWS's model (botocore).

Every enum the key-type modules declare is exactly AWS's; every spec AWS lists is either
served (with algorithms AWS defines) or refused as unsupported; every error reason the
new operations raise is one AWS declares for that operation.
"""

from __future__ import annotations

from enum import StrEnum

import botocore.session
import pytest

from meridian.server.domain import errors, key_material, key_specs
from meridian.server.domain.model import KeySpec, KeyUsage


@pytest.fixture(scope="module")
def aws_model():
    return botocore.session.get_session().get_service_model("kms")


@pytest.mark.parametrize(
    ("enum", "shape"),
    [
        (key_specs.SigningAlgorithm, "SigningAlgorithmSpec"),
        (key_specs.MessageType, "MessageType"),
        (key_specs.MacAlgorithm, "MacAlgorithmSpec"),
        (key_specs.KeyAgreementAlgorithm, "KeyAgreementAlgorithmSpec"),
        (key_specs.EncapsulationAlgorithm, "EncapsulationAlgorithmSpec"),
        (key_specs.DataKeyPairSpec, "DataKeyPairSpec"),
        (key_material.RotationType, "RotationType"),
        (key_material.KeyMaterialState, "KeyMaterialState"),
        (key_material.ImportState, "ImportState"),
        (key_material.ExpirationModel, "ExpirationModelType"),
        (key_material.ImportType, "ImportType"),
        (key_material.IncludeKeyMaterial, "IncludeKeyMaterial"),
        (key_material.WrappingAlgorithm, "AlgorithmSpec"),
        (key_material.WrappingKeySpec, "WrappingKeySpec"),
    ],
)
def test_enums_are_exactly_aws(aws_model, enum: type[StrEnum], shape: str) -> None:
    assert {member.value for member in enum} == set(aws_model.shape_for(shape).enum)


def test_every_aws_key_spec_is_served_or_refused(aws_model) -> None:
    aws_specs = set(aws_model.shape_for("KeySpec").enum)
    served = {spec.value for spec in key_specs.SPECS}
    refused = {spec.value for spec in key_specs.UNSUPPORTED_SPECS}
    assert served | refused == aws_specs
    assert not served & refused


def test_the_spec_table_lists_only_aws_algorithms_and_usages(aws_model) -> None:
    usages = set(aws_model.shape_for("KeyUsageType").enum)
    lists = {
        "encryption": set(aws_model.shape_for("EncryptionAlgorithmSpec").enum),
        "signing": set(aws_model.shape_for("SigningAlgorithmSpec").enum),
        "mac": set(aws_model.shape_for("MacAlgorithmSpec").enum),
        "key_agreement": set(aws_model.shape_for("KeyAgreementAlgorithmSpec").enum),
        "encapsulation": set(aws_model.shape_for("EncapsulationAlgorithmSpec").enum),
    }
    for spec, info in key_specs.SPECS.items():
        assert info.usages, spec
        for usage, algorithms in info.usages.items():
            assert usage.value in usages
            listed = [name for name in lists if getattr(algorithms, name)]
            assert len(listed) == 1, (spec, usage)  # one kind of algorithm per usage
            for name, allowed in lists.items():
                assert set(getattr(algorithms, name)) <= allowed, (spec, usage, name)


def test_usages_per_spec_are_aws_s() -> None:
    usages = {spec.value: {u.value for u in info.usages} for spec, info in key_specs.SPECS.items()}
    assert usages["SYMMETRIC_DEFAULT"] == {"ENCRYPT_DECRYPT"}
    assert usages["RSA_3072"] == {"ENCRYPT_DECRYPT", "SIGN_VERIFY"}
    assert usages["ECC_NIST_P384"] == {"SIGN_VERIFY", "KEY_AGREEMENT"}
    assert usages["ECC_SECG_P256K1"] == usages["ECC_NIST_EDWARDS25519"] == {"SIGN_VERIFY"}
    assert usages["HMAC_224"] == {"GENERATE_VERIFY_MAC"}
    assert usages["ML_DSA_87"] == {"SIGN_VERIFY"}
    assert usages["ML_KEM_1024"] == {"ENCAPSULATE_DECAPSULATE"}
    assert key_specs.algorithms_for(KeySpec.RSA_2048, KeyUsage.KEY_AGREEMENT) == (
        key_specs.KeyAlgorithms()
    )


@pytest.mark.parametrize(
    ("operation", "reasons"),
    [
        (
            "ImportKeyMaterial",
            {
                "ExpiredImportTokenException",
                "InvalidImportTokenException",
                "IncorrectKeyMaterialException",
                "InvalidCiphertextException",
            },
        ),
        ("Verify", {"KMSInvalidSignatureException"}),
        ("VerifyMac", {"KMSInvalidMacException"}),
        ("RotateKeyOnDemand", {"LimitExceededException", "UnsupportedOperationException"}),
        ("Decapsulate", {"InvalidCiphertextException"}),
    ],
)
def test_new_reasons_are_aws_s(aws_model, operation: str, reasons: set[str]) -> None:
    declared = {shape.name for shape in aws_model.operation_model(operation).error_shapes}
    assert reasons <= declared
    known = {cls.reason for cls in errors.all_error_classes()}
    assert reasons <= known
