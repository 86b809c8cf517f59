"""Bounding the memory of the pictures a server process renders at once, by estimate."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.concurrency import run_in_threadpool

from allmicro_data.errors import DomainError
from allmicro_data.settings import Settings


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where there is one (not on musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


class RenderBusy(DomainError):
    """Renders already hold the memory this one needs, longer than a request should wait."""

    status = 503
    title = "Server busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RenderBudget:
    """Bytes that renders may hold at once, each render taking its estimated peak.

    Renders larger than a tile may together take three quarters of the budget, so that a few
    large exports never keep a viewer's tiles waiting. Admission is not first come, first
    served: a small render that fits goes ahead of a large one that waits, and a render that
    cannot start within `wait_seconds` answers 503 with Retry-After instead of queueing
    without end (a crowd of large requests costs them, not the server's memory).

    Used from the event loop only: checking and taking room has no await in between, so it
    needs no lock, and the fast path of a tile is two comparisons.
    """

    def __init__(self, capacity: int, wait_seconds: float) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.large_share = capacity * 3 // 4
        self.small = capacity // 16  # at most this much is a tile-sized render
        self.used = 0
        self.used_large = 0
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderBudget:
        return cls(settings.render_memory_mb * 1024 * 1024, settings.render_wait_seconds)

    def _fits(self, cost: int, large: bool) -> bool:
        if large and self.used_large + cost > self.large_share:
            return False
        return self.used + cost <= self.capacity

    @asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Room for a render of about `cost` bytes while the block runs; RenderBusy if none
        comes free in time. A render larger than its share is clamped to it: it runs alone."""
        large = cost > self.small
        cost = max(0, min(cost, self.large_share if large else self.capacity))
        if not self._fits(cost, large):
            await self._wait(cost, large)
        self.used += cost
        if large:
            self.used_large += cost
        try:
            yield
        finally:
            self.used -= cost
            if large:
                self.used_large -= cost
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if large and _MALLOC_TRIM is not None:
                # A large render's pictures are freed into the allocator's per-thread arenas,
                # which keep them: give the pages back (a few ms, off the event loop), or the
                # server's resident memory creeps up render after render.
                await run_in_threadpool(_MALLOC_TRIM, 0)

    async def _wait(self, cost: int, large: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while not self._fits(cost, large):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RenderBusy(
                    "the server is rendering as much as its memory allows; try again shortly",
                    retry_after=max(1, math.ceil(self.wait_seconds)),
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                # Woken by every release; the loop checks whether the room is enough now.
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self._waiters.remove(waiter)
