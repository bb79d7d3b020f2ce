"""The node config's [caches] table: how many keys and materials stay in memory."""

from __future__ import annotations

import pytest
from config_support import BASE, config

from meridian.server.cache_settings import ENTRIES_MAX, CacheSettings
from meridian.server.config import ConfigError, parse_config


def test_the_defaults_hold_100000_of_each() -> None:
    assert parse_config(config(), base=BASE).caches == CacheSettings(100_000, 100_000)


def test_sizes_in_range_are_taken() -> None:
    caches = {"keys_max": 1, "materials_max": ENTRIES_MAX}
    parsed = parse_config(config(caches=caches), base=BASE).caches
    assert parsed == CacheSettings(keys_max=1, materials_max=ENTRIES_MAX)


@pytest.mark.parametrize("name", ["keys_max", "materials_max"])
@pytest.mark.parametrize("value", [0, -1, ENTRIES_MAX + 1, "1000", 1000.0, True])
def test_other_sizes_are_refused(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"caches\.{name} must be an integer"):
        parse_config(config(caches={name: value}), base=BASE)


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"caches\.grants_max is not a known setting"):
        parse_config(config(caches={"grants_max": 10}), base=BASE)
