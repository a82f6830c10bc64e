"""Background tasks that must run until cancelled: when one ends anyway, its owner is told,
so nothing stops silently."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


async def first_to_end(tasks: Mapping[str, asyncio.Task[None]]) -> tuple[str, BaseException | None]:
    """Wait until one of `tasks` ends; its name, and the exception it ended with (None if it
    returned or was cancelled)."""
    done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
    ended = next(iter(done))
    name = next(n for n, task in tasks.items() if task is ended)
    return name, None if ended.cancelled() else ended.exception()
