"""The gateway policy `shared`: the published leases' inbound gateways come from one reduced
set, as a single router's would.

A single Java router draws its inbound gateways from a slice of its fast tier (all of it
for 1-hop tunnels, half for 2 hops, a quarter for 3 or more; no slicing below 6 and 12 fast
peers), so over hours its LeaseSet shows a few dozen gateways at most; N routers publishing
a merged LeaseSet would show N times as many (Proposal 140's own analysis). Under `shared`
the balancer keeps one set of gateways, as many as the median router built through in the
last hour (a router's slice as the routers show it), and publishes leases through its
members first. Members stay while they carry a lease or had one within the hour, even after
a tunnel through them ended early (hysteresis: the set changes as lineages end, not with
every rotation or failed tunnel); free places go to the gateways in use now that carry the
most tunnels, best tier first, never to a failing one. Leases
through other gateways fill the LeaseSet only part of the way (`policy.SHARED_FILL_SHARE`):
reliability beats invisibility, but each shows a gateway a single router would not.
Pure functions of (profiles, tiers, leases, spec, clock)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from i2p_multihome.balancer.profiles import (
    PeerProfiles,
    Tiers,
    compute_tiers,
    tiers_due,
)
from i2p_multihome.wire.structures import Lease

# A member that carries no lease keeps its place this long after its last one: a Java
# router reuses a path for half its builds and draws the rest from the same slice, so a
# slice peer comes back within the hour (the simulator: 12.5 distinct gateways an hour at a
# 40-peer tier against 13.6 with 10 minutes; a single router shows 8.8).
MEMBER_GRACE_S = 3600.0
# The window in which a router's builds size the set.
ROUTER_WINDOW_S = 3600.0
# Routers build this many times the spec's inbound tunnels, at most 16, so that enough of
# their leases run through members.
EXTRA_INBOUND_FACTOR = 2
MAX_INBOUND_QUANTITY = 16


def choose_shared_gateways(
    previous: frozenset[bytes],
    profiles: PeerProfiles,
    tiers: Tiers,
    available: Mapping[bytes, int],
    size: int,
    now_s: float,
    grace_s: float = MEMBER_GRACE_S,
) -> frozenset[bytes]:
    """The shared set from `previous`: members that carry a lease now (`available`:
    gateway -> tunnels through it now) or did within `grace_s` stay (the best ones when the
    set shrank); free places go to available gateways that are not failing, carrying the
    most tunnels first (so that few leases must come from outside the set), then by tier
    (fast, high capacity, the rest) and capacity, ties by hash.

    A failing member stays: a router does not drop a peer from its slice for one failed
    tunnel (a Java slice is a hash partition of the fast tier, which ranks peers by speed
    and capacity over hours), and the routers drop the failed tunnel themselves, so its
    lease leaves the LeaseSet at once whatever the set holds. Dropping such members made
    the set turn over with every early end (5 % of tunnels in the simulator), far faster
    than a single router's slice: at 40-peer tiers 14.4 gateways an hour against a single
    router's 10.8, and 12.0 once they stay (`docs/design-notes.md`)."""

    def recently_used(peer: bytes) -> bool:
        profile = profiles.get(peer)
        return profile is not None and now_s - profile.last_seen_s <= grace_s

    def best_first(peer: bytes) -> tuple[int, int, float, bytes]:
        profile = profiles.get(peer)
        capacity = profile.capacity(now_s) if profile is not None else 0.0
        return (-available.get(peer, 0), tiers.rank(peer), -capacity, peer)

    staying = sorted(
        (peer for peer in previous if peer in available or recently_used(peer)),
        key=best_first,
    )[: max(size, 0)]
    joining = sorted(
        (peer for peer in available.keys() - frozenset(staying) if peer not in tiers.failing),
        key=best_first,
    )[: max(size - len(staying), 0)]
    return frozenset(staying) | frozenset(joining)


# How big the shared set is: from the leases the spec asks for, the tiers, the profiles,
# the inbound tunnel length and the clock.
SetSizeRule = Callable[[int, Tiers, PeerProfiles, int, float], int]


def set_size_per_router(
    lease_target: int,
    tiers: Tiers,
    profiles: PeerProfiles,
    inbound_length: int,
    now_s: float,
    window_s: float = ROUTER_WINDOW_S,
) -> int:
    """As many gateways as the median router built through in the last hour: a single
    router's slice as the routers themselves show it (Java routers given one randomKey
    draw from the same quarter of their fast tiers), and at least a quarter of the leases
    asked for; the leases asked for while no router has built yet."""
    counts: Counter[str] = Counter()
    for profile in profiles.peers.values():
        for router, at in profile.builders.items():
            if now_s - at <= window_s:
                counts[router] += 1
    if not counts:
        return lease_target
    ordered = sorted(counts.values())
    return max((lease_target + 3) // 4, ordered[len(ordered) // 2])


def shared_gateways_at(
    previous: frozenset[bytes],
    tiers: Tiers,
    profiles: PeerProfiles,
    reports: Sequence[Sequence[Lease]],
    lease_target: int,
    inbound_length: int,
    now_s: float,
    size_rule: SetSizeRule = set_size_per_router,
) -> tuple[Tiers, frozenset[bytes]]:
    """The tiers and the shared set at `now_s`: as they were until the tiers are due again
    (every 45 s), or at once while the set is empty; `reports` are the connected routers'
    leases."""
    if previous and not tiers_due(tiers, now_s):
        return tiers, previous
    tiers = compute_tiers(profiles, now_s)
    size = size_rule(lease_target, tiers, profiles, inbound_length, now_s)
    chosen = choose_shared_gateways(previous, profiles, tiers, tunnels_by_gateway(reports), size,
                                    now_s)  # fmt: skip
    return tiers, chosen


def tunnels_by_gateway(reports: Iterable[Sequence[Lease]]) -> Counter[bytes]:
    return Counter(x.gateway for leases in reports for x in leases)


def inbound_quantity(quantity: int) -> int:
    """The inbound tunnels a router builds under `shared`: the spec's and as many again
    to choose from, at most 16."""
    return min(MAX_INBOUND_QUANTITY, quantity * EXTRA_INBOUND_FACTOR)
