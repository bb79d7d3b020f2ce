"""The node config's `workers` setting (server/workers.py)."""

from __future__ import annotations

import pytest
from config_support import BASE, config

from meridian.server.config import WORKERS_MAX, ConfigError, parse_config


def test_one_worker_is_the_default() -> None:
    assert parse_config(config(), base=BASE).workers == 1


@pytest.mark.parametrize("workers", [1, 2, WORKERS_MAX])
def test_worker_counts_in_range_are_taken(workers: int) -> None:
    assert parse_config(config(workers=workers), base=BASE).workers == workers


@pytest.mark.parametrize("workers", [0, -1, WORKERS_MAX + 1, "2", 2.0, True])
def test_other_worker_counts_are_refused(workers: object) -> None:
    with pytest.raises(ConfigError, match="workers must be an integer"):
        parse_config(config(workers=workers), base=BASE)


def test_several_workers_are_refused_with_replication_peers() -> None:
    peers = [{"region": "eu-west-1", "endpoint": "127.0.0.12:7001"}]
    assert parse_config(config(workers=1, peers=peers), base=BASE).workers == 1
    with pytest.raises(ConfigError, match="peers"):
        parse_config(config(workers=2, peers=peers), base=BASE)
