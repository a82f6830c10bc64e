"""One MultihomedDestination hosted by this operator process: its balancer, and the status,
events and metrics that report it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

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
from i2p_multihome.hosting import ClientSaver, HostedDestination, ProfileSaver
from i2p_multihome.k8s import metrics
from i2p_multihome.k8s.endpoints import SliceView, changes, hosted_spec
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
from i2p_multihome.streaming.routes import RememberedClient
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
    and Prometheus metrics. `spec` is the object's spec as declared; with spec.routersFrom
    the balancer runs it on the routers found in `slices`, and again whenever they change."""

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
        slices: Iterable[SliceView] = (),
        recent_clients: Sequence[RememberedClient] = (),
        save_clients: ClientSaver | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.declared = spec
        self._generation = generation
        self._updating = asyncio.Lock()
        self._post_event = post_event
        hosted = hosted_spec(spec, slices)
        self._routers_seen = [r.name for r in hosted.routers]
        super().__init__(
            f"{namespace}-{name}",
            hosted,
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
            recent_clients=recent_clients,
            save_clients=save_clients,
        )

    def follows(self, service: str) -> bool:
        """Whether the routers are the endpoints of `service` (in this namespace)."""
        source = self.declared.routers_from
        return source is not None and source.service.name == service

    async def redeclare(
        self, spec: MultihomedDestinationSpec, generation: int | None, slices: Iterable[SliceView]
    ) -> None:
        """The object's spec changed: run the new one (on the routers `slices` name, with
        spec.routersFrom)."""
        async with self._updating:
            self.declared = spec
            self._generation = generation
            await self._host(hosted_spec(spec, slices))

    async def endpoints_changed(self, slices: Iterable[SliceView]) -> None:
        """The Service's EndpointSlices changed: follow its ready endpoints."""
        async with self._updating:
            hosted = hosted_spec(self.declared, slices)
            if hosted.routers != self.balancer.spec.routers:
                await self._host(hosted)

    async def _host(self, spec: MultihomedDestinationSpec) -> None:
        joined, left = changes(self.balancer.spec.routers, spec.routers)
        self._routers_seen = sorted({*self._routers_seen, *(r.name for r in spec.routers)})
        await super().update(spec, self._generation)
        metrics.forget_routers(self.namespace, self.name, left)
        if self.declared.routers_from is not None and (joined or left):
            count = len(spec.routers)
            message = (
                f"{count} ready endpoint{'' if count == 1 else 's'} of Service "
                f"{self.declared.routers_from.service.name}"
                + (f"; joined: {', '.join(joined)}" if joined else "")
                + (f"; left: {', '.join(left)}" if left else "")
            )
            log.info(
                "routers found changed",
                extra=fields(
                    namespace=self.namespace, name=self.name, routers=len(spec.routers),
                    joined=",".join(joined), left=",".join(left),
                ),
            )  # fmt: skip
            self._post_event("Normal", "RoutersChanged", message)

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
