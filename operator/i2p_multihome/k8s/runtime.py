"""One MultihomedDestination hosted by this operator process: its balancer, and the status,
events and metrics that report it. Status is level-based: always rebuilt from the balancer's
actual state, written at most every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from i2p_multihome.balancer.engine import Balancer, BalancerEvent, EndpointResolver, Timing
from i2p_multihome.balancer.status import build_status
from i2p_multihome.k8s import metrics
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import (
    GROUP,
    PLURAL,
    VERSION,
    Condition,
    MultihomedDestinationSpec,
)
from i2p_multihome.wire.keys import DestinationKeys

log = logging.getLogger(__name__)

STATUS_MIN_INTERVAL_S = 2.0  # a busy destination writes status at most this often
STATUS_REFRESH_S = 30.0  # and at least this often (lease liveness changes with time)

EventPoster = Callable[[str, str, str], None]  # (type, reason, message)

_EVENT_TYPES = {
    "RouterLost": "Warning",
    "RouterRefused": "Warning",
    "RouterRecovered": "Normal",
    "SessionEstablished": "Normal",
    "Published": "Normal",
}


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
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.generation = generation
        self._conditions = conditions
        self._custom = custom
        self._post_event = post_event
        self._changed = asyncio.Event()
        self._routers_seen = [r.name for r in spec.routers]
        self.balancer = Balancer(
            f"{namespace}-{name}",
            spec,
            keys,
            on_change=self._changed.set,
            on_event=self._on_event,
            resolve_endpoint=resolve_endpoint,
            timing=timing,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._fields = {"namespace": namespace, "name": name, "destination": keys.destination.b32}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.balancer.run(), name=f"balancer-{self.namespace}/{self.name}"),
            asyncio.create_task(self._status_loop(), name=f"status-{self.namespace}/{self.name}"),
        ]

    async def update(self, spec: MultihomedDestinationSpec, generation: int | None) -> None:
        self.generation = generation
        self._routers_seen = sorted({*self._routers_seen, *(r.name for r in spec.routers)})
        await self.balancer.apply_spec(spec)
        self._changed.set()

    async def stop(self, destroy_sessions: bool) -> None:
        await self.balancer.stop(destroy_sessions=destroy_sessions)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if destroy_sessions:
            metrics.forget(self.namespace, self.name, self._routers_seen)

    def _on_event(self, event: BalancerEvent) -> None:
        metrics.observe_event(self.namespace, self.name, event)
        # Routine publishes are metrics only; a publish that removed a lost router is news.
        if event.kind == "Published" and event.seconds is None:
            return
        message = event.message
        if event.kind == "Published" and event.seconds is not None:
            message += f"; {event.seconds:.1f}s after the router was lost"
        self._post_event(_EVENT_TYPES.get(event.kind, "Normal"), event.kind, message)

    async def _status_loop(self) -> None:
        written: dict[str, Any] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), STATUS_REFRESH_S)
            self._changed.clear()
            now = time.time()
            snapshot = self.balancer.snapshot()
            metrics.observe_snapshot(self.namespace, self.name, snapshot, now)
            status = build_status(snapshot, now, self._conditions, self.generation)
            document = status.to_json_dict()
            if document != written:
                try:
                    await asyncio.to_thread(self._patch_status, document)
                    written, self._conditions = document, status.conditions
                except ApiException as exc:
                    log.warning(
                        "status update failed; will retry",
                        extra=fields(**self._fields, error=f"{exc.status} {exc.reason}"),
                    )
                    self._changed.set()
            await asyncio.sleep(STATUS_MIN_INTERVAL_S)

    def _patch_status(self, document: dict[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": document}
        )


def write_failure_status(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    generation: int | None,
    reason: str,
    message: str,
) -> None:
    """Ready=False with the reason, when no balancer can run (keys unusable, bad spec)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": generation,
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name,
        {"status": {"observedGeneration": generation, "conditions": [condition]}},
    )  # fmt: skip
