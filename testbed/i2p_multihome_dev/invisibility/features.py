"""Features of one destination as an observer of the floodfills sees it, per hour.

An observation is one look at a floodfill's copy of the destination's LeaseSet: the leases
in their stored order (gateway, tunnel id, end) and, when read from the stored bytes, its
`published` time. Gateway features count what gateways the leases show; timing features
look at when leases end, in what order they are listed, and how often versions come."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HOUR_S = 3600.0
WINDOW_S = 600.0
# Lease ends further apart than this belong to different clusters (a router builds its
# tunnels within seconds of each other).
CLUSTER_GAP_S = 30

GATEWAY_FEATURES = (
    "lease_count",
    "distinct_gateways_10min",
    "distinct_gateways_hour",
    "new_gateways_hour",
    "gateway_entropy",
)
TIMING_FEATURES = (
    "end_clusters",
    "order_violations",
    "versions_10min",
    "published_interval_median",
    "published_interval_cv",
)
FEATURE_GROUPS = {"gateway": GATEWAY_FEATURES, "timing": TIMING_FEATURES}


@dataclass(frozen=True)
class ObservedLease:
    gateway: bytes
    tunnel_id: int
    end_s: int


@dataclass(frozen=True)
class Observation:
    at_s: float
    leases: tuple[ObservedLease, ...]  # in the order the LeaseSet lists them
    published_s: int | None = None


@dataclass(frozen=True)
class Sample:
    """One destination-hour."""

    destination: str
    population: str
    hour: int
    features: dict[str, float]


def end_clusters(leases: Sequence[ObservedLease], gap_s: int = CLUSTER_GAP_S) -> int:
    """How many groups the lease ends fall into, ends more than `gap_s` apart splitting."""
    ends = sorted(x.end_s for x in leases)
    if not ends:
        return 0
    return 1 + sum(1 for a, b in itertools.pairwise(ends) if b - a > gap_s)


def order_violations(leases: Sequence[ObservedLease]) -> float:
    """The share of neighbouring leases not listed latest end first (routers' own order)."""
    pairs = list(itertools.pairwise(leases))
    if not pairs:
        return 0.0
    return sum(1 for a, b in pairs if a.end_s < b.end_s) / len(pairs)


def entropy(counts: Iterable[int]) -> float:
    values = [c for c in counts if c > 0]
    total = sum(values)
    if total == 0:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in values)


def hourly_samples(
    destination: str,
    population: str,
    observations: Sequence[Observation],
    start_s: float,
    hours: int,
    warm_up_hours: int = 1,
) -> list[Sample]:
    """The features of each full hour after `warm_up_hours` (whose gateways only seed the
    "new gateway" count), from `observations` sorted by time."""
    seen: set[bytes] = set()
    samples = []
    for hour in range(hours):
        begin = start_s + hour * HOUR_S
        inside = [o for o in observations if begin <= o.at_s < begin + HOUR_S]
        gateways = {x.gateway for o in inside for x in o.leases}
        if hour >= warm_up_hours and inside:
            features = _features(inside, begin, seen)
            samples.append(Sample(destination, population, hour, features))
        seen |= gateways
    return samples


def _features(inside: Sequence[Observation], begin: float, seen: set[bytes]) -> dict[str, float]:
    windows = [
        [o for o in inside if begin + k * WINDOW_S <= o.at_s < begin + (k + 1) * WINDOW_S]
        for k in range(int(HOUR_S // WINDOW_S))
    ]
    distinct_10 = [len({x.gateway for o in w for x in o.leases}) for w in windows if w]
    tunnels = {(x.gateway, x.tunnel_id) for o in inside for x in o.leases}
    gateways = {gateway for gateway, _ in tunnels}
    versions: list[tuple[object, ...]] = []
    for o in inside:
        key = (o.published_s, o.leases)
        if not versions or versions[-1] != key:
            versions.append(key)
    published = sorted({o.published_s for o in inside if o.published_s is not None})
    intervals = [b - a for a, b in itertools.pairwise(published)]
    median = statistics.median(intervals) if intervals else HOUR_S
    spread = 0.0
    if len(intervals) > 1:
        spread = statistics.pstdev(intervals) / statistics.mean(intervals)
    return {
        "lease_count": statistics.mean(len(o.leases) for o in inside),
        "distinct_gateways_10min": statistics.mean(distinct_10),
        "distinct_gateways_hour": float(len(gateways)),
        "new_gateways_hour": float(len(gateways - seen)),
        "gateway_entropy": entropy(Counter(g for g, _ in tunnels).values()),
        "end_clusters": statistics.mean(end_clusters(o.leases) for o in inside),
        "order_violations": statistics.mean(order_violations(o.leases) for o in inside),
        "versions_10min": len(versions) * WINDOW_S / HOUR_S,
        "published_interval_median": float(median),
        "published_interval_cv": float(spread),
    }
