"""Prometheus metrics: stable names, labelled by namespace, destination and router."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from i2p_multihome.balancer.events import (
    BalancerEvent,
    FailoverPublished,
    LeaseSetPublished,
    RouterLost,
)
from i2p_multihome.balancer.snapshot import BalancerSnapshot
from i2p_multihome.dataplane.stats import DataPlaneStats
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
PUBLISHER = Gauge(
    "i2p_multihome_publisher", "1 for the router that stores the LeaseSet at the floodfills",
    [*_DEST, "router"], registry=REGISTRY,
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


STREAM_BYTES = Counter(
    "i2p_multihome_bytes", "Payload bytes the data plane moved, by router, port and direction "
    "(in: from clients to the backend)", [*_DEST, "router", "port", "direction"],
    registry=REGISTRY,
)  # fmt: skip
STREAMS_ACCEPTED = Counter(
    "i2p_multihome_streams_accepted", "Streams clients opened, by port",
    [*_DEST, "port"], registry=REGISTRY,
)  # fmt: skip
ACTIVE_STREAMS = Gauge(
    "i2p_multihome_active_streams", "Streams open now, by the router their packets come through",
    [*_DEST, "router"], registry=REGISTRY,
)  # fmt: skip
STREAM_RESETS = Counter(
    "i2p_multihome_stream_resets", "Streams the data plane reset, by reason",
    [*_DEST, "reason"], registry=REGISTRY,
)  # fmt: skip
DROPS = Counter(
    "i2p_multihome_dropped_packets", "Packets and datagrams from clients dropped, by reason",
    [*_DEST, "reason"], registry=REGISTRY,
)  # fmt: skip
DATAGRAMS = Counter(
    "i2p_multihome_datagrams", "Datagrams the data plane moved, by port and direction",
    [*_DEST, "port", "direction"], registry=REGISTRY,
)  # fmt: skip
NUDGES = Counter(
    "i2p_multihome_client_nudges", "Pings sent to clients moved off a lost router, so that "
    "the survivor's session reaches them (result: sent, answered)",
    [*_DEST, "result"], registry=REGISTRY,
)  # fmt: skip

# What each destination's cumulative data-plane counts were at the last observation: the
# Prometheus counters grow by the difference.
_last_seen: dict[tuple[str, str], dict[tuple[str, ...], int]] = {}


def observe_dataplane(
    namespace: str,
    name: str,
    stats: DataPlaneStats,
    drops: Mapping[str, int],
    nudges: Mapping[str, int] | None = None,
) -> None:
    current: dict[tuple[str, ...], int] = {}
    for (router, port), count in stats.bytes_in.items():
        current[("bytes", router, port, "in")] = count
    for (router, port), count in stats.bytes_out.items():
        current[("bytes", router, port, "out")] = count
    for port, count in stats.streams_accepted.items():
        current[("accepted", port)] = count
    for reason, count in stats.resets.items():
        current[("reset", reason)] = count
    for reason, count in drops.items():
        current[("drop", reason)] = count
    for port, count in stats.datagrams_in.items():
        current[("datagrams", port, "in")] = count
    for port, count in stats.datagrams_out.items():
        current[("datagrams", port, "out")] = count
    for result, count in (nudges or {}).items():
        current[("nudge", result)] = count
    seen = _last_seen.setdefault((namespace, name), {})
    for key, count in current.items():
        grown = count - seen.get(key, 0)
        if grown <= 0:
            continue
        kind, *labels = key
        metric = {
            "bytes": STREAM_BYTES, "accepted": STREAMS_ACCEPTED, "reset": STREAM_RESETS,
            "drop": DROPS, "datagrams": DATAGRAMS, "nudge": NUDGES,
        }[kind]  # fmt: skip
        metric.labels(namespace, name, *labels).inc(grown)
        seen[key] = count


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
    for router in snapshot.routers:
        PUBLISHER.labels(namespace, name, router.name).set(
            1 if router.name == snapshot.publisher else 0
        )
    for router in snapshot.routers:
        ACTIVE_STREAMS.labels(namespace, name, router.name).set(
            snapshot.streams.get(router.name, 0)
        )
    if snapshot.published_s is not None:
        LEASESET_PUBLISHED.labels(namespace, name).set(snapshot.published_s)


def forget(namespace: str, name: str, routers: list[str]) -> None:
    """Drop a deleted destination's series so dashboards don't show ghosts."""
    _last_seen.pop((namespace, name), None)
    for counter in (STREAM_BYTES, STREAMS_ACCEPTED, STREAM_RESETS, DROPS, DATAGRAMS, NUDGES):
        for labels in _series_of(counter, namespace, name):
            _remove(counter, *labels)
    for metric in (PUBLISHED_LEASES, PUBLISHES, FAILOVER_SECONDS, LEASESET_PUBLISHED):
        _remove(metric, namespace, name)
    forget_routers(namespace, name, routers)
    for router in routers:
        _remove(FAILOVERS, namespace, name, router)


def forget_routers(namespace: str, name: str, routers: list[str]) -> None:
    """Drop the gauges of routers that no longer host the destination (a spec edit, or an
    endpoint gone from spec.routersFrom's Service), so they do not show their last state."""
    for router in routers:
        _remove(ACTIVE_STREAMS, namespace, name, router)
        _remove(LIVE_LEASES, namespace, name, router)
        _remove(PUBLISHER, namespace, name, router)
        for state in RouterState:
            _remove(SESSIONS, namespace, name, router, state.value)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def _series_of(
    metric: Gauge | Counter | Histogram, namespace: str, name: str
) -> list[tuple[str, ...]]:
    """The label values of `metric`'s series for one destination."""
    found = set()
    for family in metric.collect():
        for sample in family.samples:
            if (sample.labels.get("namespace"), sample.labels.get("destination")) == (
                namespace, name,
            ):  # fmt: skip
                found.add(tuple(sample.labels.values()))
    return sorted(found)
