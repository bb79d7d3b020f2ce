"""`event_loop` in a node's config picks the loop the node process really runs on
(server/event_loop.py): uvloop by default where installed, the standard loop when
asked; the node says which in its `node ready` log line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from meridian.cli import cluster

pytestmark = pytest.mark.e2e
REGION = "us-east-1"


def _loop_of(log: Path) -> str:
    """The `event_loop` field of the node's `node ready` line (JSON logs)."""
    ready = next(
        json.loads(line) for line in log.read_text().splitlines() if '"node ready"' in line
    )
    return str(ready["event_loop"])


def test_the_node_runs_on_the_loop_its_config_names(tmp_path: Path) -> None:
    cluster.up(tmp_path, [REGION], network="direct")
    try:
        entry = cluster.load(tmp_path).regions[REGION]
        assert _loop_of(entry.log) == "uvloop"  # "auto", uvloop being installed
        cluster.down(tmp_path)
        document = tomllib.loads(entry.config.read_text())
        document["event_loop"] = "asyncio"
        entry.config.write_text(tomli_w.dumps(document))
        entry.log.write_text("")
        cluster.start(tmp_path, REGION)
        assert _loop_of(cluster.load(tmp_path).regions[REGION].log) == "asyncio"
    finally:
        cluster.down(tmp_path)
