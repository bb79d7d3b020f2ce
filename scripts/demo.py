"""The walkthrough behind scripts/demo: a local cluster, the SDK, the command line."""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from demo_steps import Demo  # scripts/demo_steps.py: the multi-region part

from meridian.cli import cluster
from meridian.client import KmsClient

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def cli(cluster_file: Path, *args: str, stdin: bytes | None = None) -> str:
    command = [sys.executable, "-m", "meridian", "kms", "--cluster-file", str(cluster_file), *args]
    print("$ meridian kms " + " ".join(args), flush=True)
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode())
        raise SystemExit(f"demo failed: `meridian kms {args[0]}` exited {result.returncode}")
    output = result.stdout.decode()
    print(output.rstrip())
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--dir", type=Path, default=Path("demo-cluster"))
    args = parser.parse_args()
    directory: Path = args.dir.resolve()

    step(f"Starting a local cluster: {', '.join(REGIONS)} (data, PKI and logs in {directory})")
    spec = cluster.up(directory, REGIONS, report=lambda line: print("   " + line))
    cluster_file = directory / "cluster.json"
    try:
        for state in cluster.status(directory):
            print(f"   {state.region:<16} {state.endpoint:<22} pid {state.pid}  {state.health}")
        demo = Demo(directory, step)
        demo.geography()

        step("SDK: create a key in us-east-1, give it an alias, encrypt and decrypt")
        with KmsClient.from_cluster_file(cluster_file, preferred_region="us-east-1") as kms:
            created = kms.create_key(description="demo: card numbers", tags={"team": "payments"})
            key = created.key_metadata
            print(f"   created {key.arn} ({key.key_state}, {key.key_spec})")
            kms.create_alias(alias_name="alias/demo-cards", target_key_id=key.key_id)
            context = {"tenant": "acme", "purpose": "cards"}
            encrypted = kms.encrypt(
                key_id="alias/demo-cards",
                plaintext=b"4111 1111 1111 1111",
                encryption_context=context,
            )
            print(
                f"   ciphertext: {len(encrypted.ciphertext_blob)} bytes,"
                f" served by {encrypted.region}"
            )
            decrypted = kms.decrypt(
                ciphertext_blob=encrypted.ciphertext_blob, encryption_context=context
            )
            print(f"   decrypted:  {decrypted.plaintext.decode()!r} (key {decrypted.key_id})")
            try:
                kms.decrypt(
                    ciphertext_blob=encrypted.ciphertext_blob, encryption_context={"tenant": "evil"}
                )
            except Exception as error:  # the demo shows the typed error by name
                print(f"   wrong context -> {type(error).__name__}: {error}")
            data_key = kms.generate_data_key(key_id=key.key_id, key_spec="AES_256")
            print(
                f"   data key: {len(data_key.plaintext)} bytes"
                f" + {len(data_key.ciphertext_blob)}-byte wrapped copy"
            )

        step("Command line: the same job with the AWS CLI's flags and output")
        os.environ["MERIDIAN_CLUSTER_FILE"] = str(cluster_file)
        created = json.loads(cli(cluster_file, "create-key", "--description", "demo: CLI key"))
        key_id = created["KeyMetadata"]["KeyId"]
        secret = directory / "secret.txt"
        secret.write_bytes(b"hello from the command line")
        blob_b64 = cli(
            cluster_file,
            "encrypt",
            "--key-id",
            key_id,
            "--plaintext",
            f"fileb://{secret}",
            "--encryption-context",
            "app=demo",
            "--query",
            "CiphertextBlob",
            "--output",
            "text",
        ).strip()
        blob_file = directory / "secret.bin"
        blob_file.write_bytes(base64.b64decode(blob_b64))
        plaintext_b64 = cli(
            cluster_file,
            "decrypt",
            "--ciphertext-blob",
            f"fileb://{blob_file}",
            "--encryption-context",
            "app=demo",
            "--query",
            "Plaintext",
            "--output",
            "text",
        ).strip()
        print(f"   decrypted: {base64.b64decode(plaintext_b64).decode()!r}")
        cli(cluster_file, "list-aliases")
        cli(
            cluster_file,
            "schedule-key-deletion",
            "--key-id",
            key_id,
            "--pending-window-in-days",
            "7",
        )

        demo.multi_region_key()
        demo.lose_a_region()
        demo.replication_and_audit()
        if demo.pending:
            step("Steps still pending (their features are being built)")
            for note in demo.pending:
                print(f"   - {note}")
    finally:
        if args.keep:
            step(f"The cluster keeps running. Try: export MERIDIAN_CLUSTER_FILE={cluster_file}")
            print(f"   stop it with: .venv/bin/meridian cluster down --dir {directory}")
        else:
            step("Stopping the cluster")
            for region, outcome in cluster.down(directory).items():
                print(f"   {region}: {outcome}")
    del spec
    step("Done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
