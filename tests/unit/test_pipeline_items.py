"""CallPipeline.run_items: the batch operations' path through the call hooks.

Each item passes every hook as a single call would; the operations run one after
another; a hook with ``after_items`` sees all items at once; one item's failure (its
operation's or a hook's) replaces that item's outcome only.
"""

from __future__ import annotations

from typing import Any

from meridian.server.api.interceptor import CallInfo, CallPipeline
from meridian.server.domain.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    KmsError,
    KMSInternalException,
    ValidationException,
)
from meridian.server.domain.model import Caller

CALLER = Caller(principal_arn="arn:meridian:iam::111122223333:user/admin")


def _call(index: int) -> CallInfo:
    return CallInfo(
        operation="Encrypt",
        request=index,
        caller=CALLER,
        request_id=f"batch/{index}",
        source_address="127.0.0.1",
        started=0.0,
    )


class Recorder:
    """A plain hook: refuses item 1, crashes on item 2's ``after``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def before(self, call: CallInfo) -> None:
        self.log.append(f"before {call.request}")
        if call.request == 1:
            raise AccessDeniedException("no")

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        self.log.append(f"after {call.request} {error.reason if error else response}")
        if call.request == 2:
            raise RuntimeError("a bug")


class Grouped:
    """A hook with after_items: sees every item at once; fails item 3."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def before(self, call: CallInfo) -> None:
        return None

    async def after(self, call: CallInfo, response: Any | None, error: KmsError | None) -> None:
        raise AssertionError("after_items is used for batches")

    async def after_items(
        self, outcomes: list[tuple[CallInfo, Any | None, KmsError | None]]
    ) -> list[KmsError | None]:
        self.log.append(
            "after_items "
            + ",".join(
                f"{call.request}:{error.reason if error else response}"
                for call, response, error in outcomes
            )
        )
        return [
            DependencyTimeoutException("down") if c.request == 3 else None for c, _, _ in outcomes
        ]


async def test_items_pass_every_hook_and_fail_alone() -> None:
    log: list[str] = []
    pipeline = CallPipeline([Recorder(log), Grouped(log)])

    async def operation(request: Any) -> Any:
        log.append(f"run {request}")
        if request == 4:
            raise ValidationException("bad item")
        return f"ok{request}"

    calls = [_call(index) for index in range(6)]
    outcomes = await pipeline.run_items([(call, operation) for call in calls])
    summary = [error.reason if error else response for response, error in outcomes]
    assert summary == [
        "ok0",
        "AccessDeniedException",  # refused before it ran
        "KMSInternalException",  # a hook crashed: as CallPipeline.run answers
        "DependencyTimeoutException",  # the grouped hook failed it
        "ValidationException",  # its operation refused it
        "ok5",
    ]
    assert isinstance(outcomes[2][1], KMSInternalException)
    # Operations one after another, each after its own before; then each hook's after
    # for every item, the grouped hook once, seeing what the hooks before it decided.
    assert log == [
        "before 0", "run 0", "before 1", "before 2", "run 2", "before 3", "run 3",
        "before 4", "run 4", "before 5", "run 5",
        "after 0 ok0", "after 1 AccessDeniedException", "after 2 ok2", "after 3 ok3",
        "after 4 ValidationException", "after 5 ok5",
        "after_items 0:ok0,1:AccessDeniedException,2:KMSInternalException,3:ok3,"
        "4:ValidationException,5:ok5",
    ]  # fmt: skip
