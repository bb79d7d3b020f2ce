"""Which asyncio event loop a node process runs on: uvloop where it is installed.

Why: a node's CPU per call is mostly event-loop and gRPC machinery (docs/performance.md
§4), and uvloop (libuv, the loop of uvicorn and many asyncio servers) runs the same
callbacks, futures and timers for less CPU than the standard library's loop: ~17% less
for the empty gRPC call and ~8% less for Encrypt on this project's benchmark. gRPC's
asyncio stack runs on any asyncio loop. The standard loop stays one setting away
(``event_loop = "asyncio"``), for platforms without uvloop or to rule it out when
chasing a problem.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """The loop that ``choice`` ("auto", "uvloop" or "asyncio") means on this machine."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        raise ValueError('event_loop = "uvloop" but uvloop is not installed')
    return choice


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for ``asyncio.Runner``; None means the standard library's loop."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": what the running loop is (for logs and benchmark reports)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
