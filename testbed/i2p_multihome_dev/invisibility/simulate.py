"""Gateway choice at real-network scale, which a testnet of a dozen routers cannot show.

Routers are modelled from the sources (`../shared/notes/peer-selection-facts.md`): a tunnel's
lease ends 600 s after it is built and its successor is built 30 s before that; a Java
router draws each inbound gateway from a slice of its fast tier (all of it for 1 hop, half
for 2, the quarter where SHA-256(peer || randomKey)[0] & 3 == 1 for 3 or more; no slicing
below 6 and 12 peers) and reuses the expiring tunnel's path for half its builds; an i2pd
router picks from its whole pool and keeps a lineage's gateway unless the path is fresh. A
share of tunnels ends early (a failed test) and is rebuilt at once through a fresh pick.

The balancer is the product's own code: `profiles.observe_leases` on every report,
`gateways.shared_gateways_at` for the shared set, `policy.plan_publish` for every version.
An observer looks at the published LeaseSet every minute."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Literal

from i2p_multihome.balancer import gateways, policy, profiles
from i2p_multihome.balancer.link import LinkState
from i2p_multihome.model.v1alpha1 import (
    GatewayPolicy,
    I2CPEndpoint,
    MultihomedDestinationSpec,
    PeerPolicy,
    RouterSpec,
    RouterState,
    TunnelDirection,
    TunnelsSpec,
)
from i2p_multihome.wire.structures import Lease
from i2p_multihome_dev.invisibility.features import Observation, ObservedLease

LEASE_LIFETIME_S = 600
REBUILD_BEFORE_END_S = 30  # i2pd: 90 s before the tunnel's 660-s expiry
TICK_S = 10
OBSERVE_EVERY_S = 60
# The observer sees what a floodfill's console shows: leases more than 51 s from their end
# (i2pd's GetNonExpiredLeases; clients skip the others too).
OBSERVER_CUTOFF_S = 51
EPOCH_S = 1_700_000_000

Implementation = Literal["java", "i2pd"]
Population = Literal["single", "native", "shared"]


@dataclass(frozen=True)
class Scenario:
    implementation: Implementation
    fast_tier: int = 40  # Java: peers in each router's fast tier
    routers: int = 4
    quantity: int = 3  # inbound tunnels per router in the spec
    hops: int = 3
    pool: int = 3000  # peers a hop may be drawn from (i2pd), and the Java tiers' source
    # Java routers' fast tiers are drawn from this many times their size, so two routers'
    # tiers share about 1 / overlap_factor of their peers.
    overlap_factor: float = 2.0
    java_reuse_share: float = 0.5  # builds that reuse the expiring tunnel's path
    i2pd_fresh_share: float = 0.3  # rebuilds through a fresh path
    early_end_share: float = 0.05  # tunnels that end early
    tier_churn_per_hour: float = 0.1  # share of a fast tier replaced each hour

    @property
    def name(self) -> str:
        if self.implementation == "i2pd":
            return f"i2pd-pool-{self.pool}"
        return f"java-tier-{self.fast_tier}"


def peer(n: int) -> bytes:
    return hashlib.sha256(b"peer" + n.to_bytes(4, "big")).digest()


@dataclass
class Tunnel:
    gateway: bytes
    tunnel_id: int
    built_s: float
    ends_early_s: float | None  # when it fails, if it does

    @property
    def end_s(self) -> float:
        return self.built_s + LEASE_LIFETIME_S


@dataclass
class SimRouter:
    """One router's inbound pool for the destination."""

    scenario: Scenario
    quantity: int
    random_key: bytes
    rng: random.Random
    tier: list[bytes] = field(default_factory=list)
    tunnels: list[Tunnel] = field(default_factory=list)
    retiring: list[Tunnel] = field(default_factory=list)  # replaced, lease not yet ended
    _next_churn_s: float = 0.0

    def start(self, now_s: float, good: list[bytes]) -> None:
        if self.scenario.implementation == "java":
            self.tier = self.rng.sample(good, self.scenario.fast_tier)
        self._next_churn_s = now_s + 3600
        for i in range(self.quantity):
            # A session builds its tunnels within seconds; spread them over the first 30 s.
            self.tunnels.append(self._build(now_s + i * 30 / self.quantity, None))

    def step(self, now_s: float, good: list[bytes]) -> None:
        if self.scenario.implementation == "java" and now_s >= self._next_churn_s:
            self._churn(good)
            self._next_churn_s += 3600
        kept = []
        for tunnel in self.tunnels:
            if tunnel.ends_early_s is not None and now_s >= tunnel.ends_early_s:
                kept.append(self._build(now_s, None))  # failed: gone at once
            elif now_s >= tunnel.end_s - REBUILD_BEFORE_END_S:
                kept.append(self._build(now_s, tunnel.gateway))
                self.retiring.append(tunnel)  # its lease still counts until its end
            else:
                kept.append(tunnel)
        self.tunnels = kept
        self.retiring = [t for t in self.retiring if now_s < t.end_s]

    def report(self, now_s: float) -> tuple[Lease, ...]:
        """What the router tells the balancer: its tunnels whose leases have not ended,
        newest first (the one being replaced until its lease ends)."""
        live = [t for t in (*self.tunnels, *self.retiring) if t.end_s > now_s]
        live.sort(key=lambda t: -t.built_s)
        return tuple(
            Lease(t.gateway, t.tunnel_id, int(t.end_s * 1000)) for t in live[: self.quantity + 2]
        )

    def _churn(self, good: list[bytes]) -> None:
        count = round(self.scenario.tier_churn_per_hour * len(self.tier))
        inside = set(self.tier)
        outside = [p for p in good if p not in inside]
        for _ in range(min(count, len(outside))):
            self.tier[self.rng.randrange(len(self.tier))] = outside.pop(
                self.rng.randrange(len(outside))
            )

    def _slice(self) -> list[bytes]:
        hops, size = self.scenario.hops, len(self.tier)
        if hops >= 3 and size >= 12:
            chosen = [p for p in self.tier if self._mark(p) & 3 == 1]
        elif hops == 2 and size >= 6:
            chosen = [p for p in self.tier if self._mark(p) & 1]
        else:
            chosen = list(self.tier)
        return chosen or list(self.tier)

    def _mark(self, candidate: bytes) -> int:
        return hashlib.sha256(candidate + self.random_key).digest()[0]

    def _build(self, now_s: float, previous: bytes | None) -> Tunnel:
        scenario, rng = self.scenario, self.rng
        if scenario.implementation == "java":
            if previous in self.tier and rng.random() < scenario.java_reuse_share:
                gateway = previous
            else:
                gateway = rng.choice(self._slice())
        elif previous is not None and rng.random() >= scenario.i2pd_fresh_share:
            gateway = previous
        else:
            gateway = peer(rng.randrange(scenario.pool))
        early = None
        if rng.random() < scenario.early_end_share:
            early = now_s + rng.uniform(0, LEASE_LIFETIME_S - REBUILD_BEFORE_END_S)
        return Tunnel(gateway, rng.getrandbits(32), now_s, early)


