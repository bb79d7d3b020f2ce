"""The I/O half of a call's tries: the loops that carry out a ``CallPlan``.

``run_sync`` (KmsClient) and ``run_async`` (AsyncKmsClient) are the same loop in the
two styles: ask the plan for the next step, sleep or send, report the outcome. They
decide nothing themselves. Hedging is the one place with two attempts in flight: the
blocking twin uses gRPC futures, the async twin tasks; the first answer wins and the
other attempt is cancelled. The hedge delay is waited on the real clock, as it races
a real network call.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from meridian.client.errors import KmsError
from meridian.client.retry import Attempt, Backoff, CallPlan, GiveUp

__all__ = ["run_async", "run_sync"]

# region -> the stub's method for the operation (a grpc(.aio) UnaryUnaryMultiCallable).
MethodFor = Callable[[str], Any]
# (operation, region, rpc error) -> the typed error, as the twins rebuild it.
SyncErrorFrom = Callable[[str, str, grpc.RpcError], KmsError]
AsyncErrorFrom = Callable[[str, str, grpc.aio.AioRpcError], KmsError]


def run_sync(
    plan: CallPlan[Any], method_for: MethodFor, error_from: SyncErrorFrom
) -> tuple[Any, str]:
    """Carry out ``plan``; returns (response, region that answered) or raises."""
    clock = plan.clock
    while True:
        step = plan.next_step()
        if isinstance(step, GiveUp):
            raise step.error
        if isinstance(step, Backoff):
            clock.sleep(step.seconds)
            continue
        if step.hedge_region is not None:
            answer = _hedged_sync(plan, step, method_for, error_from)
            if answer is not None:
                return answer
            continue
        method = method_for(step.region)
        try:
            response = method(
                plan.request_for(step.region), timeout=step.timeout_s, metadata=plan.metadata
            )
        except grpc.RpcError as rpc_error:
            plan.failed(step.region, _typed(error_from, plan, step.region, rpc_error))
            continue
        plan.succeeded(step.region, response)
        return response, step.region


def _hedged_sync(
    plan: CallPlan[Any], step: Attempt, method_for: MethodFor, error_from: SyncErrorFrom
) -> tuple[Any, str] | None:
    finished: queue.SimpleQueue[str] = queue.SimpleQueue()
    pending: dict[str, grpc.Future[Any]] = {}

    def start(region: str, timeout_s: float) -> None:
        future = method_for(region).future(
            plan.request_for(region), timeout=timeout_s, metadata=plan.metadata
        )
        pending[region] = future
        future.add_done_callback(lambda _future: finished.put(region))

    start(step.region, step.timeout_s)
    hedge_region = None
    try:
        next_done: str | None = finished.get(timeout=step.hedge_after_s)
    except queue.Empty:
        next_done = None
        assert step.hedge_region is not None
        timeout_s = plan.begin_hedge(step.hedge_region)
        if timeout_s is not None:
            hedge_region = step.hedge_region
            start(hedge_region, timeout_s)
    try:
        while pending:
            # Every attempt has a gRPC deadline, so each future does finish.
            region = next_done if next_done is not None else finished.get()
            next_done = None
            future = pending.pop(region)
            try:
                response = future.result()
            except grpc.FutureCancelledError:
                plan.abandoned(region)
                continue
            except grpc.RpcError as rpc_error:
                plan.failed(region, _typed(error_from, plan, region, rpc_error))
                if plan.is_final:
                    return None
                continue
            plan.succeeded(region, response, hedge=region == hedge_region)
            return response, region
        return None
    finally:
        for region, future in pending.items():
            future.cancel()
            plan.abandoned(region)


async def run_async(
    plan: CallPlan[Any], method_for: MethodFor, error_from: AsyncErrorFrom
) -> tuple[Any, str]:
    """The asyncio twin of ``run_sync``."""
    clock = plan.clock
    while True:
        step = plan.next_step()
        if isinstance(step, GiveUp):
            raise step.error
        if isinstance(step, Backoff):
            await clock.sleep_async(step.seconds)
            continue
        if step.hedge_region is not None:
            answer = await _hedged_async(plan, step, method_for, error_from)
            if answer is not None:
                return answer
            continue
        method = method_for(step.region)
        try:
            response = await method(
                plan.request_for(step.region), timeout=step.timeout_s, metadata=plan.metadata
            )
        except grpc.aio.AioRpcError as rpc_error:
            plan.failed(step.region, _typed(error_from, plan, step.region, rpc_error))
            continue
        plan.succeeded(step.region, response)
        return response, step.region


async def _hedged_async(
    plan: CallPlan[Any], step: Attempt, method_for: MethodFor, error_from: AsyncErrorFrom
) -> tuple[Any, str] | None:
    pending: dict[asyncio.Task[Any], str] = {}

    def start(region: str, timeout_s: float) -> None:
        call = method_for(region)(
            plan.request_for(region), timeout=timeout_s, metadata=plan.metadata
        )
        pending[asyncio.ensure_future(call)] = region

    start(step.region, step.timeout_s)
    hedge_region = None
    try:
        done, _ = await asyncio.wait(pending, timeout=step.hedge_after_s)
        if not done:
            assert step.hedge_region is not None
            timeout_s = plan.begin_hedge(step.hedge_region)
            if timeout_s is not None:
                hedge_region = step.hedge_region
                start(hedge_region, timeout_s)
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                region = pending.pop(task)
                try:
                    response = task.result()
                except asyncio.CancelledError:
                    plan.abandoned(region)
                    continue
                except grpc.aio.AioRpcError as rpc_error:
                    plan.failed(region, _typed(error_from, plan, region, rpc_error))
                    if plan.is_final:
                        return None
                    continue
                plan.succeeded(region, response, hedge=region == hedge_region)
                return response, region
        return None
    finally:
        for task, region in pending.items():
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                # Its outcome no longer matters; reading it keeps asyncio from logging
                # "exception was never retrieved".
                task.exception()
            plan.abandoned(region)


def _typed(
    error_from: Callable[[str, str, Any], KmsError],
    plan: CallPlan[Any],
    region: str,
    rpc_error: Any,
) -> KmsError:
    error = error_from(plan.operation, region, rpc_error)
    # As `raise ... from rpc_error` would: the grpc error stays attached for debugging.
    error.__cause__ = rpc_error
    return error
