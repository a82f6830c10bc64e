"""A Clock the test moves: sleepers wake only when `advance` passes their deadline, in
deadline order, so timing behaviour is tested without waiting for it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

# Enough loop iterations for woken tasks to run up to their next I/O or sleep.
_SETTLE_ROUNDS = 50


class ManualClock:
    def __init__(self, start: float = 1000.0, wall: float | None = None) -> None:
        self._now = start
        self._wall_offset = (time.time() if wall is None else wall) - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.sleeps: list[float] = []  # every duration asked for, in order

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), waiter))
        await waiter

    @property
    def next_deadline(self) -> float | None:
        live = [deadline for deadline, _, waiter in self._sleepers if not waiter.done()]
        return min(live) if live else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking each sleeper at its own deadline and
        letting the loop run after each wake-up."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._sleepers)
            if waiter.done():  # cancelled
                continue
            self._now = max(self._now, deadline)
            waiter.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)
