"""Status reporting with one loop and two sinks: the standalone balancer's status file and
the operator's status subresource. Status is level-based: rebuilt from the balancer's
snapshot (a pure function, `status.build_status`) and written when it differs from what the
sink last took. A failed write, whatever its cause (an API server that is down raises
urllib3 errors, not ApiException), is retried with backoff until it succeeds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.balancer.status import build_status
from i2p_multihome.clock import SYSTEM_CLOCK, Clock, wait_event
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import Condition, MultihomedDestinationStatus

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 2.0  # a busy destination's status is written at most this often ...
REFRESH_S = 10.0  # ... and looked at at least this often: lease liveness changes with time
RETRY_INITIAL_S = 1.0  # a failed write is retried after this, doubling ...
RETRY_MAX_S = 8.0  # ... up to this, so a returning API server is written to within seconds


class StatusSink(Protocol):
    async def write(self, status: MultihomedDestinationStatus) -> None:
        """Store `status`; raise anything on failure (the reporter retries)."""
        ...


class StatusReporter:
    def __init__(
        self,
        snapshot: Callable[[], BalancerSnapshot],
        sink: StatusSink,
        *,
        conditions: Sequence[Condition] = (),
        generation: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_snapshot: Callable[[BalancerSnapshot, float], None] = lambda snapshot, now: None,
        log_fields: Mapping[str, object] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._sink = sink
        # The conditions last written: their lastTransitionTime carries over while unchanged.
        self._conditions = list(conditions)
        self.generation = generation
        self._clock = clock
        self._on_snapshot = on_snapshot
        self._log_fields = dict(log_fields or {})
        self._changed = asyncio.Event()
        self._written: dict[str, Any] | None = None
        self.failures = 0  # consecutive failed writes

    def changed(self) -> None:
        """The balancer's state changed: report soon (at most every MIN_INTERVAL_S)."""
        self._changed.set()

    async def run(self) -> None:
        """Report until cancelled; never ends on its own."""
        while True:
            await wait_event(self._changed, self._clock, REFRESH_S)
            self._changed.clear()
            if await self.report():
                await self._clock.sleep(MIN_INTERVAL_S)
            else:
                self._changed.set()  # not written: try again after the backoff
                await self._clock.sleep(retry_delay_s(self.failures))

    async def report(self) -> bool:
        """Build the status now and write it if it changed; False if the write failed."""
        now = self._clock.wall()
        snapshot = self._snapshot()
        self._on_snapshot(snapshot, now)
        status = build_status(snapshot, now, self._conditions, self.generation)
        document = status.to_json_dict()
        if document == self._written:
            return True
        try:
            await self._sink.write(status)
        except Exception as exc:  # whatever the sink's failure, the reporter must go on
            self.failures += 1
            log.warning(
                "status not written; will retry",
                extra=fields(
                    **self._log_fields,
                    error=f"{type(exc).__name__}: {exc}",
                    attempt=self.failures,
                    retry_in_s=retry_delay_s(self.failures),
                ),
            )
            return False
        if self.failures:
            log.info(
                "status written again",
                extra=fields(**self._log_fields, failed_attempts=self.failures),
            )
        self.failures = 0
        self._written, self._conditions = document, status.conditions
        return True


def retry_delay_s(failures: int) -> float:
    """The wait after `failures` consecutive failed writes."""
    doubling: float = 2.0 ** min(max(failures - 1, 0), 16)
    return min(RETRY_MAX_S, RETRY_INITIAL_S * doubling)
