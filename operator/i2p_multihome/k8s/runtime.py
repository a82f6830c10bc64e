"""One MultihomedDestination hosted by this operator process: its balancer, and the status,
events and metrics that report it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubernetes import client

from i2p_multihome.balancer.engine import Balancer, EndpointResolver, Timing
from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.balancer.reporter import StatusReporter
from i2p_multihome.balancer.status import timestamp
from i2p_multihome.clock import SYSTEM_CLOCK, Clock
from i2p_multihome.k8s import metrics
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import (
    GROUP,
    PLURAL,
    VERSION,
    Condition,
    ConditionStatus,
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
)
from i2p_multihome.supervision import first_to_end
from i2p_multihome.wire.keys import DestinationKeys

log = logging.getLogger(__name__)

# An API server that accepts the connection but never answers must not hold the status
# writer forever; the reporter retries after this.
STATUS_WRITE_TIMEOUT_S = 10.0

EventPoster = Callable[[str, str, str], None]  # (type, reason, message)


class TaskEnded(Exception):
    """A task of the runtime that must run until stopped ended on its own."""


def kubernetes_event(event: BalancerEvent) -> tuple[str, str] | None:
    """The (type, reason) a balancer event is posted with; None: metrics only."""
    match event:
        case SessionEstablished():
            return "Normal", "SessionEstablished"
        case RouterRecovered():
            return "Normal", "RouterRecovered"
        case RouterLost():
            return "Warning", "RouterLost"
        case RouterRefused():
            return "Warning", "RouterRefused"
        case FailoverPublished():
            return "Normal", "Published"
        case LeaseSetPublished():
            return None  # routine: a publish every 20-90 s is not news


class ApiServerStatusSink:
    """Writes status to the object's status subresource."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, name: str) -> None:
        self._custom = custom
        self._namespace = namespace
        self._name = name

    async def write(self, status: MultihomedDestinationStatus) -> None:
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, self._namespace, PLURAL, self._name,
            {"status": status.to_json_dict()},
            _request_timeout=STATUS_WRITE_TIMEOUT_S,
        )  # fmt: skip


class DestinationRuntime:
    def __init__(
        self,
        namespace: str,
        name: str,
        spec: MultihomedDestinationSpec,
        keys: DestinationKeys,
        generation: int | None,
        conditions: list[Condition],
        custom: client.CustomObjectsApi,
        post_event: EventPoster,
        resolve_endpoint: EndpointResolver,
        timing: Timing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._post_event = post_event
        self._routers_seen = [r.name for r in spec.routers]
        self._fields = {"namespace": namespace, "name": name, "destination": keys.destination.b32}
        self.balancer = Balancer(
            f"{namespace}-{name}",
            spec,
            keys,
            on_change=self._changed,
            on_event=self._on_event,
            resolve_endpoint=resolve_endpoint,
            timing=timing,
            clock=clock,
        )
        self.reporter = StatusReporter(
            self.balancer.snapshot,
            ApiServerStatusSink(custom, namespace, name),
            conditions=conditions,
            generation=generation,
            clock=clock,
            on_snapshot=lambda snapshot, now: metrics.observe_snapshot(
                namespace, name, snapshot, now
            ),
            log_fields=self._fields,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        where = f"{self.namespace}/{self.name}"
        self._tasks = {
            "balancer": asyncio.create_task(self.balancer.run(), name=f"balancer-{where}"),
            "status": asyncio.create_task(self.reporter.run(), name=f"status-{where}"),
        }

    async def failed(self) -> TaskEnded:
        """Wait until a task of this runtime ends on its own (a bug: each runs until
        stopped); what ended and why."""
        name, error = await first_to_end(self._tasks)
        reason = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        log.error(
            "destination task ended unexpectedly",
            exc_info=error,
            extra=fields(**self._fields, task=name, error=reason),
        )
        return TaskEnded(f"the {name} task ended unexpectedly ({reason})")

    async def update(self, spec: MultihomedDestinationSpec, generation: int | None) -> None:
        self.reporter.generation = generation
        self._routers_seen = sorted({*self._routers_seen, *(r.name for r in spec.routers)})
        await self.balancer.apply_spec(spec)
        self.reporter.changed()

    async def stop(self, destroy_sessions: bool) -> None:
        await self.balancer.stop(destroy_sessions=destroy_sessions)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if destroy_sessions:
            metrics.forget(self.namespace, self.name, self._routers_seen)

    def _changed(self) -> None:
        self.reporter.changed()

    def _on_event(self, event: BalancerEvent) -> None:
        metrics.observe_event(self.namespace, self.name, event)
        posted = kubernetes_event(event)
        if posted is not None:
            kind, reason = posted
            self._post_event(kind, reason, event.message)


def failure_status(
    generation: int | None, reason: str, message: str, now_s: float
) -> MultihomedDestinationStatus:
    """Ready=False with the reason, when no balancer can run (keys unusable)."""
    return MultihomedDestinationStatus(
        observed_generation=generation,
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.FALSE,
                reason=reason,
                message=message,
                last_transition_time=timestamp(now_s),
                observed_generation=generation,
            )
        ],
    )
