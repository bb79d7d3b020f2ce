"""The node's event loop setting (server/event_loop.py, `event_loop` in the config)."""

from __future__ import annotations

import asyncio

import pytest
from config_support import BASE, config

from meridian.server import event_loop
from meridian.server.config import ConfigError, parse_config


def test_auto_is_the_default() -> None:
    assert parse_config(config(), base=BASE).event_loop == "auto"


@pytest.mark.parametrize("choice", ["auto", "uvloop", "asyncio"])
def test_each_loop_is_taken(choice: str) -> None:
    assert parse_config(config(event_loop=choice), base=BASE).event_loop == choice


@pytest.mark.parametrize("choice", ["trio", "", "UVLOOP", 1, True])
def test_other_values_are_refused(choice: object) -> None:
    with pytest.raises(ConfigError, match="event_loop must be one of"):
        parse_config(config(event_loop=choice), base=BASE)


def test_without_uvloop_auto_means_asyncio_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "uvloop_available", lambda: False)
    assert event_loop.resolve("auto") == "asyncio"
    assert event_loop.loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        parse_config(config(event_loop="uvloop"), base=BASE)


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_run_uses_the_loop_it_was_asked_for(choice: str) -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return event_loop.running_loop_name()

    assert event_loop.run(main(), choice) == choice


def test_auto_runs_on_uvloop_where_installed() -> None:
    # uvloop is a dependency of the project on Linux, so "auto" must pick it here.
    assert event_loop.uvloop_available()
    assert event_loop.resolve("auto") == "uvloop"
