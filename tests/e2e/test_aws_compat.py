"""Unchanged AWS tools against real node processes of a local cluster.

`meridian cluster up` turns every region's AWS endpoint on and writes DIR/aws/config;
boto3 (through that profile file), the AWS CLI and the AWS Encryption SDK for Python
then work with nothing but Meridian's endpoint and CA. The multi-region test runs once
multi-region keys (ReplicateKey) are served; until then it is skipped.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from aws_cryptographic_material_providers.mpl.references import IClientSupplier

from conftest import ClusterHandle
from meridian.cli import cluster
from meridian.proto.kms.v1 import kms_pb2, kms_pb2_grpc
from meridian.server.api.servicer import KeyManagementServicer
from meridian.server.gateway.app import implemented_operations

pytestmark = pytest.mark.e2e

AWS = Path(sys.executable).with_name("aws")
SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
MRK_SERVED = "ReplicateKey" in implemented_operations(
    KeyManagementServicer, SERVICE, unimplemented_base=kms_pb2_grpc.KeyManagementServiceServicer
)
REPLICA_WAIT_S = 60.0
CLI_TIMEOUT_S = 120


def aws_profiles(directory: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(directory / "aws" / "config")
    return parser


def aws_environment(directory: Path) -> dict[str, str]:
    """The environment of a user of the cluster: its AWS config file, nothing else."""
    environment = {
        name: value
        for name, value in os.environ.items()
        # A CA bundle or credentials from the surrounding environment would override
        # the profile's, as they do for any AWS user.
        if not name.startswith("AWS_") and name not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    }
    environment["AWS_CONFIG_FILE"] = str(directory / "aws" / "config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(directory / "aws" / "no-credentials")
    return environment


@pytest.fixture
def aws_env(single_region: ClusterHandle, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environment = aws_environment(single_region.directory)
    for name in list(os.environ):
        if name not in environment:
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def profile_client(region: str) -> Any:
    # The profile names the endpoint, the CA and the key: a normal AWS client otherwise.
    session = boto3.session.Session(profile_name=region)
    return session.client("kms", config=botocore.config.Config(retries={"max_attempts": 2}))


def test_cluster_writes_endpoints_and_a_profile_per_region(single_region) -> None:
    entry = single_region.region("us-east-1")
    assert entry["aws_endpoint"].startswith("https://127.0.0.11:")
    profiles = aws_profiles(single_region.directory)
    assert profiles["profile us-east-1"]["endpoint_url"] == entry["aws_endpoint"]
    assert profiles["default"]["region"] == "us-east-1"
    mode = (single_region.directory / "aws" / "config").stat().st_mode & 0o777
    assert mode == 0o600, "the file holds a secret"


def test_boto3_through_the_profile(aws_env) -> None:
    kms = profile_client("us-east-1")
    key = kms.create_key(Description="e2e")["KeyMetadata"]
    assert key["Arn"].startswith("arn:meridian:kms:us-east-1:")
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"e2e", EncryptionContext={"a": "1"})
    decrypted = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "1"})
    assert decrypted["Plaintext"] == b"e2e"
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="alias/not-there")


def run_aws(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AWS), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_aws_cli_encrypt_decrypt(single_region, aws_env, tmp_path) -> None:
    assert AWS.exists(), "the AWS CLI is a development dependency (pyproject.toml)"
    entry = single_region.region("us-east-1")
    profile = aws_profiles(single_region.directory)["default"]
    # As the documentation shows it: an endpoint URL and a CA bundle on the command line,
    # the key in the standard environment variables.
    explicit = {
        **{k: v for k, v in aws_env.items() if k != "AWS_CONFIG_FILE"},
        "AWS_ACCESS_KEY_ID": profile["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": profile["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    flags = [
        "--endpoint-url",
        entry["aws_endpoint"],
        "--ca-bundle",
        str(single_region.directory / "pki" / "ca.pem"),
    ]
    created = run_aws(explicit, *flags, "kms", "create-key", "--description", "cli")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    plaintext = tmp_path / "plain.txt"
    plaintext.write_bytes(b"from the AWS CLI\n")
    encrypted = run_aws(
        explicit, *flags, "kms", "encrypt", "--key-id", key_id,
        "--plaintext", f"fileb://{plaintext}", "--encryption-context", "purpose=e2e",
        "--query", "CiphertextBlob", "--output", "text",
    )  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    blob = tmp_path / "blob.bin"
    import base64

    blob.write_bytes(base64.b64decode(encrypted.stdout.strip()))
    # The profile form: no flags at all.
    decrypted = run_aws(
        aws_env, "--profile", "us-east-1", "kms", "decrypt",
        "--ciphertext-blob", f"fileb://{blob}", "--encryption-context", "purpose=e2e",
        "--query", "Plaintext", "--output", "text",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    assert base64.b64decode(decrypted.stdout.strip()) == b"from the AWS CLI\n"
    missing = run_aws(aws_env, "kms", "describe-key", "--key-id", "alias/missing")
    assert missing.returncode != 0
    assert "NotFoundException" in missing.stderr


def test_access_keys_are_managed_while_the_nodes_run(single_region, aws_env) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "meridian", "access-key", "create", "--principal", "admin",
         "--cluster-dir", str(single_region.directory)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = json.loads(created.stdout)["AccessKey"]
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        profile_name="us-east-1",
    )
    kms = session.client("kms", config=botocore.config.Config(retries={"max_attempts": 1}))
    assert "Keys" in kms.list_keys()
    subprocess.run(
        [sys.executable, "-m", "meridian", "access-key", "revoke", key["AccessKeyId"],
         "--cluster-dir", str(single_region.directory)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        kms.list_keys()
    assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"


# ---- the AWS Encryption SDK -------------------------------------------------------------


def esdk_client() -> Any:
    import aws_encryption_sdk
    from aws_encryption_sdk import CommitmentPolicy

    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def material_providers() -> Any:
    from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
    from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig

    return AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())


def test_encryption_sdk_single_region(single_region, aws_env) -> None:
    from aws_cryptographic_material_providers.mpl.models import (
        CreateAwsKmsMrkDiscoveryKeyringInput,
        CreateAwsKmsMrkKeyringInput,
        CreateAwsKmsMrkMultiKeyringInput,
        DiscoveryFilter,
    )

    kms = profile_client("us-east-1")
    key = kms.create_key(Description="esdk")["KeyMetadata"]
    providers = material_providers()
    keyring = providers.create_aws_kms_mrk_keyring(
        CreateAwsKmsMrkKeyringInput(kms_key_id=key["Arn"], kms_client=kms)
    )
    client = esdk_client()
    message = os.urandom(10_000)
    ciphertext, header = client.encrypt(
        source=message, keyring=keyring, encryption_context={"tenant": "42"}
    )
    # The encrypted data key names Meridian's key ARN: its partition is "meridian".
    assert header.encrypted_data_keys.pop().key_provider.key_info.decode() == key["Arn"]
    plaintext, _ = client.decrypt(source=ciphertext, keyring=keyring)
    assert plaintext == message

    discovery = providers.create_aws_kms_mrk_discovery_keyring(
        CreateAwsKmsMrkDiscoveryKeyringInput(
            kms_client=kms,
            region="us-east-1",
            discovery_filter=DiscoveryFilter(
                partition="meridian", account_ids=[single_region_account(single_region)]
            ),
        )
    )
    assert client.decrypt(source=ciphertext, keyring=discovery)[0] == message

    # A multi-keyring gets its per-region clients from a client supplier (the documented
    # way to point each region at its Meridian endpoint).
    multi = providers.create_aws_kms_mrk_multi_keyring(
        CreateAwsKmsMrkMultiKeyringInput(
            generator=key["Arn"], client_supplier=ProfileClientSupplier()
        )
    )
    multi_ciphertext, _ = client.encrypt(source=b"multi", keyring=multi)
    assert client.decrypt(source=multi_ciphertext, keyring=keyring)[0] == b"multi"

    # The legacy master key provider reads the endpoint from the profile, as any client.
    import botocore.session
    from aws_encryption_sdk.key_providers.kms import MRKAwareStrictAwsKmsMasterKeyProvider

    provider = MRKAwareStrictAwsKmsMasterKeyProvider(
        key_ids=[key["Arn"]], botocore_session=botocore.session.Session(profile="us-east-1")
    )
    legacy_ciphertext, _ = client.encrypt(source=b"legacy", key_provider=provider)
    assert client.decrypt(source=legacy_ciphertext, keyring=keyring)[0] == b"legacy"
    assert client.decrypt(source=ciphertext, key_provider=provider)[0] == message


class ProfileClientSupplier(IClientSupplier):
    """The AWS Encryption SDK asks for a KMS client per region: one from its profile."""

    def get_client(self, param: Any) -> Any:
        return profile_client(param.region)


def single_region_account(handle: ClusterHandle) -> str:
    return json.loads(handle.file.read_text())["account_id"]


# ---- multi-region keys across three regions (once ReplicateKey is served) ------------


REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


@pytest.fixture(scope="module")
def three_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    if not MRK_SERVED:
        pytest.skip("multi-region keys (ReplicateKey) are not served yet")
    directory = tmp_path_factory.mktemp("three-regions")
    cluster.up(directory, list(REGIONS), network="direct")
    try:
        yield ClusterHandle(directory)
    finally:
        cluster.down(directory)


def wait_enabled(kms: Any, key_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + REPLICA_WAIT_S
    while True:
        try:
            metadata: dict[str, Any] = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        except kms.exceptions.NotFoundException:
            # ReplicateKey waits only a bounded time for the new region's acknowledgement;
            # on a loaded machine the replica may not exist there yet.
            if time.monotonic() > deadline:
                raise
        else:
            if metadata["KeyState"] == "Enabled" or time.monotonic() > deadline:
                return metadata
        time.sleep(0.2)


def test_multi_region_keys_with_boto3_and_the_encryption_sdk(three_regions, monkeypatch) -> None:
    from aws_cryptographic_material_providers.mpl.models import (
        CreateAwsKmsMrkDiscoveryKeyringInput,
        CreateAwsKmsMrkKeyringInput,
        DiscoveryFilter,
    )

    for name, value in aws_environment(three_regions.directory).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    clients = {region: profile_client(region) for region in REGIONS}
    primary = clients["us-east-1"].create_key(MultiRegion=True)["KeyMetadata"]
    assert primary["KeyId"].startswith("mrk-")
    replicas = {}
    for region in REGIONS[1:]:
        replicated = clients["us-east-1"].replicate_key(
            KeyId=primary["KeyId"], ReplicaRegion=region
        )
        assert replicated["ReplicaKeyMetadata"]["Arn"] == primary["Arn"].replace(
            "us-east-1", region
        )
        replicas[region] = wait_enabled(clients[region], primary["KeyId"])
        assert replicas[region]["KeyState"] == "Enabled", replicas[region]

    # boto3: a ciphertext of the primary decrypts with each replica.
    blob = clients["us-east-1"].encrypt(KeyId=primary["KeyId"], Plaintext=b"everywhere")
    for region in REGIONS[1:]:
        opened = clients[region].decrypt(CiphertextBlob=blob["CiphertextBlob"])
        assert opened["Plaintext"] == b"everywhere"
        assert opened["KeyId"] == replicas[region]["Arn"]

    # The Encryption SDK: encrypt in one region, decrypt in the others with MRK-aware keyrings.
    providers = material_providers()
    client = esdk_client()
    encrypt_keyring = providers.create_aws_kms_mrk_keyring(
        CreateAwsKmsMrkKeyringInput(kms_key_id=primary["Arn"], kms_client=clients["us-east-1"])
    )
    ciphertext, _ = client.encrypt(source=b"mrk message", keyring=encrypt_keyring)
    eu_keyring = providers.create_aws_kms_mrk_keyring(
        CreateAwsKmsMrkKeyringInput(
            kms_key_id=replicas["eu-west-1"]["Arn"], kms_client=clients["eu-west-1"]
        )
    )
    assert client.decrypt(source=ciphertext, keyring=eu_keyring)[0] == b"mrk message"
    ap_discovery = providers.create_aws_kms_mrk_discovery_keyring(
        CreateAwsKmsMrkDiscoveryKeyringInput(
            kms_client=clients["ap-southeast-2"],
            region="ap-southeast-2",
            discovery_filter=DiscoveryFilter(
                partition="meridian", account_ids=[primary["AWSAccountId"]]
            ),
        )
    )
    assert client.decrypt(source=ciphertext, keyring=ap_discovery)[0] == b"mrk message"
