"""One MultihomedDestination hosted by this operator process: its balancer, and the status,
events and metrics that report it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubernetes import client

from i2p_multihome.balancer.engine import EndpointResolver, Timing
from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    PublisherChanged,
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.balancer.profiles import PeerProfiles
from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.balancer.status import timestamp
from i2p_multihome.clock import SYSTEM_CLOCK, Clock
from i2p_multihome.hosting import HostedDestination, ProfileSaver
from i2p_multihome.k8s import metrics
from i2p_multihome.model.v1alpha1 import (
    GROUP,
    PLURAL,
    VERSION,
    Condition,
    ConditionStatus,
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
)
from i2p_multihome.wire.keys import DestinationKeys

log = logging.getLogger(__name__)

# An API server that accepts the connection but never answers must not hold the status
# writer forever; the reporter retries after this.
STATUS_WRITE_TIMEOUT_S = 10.0

EventPoster = Callable[[str, str, str], None]  # (type, reason, message)


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
            return None  # routine: a few versions per 10 minutes are not news
        case PublisherChanged(publisher=None):
            return "Warning", "NoPublisher"
        case PublisherChanged():
            return "Normal", "PublisherChanged"


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


class DestinationRuntime(HostedDestination):
    """A hosted destination that reports to the API server: its status subresource, Events
    and Prometheus metrics."""

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
        peer_profiles: PeerProfiles | None = None,
        save_profiles: ProfileSaver | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._post_event = post_event
        self._routers_seen = [r.name for r in spec.routers]
        super().__init__(
            f"{namespace}-{name}",
            spec,
            keys,
            ApiServerStatusSink(custom, namespace, name),
            namespace=namespace,
            conditions=conditions,
            generation=generation,
            on_event=self._on_event,
            on_snapshot=self._observe,
            resolve_endpoint=resolve_endpoint,
            timing=timing,
            clock=clock,
            log_fields={"namespace": namespace, "name": name, "destination": keys.destination.b32},
            peer_profiles=peer_profiles,
            save_profiles=save_profiles,
        )

    async def update(self, spec: MultihomedDestinationSpec, generation: int | None) -> None:
        self._routers_seen = sorted({*self._routers_seen, *(r.name for r in spec.routers)})
        await super().update(spec, generation)

    async def stop(self, destroy_sessions: bool, keep_profiles: bool = True) -> None:
        # The operator destroys the sessions only when the object is deleted, and its
        # profile ConfigMap goes with it.
        await super().stop(destroy_sessions, keep_profiles=keep_profiles and not destroy_sessions)
        if destroy_sessions:
            metrics.forget(self.namespace, self.name, self._routers_seen)

    def _observe(self, snapshot: BalancerSnapshot, now: float) -> None:
        metrics.observe_snapshot(self.namespace, self.name, snapshot, now)
        metrics.observe_dataplane(
            self.namespace, self.name, self.dataplane.stats, self.dataplane.drops(),
            self.dataplane.nudges(),
        )  # fmt: skip

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