def destination_spec(scenario: Scenario, population: Population) -> MultihomedDestinationSpec:
    count = 1 if population == "single" else scenario.routers
    direction = TunnelDirection(quantity=scenario.quantity, length=scenario.hops)
    return MultihomedDestinationSpec(
        routers=[RouterSpec(name=f"r{i}", i2cp=I2CPEndpoint(host=f"r{i}")) for i in range(count)],
        tunnels=TunnelsSpec(inbound=direction, outbound=direction),
        peer_policy=PeerPolicy(
            gateways=GatewayPolicy.SHARED if population == "shared" else GatewayPolicy.NATIVE
        ),
    )


def slice_size(fast_tier: int, inbound_length: int) -> int:
    """How many of its fast tier a single Java router draws inbound gateways from."""
    if inbound_length >= 3 and fast_tier >= 12:
        return (fast_tier + 3) // 4
    if inbound_length >= 2 and fast_tier >= 6:
        return (fast_tier + 1) // 2
    return fast_tier


def set_size_for_leases(
    lease_target: int,
    tiers: profiles.Tiers,
    known: profiles.PeerProfiles,
    inbound_length: int,
    now_s: float,
) -> int:
    """The rule the product had first, for comparison: every lease asked for its own
    gateway, and at least a Java slice of the balancer's fast tier."""
    return max(lease_target, slice_size(len(tiers.fast), inbound_length))


