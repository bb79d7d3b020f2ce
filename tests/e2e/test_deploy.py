"""deploy/ cannot drift from the local cluster.

The node configs and cluster.json under deploy/ are regenerated here with the local
cluster's own writer and must be identical; docker-compose.yml is validated by Debian's
`docker-compose config` (scripts/install-docker-compose installs it) and its services are
held against the configs and against what `meridian cluster up` really runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from meridian.cli import cluster, deploy_gen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
REGIONS = list(deploy_gen.DEPLOY_REGIONS)
CONTAINER_ROOT = deploy_gen.CONTAINER_ROOT


def test_deploy_configs_are_what_the_cluster_writer_writes(tmp_path: Path) -> None:
    written = deploy_gen.generate(tmp_path)
    assert len(written) == len(REGIONS) + 1
    for path in written:
        committed = DEPLOY / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale; run scripts/gen-deploy"
        )


def _compose_config() -> dict[str, Any]:
    """`docker-compose config` output, parsed by the YAML library docker-compose runs on."""
    program = shutil.which("docker-compose")
    if program is None:
        if shutil.which("apt-get") is None:
            pytest.skip("docker-compose is not installed and apt-get is unavailable to install it")
        pytest.fail(
            "docker-compose is missing: run scripts/install-docker-compose (scripts/test does)"
        )
    result = subprocess.run(
        [program, "--file", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "meridian"},
    )
    assert result.returncode == 0, result.stderr
    # Debian's docker-compose is a Python program: its interpreter has PyYAML.
    interpreter = Path(program).read_text(errors="replace").splitlines()[0].removeprefix("#!")
    parsed = subprocess.run(
        [
            *interpreter.split(),
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        input=result.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = json.loads(parsed.stdout)
    return document


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a host path relative to deploy/) + mode."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("/"):
            source = os.path.relpath(source, DEPLOY)
        mounts[target] = f"{source}:{mode[0] if mode else 'rw'}"
    return mounts


def test_docker_compose_runs_the_local_clusters_nodes_and_configs() -> None:
    config = _compose_config()
    services = config["services"]
    assert set(services) == {"pki", "demo-client", *REGIONS}
    assert services["pki"]["command"] == REGIONS
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    # `meridian` in the image is what `python -m meridian` is for the local cluster.
    assert 'ENTRYPOINT ["meridian"]' in dockerfile
    data_volumes = set()
    for region in REGIONS:
        service = services[region]
        config_path = CONTAINER_ROOT / "regions" / region / "node.toml"
        local_command = cluster.node_command(config_path)
        assert local_command[1:3] == ["-m", "meridian"]
        assert service["command"] == local_command[3:]
        mounts = _volumes(service)
        assert mounts[str(config_path)] == f"regions/{region}/node.toml:ro"
        assert mounts["/meridian/pki"] == "pki:ro"
        assert mounts["/meridian/cluster.json"] == "cluster.json:ro"
        data_dir = CONTAINER_ROOT / "regions" / region / "data"
        data_volumes.add(mounts[str(data_dir)])
        assert f"{data_dir} \\" in dockerfile or f"{data_dir}\n" in dockerfile
        server_name = f"{region}.node.meridian"
        assert service["networks"]["meridian"]["aliases"] == [server_name]
        assert service["depends_on"]["pki"]["condition"] == "service_completed_successfully"
        assert service["healthcheck"]["test"][1:5] == ["meridian", "kms", "--region", region]

        node = tomllib.loads((DEPLOY / "regions" / region / "node.toml").read_text())
        assert node["region"] == region
        assert (config_path.parent / node["data_dir"]).resolve() == data_dir
        assert node["peers"] == [
            {"region": peer, "endpoint": f"{peer}.node.meridian:{deploy_gen.NODE_PORT}"}
            for peer in REGIONS
            if peer != region
        ]
    # One volume per region, each its own.
    assert data_volumes == {f"{region}-data:rw" for region in REGIONS}
    assert set(config["volumes"]) == {"pki", *(f"{region}-data" for region in REGIONS)}
    client = services["demo-client"]
    assert set(client["depends_on"]) == set(REGIONS)
    assert _volumes(client)["/meridian/cluster.json"] == "cluster.json:ro"
    cluster_file = json.loads((DEPLOY / "cluster.json").read_text())
    assert list(cluster_file["regions"]) == REGIONS
    for region, entry in cluster_file["regions"].items():
        assert entry["endpoint"] == f"{region}.node.meridian:{deploy_gen.NODE_PORT}"


def test_deploy_configs_match_a_running_local_cluster(tmp_path: Path) -> None:
    """The same regions, run by `cluster up`: same config but for the addresses."""
    spec = cluster.up(tmp_path / "cluster", REGIONS, network="direct")
    try:
        for region, entry in spec.regions.items():
            assert entry.pid is not None
            running = Path(f"/proc/{entry.pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert [os.fsdecode(part) for part in running] == cluster.node_command(entry.config)
            local = tomllib.loads(entry.config.read_text())
            deployed = tomllib.loads((DEPLOY / "regions" / region / "node.toml").read_text())
            assert local["listen"] == entry.direct_endpoint
            assert deployed["listen"] == deploy_gen.LISTEN_ALL
            assert [peer["region"] for peer in local["peers"]] == [
                peer["region"] for peer in deployed["peers"]
            ]
            assert deployed["aws_gateway"]["listen"] == f"0.0.0.0:{deploy_gen.AWS_PORT}"
            for document in (local, deployed):
                del document["listen"]
                for peer in document["peers"]:
                    del peer["endpoint"]
                document.get("aws_gateway", {}).pop("listen", None)
            assert local == deployed
    finally:
        cluster.down(tmp_path / "cluster")
