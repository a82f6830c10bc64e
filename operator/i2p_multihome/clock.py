"""Time as the balancer and the I2CP sessions see it: injectable, so tests drive the clock
instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps: timers, intervals, downtimes."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: what goes on the wire (LeaseSet dates) and in status."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on `monotonic()`."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


SYSTEM_CLOCK = SystemClock()


async def wait_event(event: asyncio.Event, clock: Clock, timeout_s: float | None) -> bool:
    """Wait until `event` is set or `timeout_s` passes on `clock`; True if the event was set."""
    if timeout_s is None:
        await event.wait()
        return True
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Not awaited: a cancellation of ours arriving while we awaited them would be
        # taken for theirs and lost, and the loop that waits here would never stop.
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()
