"""Prometheus metrics: stable names, labelled by namespace, destination and router."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    RouterLost,
)
from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.model.v1alpha1 import RouterState

REGISTRY = CollectorRegistry()
_DEST = ["namespace", "destination"]

SESSIONS = Gauge(
    "i2p_multihome_sessions", "I2CP sessions by state (1 = the router is in this state)",
    [*_DEST, "router", "state"], registry=REGISTRY,
)  # fmt: skip
LIVE_LEASES = Gauge(
    "i2p_multihome_live_leases", "Unexpired leases a router reported for the destination",
    [*_DEST, "router"], registry=REGISTRY,
)  # fmt: skip
PUBLISHED_LEASES = Gauge(
    "i2p_multihome_published_leases", "Leases in the current merged LeaseSet",
    _DEST, registry=REGISTRY,
)  # fmt: skip
PUBLISHES = Counter(
    "i2p_multihome_publishes", "Merged LeaseSets handed to the routers",
    _DEST, registry=REGISTRY,
)  # fmt: skip
FAILOVERS = Counter(
    "i2p_multihome_router_failovers", "Established router sessions that were lost",
    [*_DEST, "router"], registry=REGISTRY,
)  # fmt: skip
FAILOVER_SECONDS = Histogram(
    "i2p_multihome_failover_seconds",
    "Time from losing a router whose leases were published to the LeaseSet without them",
    _DEST, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60), registry=REGISTRY,
)  # fmt: skip
LEASESET_PUBLISHED = Gauge(
    "i2p_multihome_leaseset_published_timestamp_seconds",
    "`published` of the current LeaseSet (LeaseSet age = time() - this)",
    _DEST, registry=REGISTRY,
)  # fmt: skip


def observe_event(namespace: str, name: str, event: BalancerEvent) -> None:
    match event:
        case LeaseSetPublished():
            PUBLISHES.labels(namespace, name).inc()
        case FailoverPublished(failover_s=seconds):
            PUBLISHES.labels(namespace, name).inc()
            FAILOVER_SECONDS.labels(namespace, name).observe(seconds)
        case RouterLost(router=router):
            FAILOVERS.labels(namespace, name, router).inc()


def observe_snapshot(namespace: str, name: str, snapshot: BalancerSnapshot, now_s: float) -> None:
    for router in snapshot.routers:
        for state in RouterState:
            SESSIONS.labels(namespace, name, router.name, state.value).set(
                1 if router.state is state else 0
            )
        LIVE_LEASES.labels(namespace, name, router.name).set(
            sum(1 for lease in router.leases if lease.end_ms > now_s * 1000)
        )
    PUBLISHED_LEASES.labels(namespace, name).set(len(snapshot.published))
    if snapshot.published_s is not None:
        LEASESET_PUBLISHED.labels(namespace, name).set(snapshot.published_s)


def forget(namespace: str, name: str, routers: list[str]) -> None:
    """Drop a deleted destination's series so dashboards don't show ghosts."""
    for metric in (PUBLISHED_LEASES, PUBLISHES, FAILOVER_SECONDS, LEASESET_PUBLISHED):
        _remove(metric, namespace, name)
    for router in routers:
        _remove(LIVE_LEASES, namespace, name, router)
        _remove(FAILOVERS, namespace, name, router)
        for state in RouterState:
            _remove(SESSIONS, namespace, name, router, state.value)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
