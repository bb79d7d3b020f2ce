"""Continuous round-trip measurement: gRPC health checks of every region.

Each check is one ``grpc.health.v1.Health/Check`` on the region's own channel (so it
measures the same TLS connection calls use) and feeds ``RegionBook.probed``: the
round-trip time into the smoothed value, SERVING or not into the region's health and
its circuit breaker. A node that is shutting down answers NOT_SERVING, so clients
move away before it stops. A server without the health service (UNIMPLEMENTED) did
answer, so it counts as up and its answer time as the round trip.

The background loop runs on real time (a thread for KmsClient, a task for
AsyncKmsClient) from the client's first call until ``close()``; round trips are
measured with the injected clock. ``check_all`` runs one round on demand, which is
what tests under a ManualClock use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meridian.client.errors import ClientClosedError
from meridian.client.options import RoutingOptions
from meridian.client.regions import RegionBook

__all__ = ["AsyncHealthChecker", "SyncHealthChecker"]

# Checks drift apart by up to this fraction of the interval, so that many clients
# started together do not probe a region in lockstep.
INTERVAL_JITTER = 0.1

_SERVING = health_pb2.HealthCheckResponse.SERVING


class _Checker:
    def __init__(
        self, *, regions: Sequence[str], book: RegionBook, options: RoutingOptions
    ) -> None:
        self._regions = tuple(regions)
        self._book = book
        self._options = options
        self._clock = options.clock

    def _interval_s(self) -> float:
        interval = self._options.health_check_interval_s
        assert interval is not None
        return interval * (1 + self._options.rng.uniform(-INTERVAL_JITTER, INTERVAL_JITTER))

    def _record_answer(self, region: str, started: float, status: int) -> None:
        rtt_s = self._clock.monotonic() - started
        self._book.probed(region, rtt_s=rtt_s, serving=status == _SERVING)

    def _record_error(self, region: str, started: float, code: grpc.StatusCode) -> None:
        if code is grpc.StatusCode.UNIMPLEMENTED:
            self._book.probed(region, rtt_s=self._clock.monotonic() - started, serving=True)
        else:
            self._book.probed(region, rtt_s=None, serving=False)


class SyncHealthChecker(_Checker):
    def __init__(
        self,
        *,
        regions: Sequence[str],
        channel_for: Callable[[str], grpc.Channel],
        book: RegionBook,
        options: RoutingOptions,
    ) -> None:
        super().__init__(regions=regions, book=book, options=options)
        self._channel_for = channel_for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def check_all(self) -> None:
        """Check every region once, one after the other."""
        for region in self._regions:
            self.check(region)

    def check(self, region: str) -> None:
        stub: Any = health_pb2_grpc.HealthStub(self._channel_for(region))
        started = self._clock.monotonic()
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self._options.health_check_timeout_s,
            )
        except grpc.RpcError as error:
            self._record_error(region, started, error.code())
        except ValueError:
            # The channel was closed under the check: the client is closing.
            raise ClientClosedError("the client was closed during a health check") from None
        else:
            self._record_answer(region, started, response.status)

    def start(self) -> None:
        """Start the background loop, once; a no-op when checks are switched off."""
        if self._options.health_check_interval_s is None:
            return
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="meridian-health-checks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        # Closing the channels (after this) ends a check in flight at once; the join is
        # bounded by one check's timeout in any case.
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._options.health_check_timeout_s + 1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_all()
            except ClientClosedError:
                return
            if self._stop.wait(self._interval_s()):
                return


class AsyncHealthChecker(_Checker):
    def __init__(
        self,
        *,
        regions: Sequence[str],
        channel_for: Callable[[str], grpc.aio.Channel],
        book: RegionBook,
        options: RoutingOptions,
    ) -> None:
        super().__init__(regions=regions, book=book, options=options)
        self._channel_for = channel_for
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def check_all(self) -> None:
        for region in self._regions:
            await self.check(region)

    async def check(self, region: str) -> None:
        stub: Any = health_pb2_grpc.HealthStub(self._channel_for(region))
        started = self._clock.monotonic()
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self._options.health_check_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            self._record_error(region, started, error.code())
        except grpc.aio.UsageError:
            raise ClientClosedError("the client was closed during a health check") from None
        else:
            self._record_answer(region, started, response.status)

    def start(self) -> None:
        """Start the background task in the running loop, once."""
        if self._options.health_check_interval_s is None or self._stopped:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="meridian-health-checks"
            )

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except ClientClosedError:
                return
            await asyncio.sleep(self._interval_s())
