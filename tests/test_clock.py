"""`wait_event`, the wait every loop of the balancer and data plane makes: it must never
swallow the cancellation that stops the loop, whenever that comes."""

from __future__ import annotations

import asyncio

import pytest

from i2p_multihome.clock import SYSTEM_CLOCK, wait_event


async def test_wait_event_returns_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, SYSTEM_CLOCK, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, SYSTEM_CLOCK, 10.0) is True


@pytest.mark.parametrize("steps", range(8))
async def test_a_cancel_as_the_event_is_set_is_never_lost(steps: int) -> None:
    """The event set, then the loop cancelled `steps` loop turns later: wherever the wait is
    by then (waking, cleaning up, returned), the loop ends."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_event(event, SYSTEM_CLOCK, 3600.0)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done and task.cancelled()
