"""One way to wait for something in the test bed, the tests and the benchmarks.

`wait_until(what, timeout, check)` calls `check()` until it returns a truthy value and returns
that value. A falsy value means "not yet"; a check that knows why returns `NotYet(detail)`,
and the last detail goes into the timeout's message, with `explain()`'s account of the state
when given. The error raised on timeout is `error` (AssertionError by default, so a test
fails); the testnet, the control plane and the demo pass their own. A check that sees the
wait can never succeed (a process died) raises at once instead of returning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NotYet:
    """A check's "not yet", with what it saw: falsy, so `wait_until` keeps polling."""

    detail: object

    def __bool__(self) -> Literal[False]:
        return False

    def __str__(self) -> str:
        return str(self.detail)


def wait_until(
    what: str,
    timeout: float,
    check: Callable[[], T | NotYet | None],
    *,
    interval: float = 2.0,
    explain: Callable[[], str] | None = None,
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Poll `check()` every `interval` seconds until it returns a truthy value, and return it.

    The check always runs at least once, and once more at the deadline, so a short timeout
    still gets a last look. On timeout raises `error("timed out after Ns waiting for WHAT;
    last: DETAIL; EXPLANATION")`, the last two parts only when known.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and not isinstance(result, NotYet) and result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            parts = [f"timed out after {timeout:.0f}s waiting for {what}"]
            if isinstance(result, NotYet):
                parts.append(f"last: {result.detail}")
            if explain is not None:
                parts.append(explain())
            raise error("; ".join(parts))
        time.sleep(min(interval, remaining))
