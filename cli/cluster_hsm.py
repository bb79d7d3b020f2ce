"""Regions of the local cluster whose root key lives in SoftHSM2 (`cluster up --hsm-region`).

Each such region gets a SoftHSM2 token of its own, labelled with the region's name, in the
cluster's one SoftHSM2 folder ``DIR/hsm/`` (made by ``meridian hsm init`` in a process of
its own). One folder, because a process loads a PKCS#11 module and its configuration only
once, and the cluster manager opens every region's root key in its own process (to create
the AWS endpoint's access keys). The region's node config names its token as its
``[root_key]``. Whether a region uses the HSM is decided by its token alone, so a restart
keeps it without any new field in ``cluster.json``.

A region that already ran on a key file keeps that file as ``[root_key.previous]``: its
node serves every old key at once, and ``meridian node rewrap-root --from file --to
pkcs11`` moves the material into the token (docs/hsm.md).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meridian.cli import softhsm
from meridian.cli.cluster_state import ClusterError, ClusterSpec

HSM_DIR_NAME = "hsm"
_INIT_TIMEOUT_S = 120.0


def hsm_directory(cluster_dir: Path) -> Path:
    return cluster_dir / HSM_DIR_NAME


def prepare(spec: ClusterSpec, hsm_regions: Sequence[str], report: Callable[[str], None]) -> None:
    """Make a SoftHSM2 token for every region in `hsm_regions` that has none yet."""
    for region in hsm_regions:
        if region not in spec.regions:
            raise ClusterError(
                f"--hsm-region {region} is not one of the cluster's regions "
                f"({', '.join(spec.regions)})"
            )
        directory = hsm_directory(spec.directory)
        if softhsm.existing_token(directory, region) is not None:
            continue
        problem = softhsm.available()
        if problem is not None:
            raise ClusterError(f"region {region} cannot run on SoftHSM2: {problem}")
        report(f"region {region}: creating a SoftHSM2 token and root key in {directory}")
        command = [sys.executable, "-m", "meridian", "hsm", "init", "--dir", str(directory)]
        command += ["--token-label", region]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=_INIT_TIMEOUT_S)
        except subprocess.CalledProcessError as error:
            output = (error.stdout + error.stderr).decode(errors="replace").strip()
            raise ClusterError(f"region {region}: `meridian hsm init` failed: {output}") from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ClusterError(f"region {region}: `meridian hsm init` failed: {error}") from None


def root_key_table(cluster_dir: Path, region: str, data_dir: Path) -> dict[str, Any]:
    """The `[root_key]` table of a region's node config."""
    file_key: dict[str, Any] = {"provider": "file", "path": "root.key"}
    token = softhsm.existing_token(hsm_directory(cluster_dir), region)
    if token is None:
        return file_key
    table = token.root_key_config()
    if (data_dir / "root.key").exists():
        table["previous"] = file_key
    return table
