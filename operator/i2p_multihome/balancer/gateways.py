"""The gateway policy `shared`: the published leases' inbound gateways come from one reduced
set, as a single router's would.

A single Java router draws its inbound gateways from a slice of its fast tier (all of it
for 1-hop tunnels, half for 2 hops, a quarter for 3 or more; no slicing below 6 and 12 fast
peers), so over hours its LeaseSet shows a few dozen gateways at most; N routers publishing
a merged LeaseSet would show N times as many (Proposal 140's own analysis). Under `shared`
the balancer keeps one set of gateways, big enough for the leases the spec asks for and
at least a slice of the fast tier, and publishes leases through its members first. Members
stay while they carry a lease or had one within a lease's lifetime and are not failing
(hysteresis: the set changes as tunnel lineages end, not with every rotation); places free
up for gateways that carry leases now, best tier first. When too few leases run through
members, the best remaining leases fill the LeaseSet: reliability beats invisibility.
Pure functions of (profiles, tiers, leases, spec, clock)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from i2p_multihome.balancer.profiles import (
    PeerProfiles,
    Tiers,
    compute_tiers,
    gateways_of,
    tiers_due,
)
from i2p_multihome.wire.structures import Lease

# A member that carries no lease keeps its place this long after its last one: i2pd
# rebuilds a tunnel through the same peers, so a lineage shows its gateway again within a
# lease's lifetime (600 s) unless it ended.
MEMBER_GRACE_S = 600.0
# Routers build this many times the spec's inbound tunnels, at most 16, so that enough of
# their leases run through members.
EXTRA_INBOUND_FACTOR = 2
MAX_INBOUND_QUANTITY = 16


def slice_size(fast_tier: int, inbound_length: int) -> int:
    """How many of its fast tier a single Java router draws inbound gateways from."""
    if inbound_length >= 3 and fast_tier >= 12:
        return (fast_tier + 3) // 4
    if inbound_length >= 2 and fast_tier >= 6:
        return (fast_tier + 1) // 2
    return fast_tier


def shared_set_size(lease_target: int, fast_tier: int, inbound_length: int) -> int:
    """Enough members for every lease asked for (two routers rarely build through one
    gateway, so each lease needs its own), and at least a single router's slice."""
    return max(lease_target, slice_size(fast_tier, inbound_length))


def choose_shared_gateways(
    previous: frozenset[bytes],
    profiles: PeerProfiles,
    tiers: Tiers,
    available: Iterable[bytes],
    size: int,
    now_s: float,
    grace_s: float = MEMBER_GRACE_S,
) -> frozenset[bytes]:
    """The shared set from `previous`: members that are not failing and carry a lease now
    (`available`) or did within `grace_s` stay (the best ones when the set shrank); free
    places go to available gateways by tier (fast, then high capacity, then the rest) and
    capacity, ties by hash."""
    now_available = frozenset(available)

    def recently_used(peer: bytes) -> bool:
        profile = profiles.get(peer)
        return profile is not None and now_s - profile.last_seen_s <= grace_s

    def best_first(peer: bytes) -> tuple[int, float, bytes]:
        profile = profiles.get(peer)
        capacity = profile.capacity(now_s) if profile is not None else 0.0
        return (tiers.rank(peer), -capacity, peer)

    staying = sorted(
        (
            peer
            for peer in previous
            if peer not in tiers.failing and (peer in now_available or recently_used(peer))
        ),
        key=best_first,
    )[: max(size, 0)]
    joining = sorted(
        (peer for peer in now_available - frozenset(staying) if peer not in tiers.failing),
        key=best_first,
    )[: max(size - len(staying), 0)]
    return frozenset(staying) | frozenset(joining)


# How big the shared set is: from the leases the spec asks for, the tiers, the profiles,
# the inbound tunnel length and the clock.
SetSizeRule = Callable[[int, Tiers, PeerProfiles, int, float], int]


def set_size_for_leases(
    lease_target: int, tiers: Tiers, profiles: PeerProfiles, inbound_length: int, now_s: float
) -> int:
    """`shared_set_size` of the leases asked for and the fast tier as a `SetSizeRule`."""
    return shared_set_size(lease_target, len(tiers.fast), inbound_length)


def shared_gateways_at(
    previous: frozenset[bytes],
    tiers: Tiers,
    profiles: PeerProfiles,
    reports: Sequence[Sequence[Lease]],
    lease_target: int,
    inbound_length: int,
    now_s: float,
    size_rule: SetSizeRule = set_size_for_leases,
) -> tuple[Tiers, frozenset[bytes]]:
    """The tiers and the shared set at `now_s`: as they were until the tiers are due again
    (every 45 s), or at once while the set is empty; `reports` are the connected routers'
    leases."""
    if previous and not tiers_due(tiers, now_s):
        return tiers, previous
    tiers = compute_tiers(profiles, now_s)
    size = size_rule(lease_target, tiers, profiles, inbound_length, now_s)
    chosen = choose_shared_gateways(previous, profiles, tiers, gateways_of(reports), size, now_s)
    return tiers, chosen


def inbound_quantity(quantity: int) -> int:
    """The inbound tunnels a router builds under `shared`: the spec's and as many again
    to choose from, at most 16."""
    return min(MAX_INBOUND_QUANTITY, quantity * EXTRA_INBOUND_FACTOR)