SIZE_RULES: dict[str, gateways.SetSizeRule] = {
    "per-router": gateways.set_size_per_router,
    "leases": set_size_for_leases,
}


def simulate(
    scenario: Scenario,
    population: Population,
    hours: int,
    seed: int,
    size_rule: gateways.SetSizeRule = gateways.set_size_per_router,
) -> list[Observation]:
    """The observations of one destination of `population` over `hours`."""
    rng = random.Random(seed)
    good = [peer(n) for n in rng.sample(range(scenario.pool), _good_size(scenario))]
    shared_key = rng.randbytes(32)
    if population == "single":
        # One router with every lease the multihomed ones publish between them.
        routers = {"r0": SimRouter(scenario, scenario.quantity * scenario.routers,
                                   rng.randbytes(32), random.Random(rng.random()))}  # fmt: skip
    else:
        quantity = scenario.quantity
        if population == "shared":
            quantity = gateways.inbound_quantity(quantity)
        routers = {
            f"r{i}": SimRouter(
                scenario, quantity, shared_key if population == "shared" else rng.randbytes(32),
                random.Random(rng.random()),
            )
            for i in range(scenario.routers)
        }  # fmt: skip
    start = float(EPOCH_S)
    for router in routers.values():
        router.start(start, good)
    spec = destination_spec(scenario, population)
    known = profiles.PeerProfiles()
    tiers = profiles.Tiers()
    shared: frozenset[bytes] = frozenset()
    reports: dict[str, tuple[Lease, ...]] = {name: () for name in routers}
    published: tuple[policy.SelectedLease, ...] | None = None
    published_s: int | None = None
    last_publish_at: float | None = None
    reason = None
    observations: list[Observation] = []
    for tick in range(int(hours * 3600 / TICK_S)):
        now_s = start + tick * TICK_S
        now_ms = int(now_s * 1000)
        for name, router in routers.items():
            router.step(now_s, good)
            report = router.report(now_s)
            if report != reports[name]:
                known = profiles.observe_leases(known, name, reports[name], report, now_ms)
                reports[name] = report
        if population == "single":
            current = tuple(policy.SelectedLease("r0", x) for x in reports["r0"])
            if current != published:
                published, published_s = current, int(now_s)
        else:
            if population == "shared":
                tiers, shared = gateways.shared_gateways_at(
                    shared, tiers, known, list(reports.values()),
                    policy.lease_target(spec, len(routers)), scenario.hops, now_s, size_rule,
                )  # fmt: skip
            plan = policy.plan_publish(
                policy.PublishInput(
                    links=tuple(
                        LinkState(name, state=RouterState.ESTABLISHED, leases=leases)
                        for name, leases in reports.items()
                    ),
                    published=published,
                    last_publish_at=last_publish_at,
                    spec=spec,
                    now=now_s,
                    now_ms=now_ms,
                    last_publish_reason=reason,
                    shared_gateways=shared if population == "shared" else None,
                )
            )
            if plan.leases is not None:
                published, last_publish_at, reason = plan.leases, now_s, plan.publish_reason
                published_s = policy.next_published_s(published_s, int(now_s))
        if tick % (OBSERVE_EVERY_S // TICK_S) == 0 and published is not None:
            observations.append(
                Observation(
                    now_s,
                    tuple(
                        ObservedLease(s.lease.gateway, s.lease.tunnel_id, s.lease.end_ms // 1000)
                        for s in published
                        if s.lease.end_ms > now_ms + OBSERVER_CUTOFF_S * 1000
                    ),
                    published_s,
                )
            )
    return observations


def _good_size(scenario: Scenario) -> int:
    wanted = round(scenario.fast_tier * scenario.overlap_factor)
    return min(scenario.pool, max(scenario.fast_tier, wanted))
