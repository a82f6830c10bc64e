"""Benchmarks that print figures (not tests).

1. LeaseSet assemble + sign time: merge 6 routers x 4 leases into 16, build and sign the
   LeaseSet2, serialize it, and the CreateLeaseSet2 frame.
2. LeaseSet versions the floodfills accept per 10 minutes, from a model: the balancer's real
   policy (`plan_publish`, the publisher choice, the ramp) driven by a model of i2pd's tunnel
   schedule and of its store rule, beside the same schedule single-homed (one i2pd router
   with all the tunnels) and naive (the same keys on every router, each storing its own
   LeaseSet). It also shows the usable leases a floodfill holds at a random second and the
   seconds it holds none. The real testnet figures come from `bench_floodfill.py`.

The model of i2pd 2.45.1: a tunnel's lease ends 600 s after it is built (builds take 2-8 s);
its replacement is ready 15-30 s before that end; it leaves the router's report at its end.
Every change to a router's tunnels is a lease request (I2CP) or a new local LeaseSet
(single-homed). A router stores a LeaseSet at once when its last store was 20 s ago or more,
else 20 s after the newest ask (Destination.cpp, PUBLISH_MIN_INTERVAL); a floodfill accepts
a store whose `published` is newer than what it holds, and a client uses a lease more than
51 s from its end.

Run: python benchmarks/bench_leaseset.py [--minutes 60] [--seeds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field

from i2p_multihome.balancer import policy
from i2p_multihome.balancer.link import LinkState
from i2p_multihome.model.v1alpha1 import (
    I2CPEndpoint,
    MultihomedDestinationSpec,
    RouterSpec,
    RouterState,
    TunnelDirection,
    TunnelsSpec,
)
from i2p_multihome.wire import messages
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease, LeaseSet2

LEASE_LIFETIME_S = 600
REPLACED_BEFORE_END_S = (15, 30)
BUILD_S = (2, 8)
STORE_INTERVAL_S = 20
CLIENT_MARGIN_S = 51
WARMUP_S = 600


def bench_assemble_sign(rounds: int = 3000) -> None:
    rng = random.Random(7)
    keys = DestinationKeys.generate(rng.randbytes)
    now_ms = 1_800_000_000_000
    reports = {
        f"r{r}": [
            Lease(rng.randbytes(32), rng.getrandbits(32), now_ms + rng.randint(120, 600) * 1000)
            for _ in range(4)
        ]
        for r in range(6)
    }
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        selected = policy.select_leases(reports, now_ms, 16)
        published = policy.next_published_s(None, now_ms // 1000)
        lease_set = LeaseSet2.build(
            keys.destination,
            published,
            policy.lease_set_expires_s(selected, published),
            keys.encryption_keys,
            tuple(s.to_lease2() for s in selected),
            keys.sign,
        )
        messages.encode_frame(
            messages.CreateLeaseSet2(
                1,
                lease_set,
                tuple(messages.PrivateKey(t, k) for t, k in keys.private_keys),
            )
        )
        timings.append(time.perf_counter() - start)
    size = len(lease_set.to_bytes())
    print(
        f"assemble+sign (6 routers x 4 leases -> 16, {size}-byte LeaseSet2): "
        f"median {statistics.median(timings) * 1e6:.0f} us, "
        f"p99 {sorted(timings)[int(rounds * 0.99)] * 1e6:.0f} us over {rounds} rounds"
    )


# --- the i2pd model -----------------------------------------------------------------------


@dataclass
class Store:
    """One router's store rule for one destination."""

    last_store: float = -1e9
    due_at: float | None = None  # a held-back store
    due_published: float = 0.0

    def ask(self, now: float, published: float) -> float | None:
        """A new LeaseSet (published at `published`): the time it is stored now, or None."""
        self.due_published = published
        if now >= self.last_store + STORE_INTERVAL_S:
            self.last_store, self.due_at = now, None
            return published
        self.due_at = now + STORE_INTERVAL_S
        return None

    def fire(self, now: float) -> float | None:
        if self.due_at is None or now < self.due_at:
            return None
        self.last_store, self.due_at = now, None
        return self.due_published


@dataclass
class Router:
    name: str
    leases: list[Lease] = field(default_factory=list)
    builds: list[tuple[float, int]] = field(default_factory=list)  # (ready at, slot)


@dataclass
class Floodfill:
    """What a floodfill holds: the newest LeaseSet stored."""

    published: float = -1.0
    leases: tuple[Lease, ...] = ()
    accepted: int = 0

    def store(self, published: float, leases: tuple[Lease, ...], now: float) -> None:
        if published > self.published:
            self.published, self.leases = published, leases
            self.accepted += now >= WARMUP_S


@dataclass
class Figures:
    accepted_per_10_min: float
    mean_usable: float
    min_usable: int
    seconds_without_usable: int


class Schedule:
    """i2pd's tunnels for `routers` routers x `tunnels`, as built and replaced over time."""

    def __init__(self, routers: int, tunnels: int, ramp: bool, rng: random.Random) -> None:
        self.rng = rng
        self.routers = [Router(f"r{i + 1}") for i in range(routers)]
        self.gateway = {r.name: rng.randbytes(32) for r in self.routers}
        self.next_id = 1
        for index, router in enumerate(self.routers):
            start = rng.uniform(0, 2)
            held_back = 1 if ramp and tunnels > 1 else 0
            for slot in range(tunnels - held_back):
                router.builds.append((start + rng.uniform(*BUILD_S), slot))
            if held_back:
                turn = policy.ramp_delay_s(index, routers)
                router.builds.append((start + turn + rng.uniform(*BUILD_S), tunnels - 1))

    def tick(self, now: int) -> list[str]:
        """Advance to second `now`: the routers whose tunnels changed."""
        changed = []
        for router in self.routers:
            ready = [b for b in router.builds if b[0] <= now]
            router.builds = [b for b in router.builds if b[0] > now]
            for _, slot in ready:
                end = (now + LEASE_LIFETIME_S) * 1000
                router.leases.append(Lease(self.gateway[router.name], self.next_id, end))
                self.next_id += 1
                replace_at = now + LEASE_LIFETIME_S - self.rng.uniform(*REPLACED_BEFORE_END_S)
                router.builds.append((replace_at, slot))
            before = len(router.leases)
            router.leases = [x for x in router.leases if x.end_ms > now * 1000]
            if ready or len(router.leases) != before:
                changed.append(router.name)
        return changed


def _usable(leases: tuple[Lease, ...], now: int) -> int:
    return sum(1 for x in leases if x.end_ms > (now + CLIENT_MARGIN_S) * 1000)


def _figures(floodfill: Floodfill, usable: list[int], seconds: int) -> Figures:
    return Figures(
        accepted_per_10_min=floodfill.accepted * 600 / seconds,
        mean_usable=statistics.fmean(usable),
        min_usable=min(usable),
        seconds_without_usable=sum(1 for u in usable if u == 0),
    )


def simulate_balancer(routers: int, tunnels: int, minutes: int, seed: int) -> Figures:
    """This project: one publisher, `plan_publish` deciding, the ramp spreading tunnels."""
    rng = random.Random(seed)
    schedule = Schedule(routers, tunnels, ramp=True, rng=rng)
    direction = TunnelDirection(quantity=tunnels, length=1)
    spec = MultihomedDestinationSpec(
        routers=[RouterSpec(name=r.name, i2cp=I2CPEndpoint(host=r.name)) for r in schedule.routers],
        tunnels=TunnelsSpec(inbound=direction, outbound=direction),
    )
    stores = {r.name: Store() for r in schedule.routers}
    floodfill = Floodfill()
    published: tuple[policy.SelectedLease, ...] | None = None
    last_at: float | None = None
    last_reason = None
    publisher: str | None = None
    store_at: dict[str, float] = {}
    wake_at: float | None = 0.0
    version = 0
    held_leases: tuple[Lease, ...] = ()
    usable: list[int] = []
    end = WARMUP_S + minutes * 60
    for now in range(end):
        changed = schedule.tick(now)
        for name, store in stores.items():
            if (fired := store.fire(now)) is not None and name == publisher:
                floodfill.store(fired, held_leases, now)
        if changed or (wake_at is not None and now >= wake_at):
            links = tuple(
                LinkState(
                    r.name,
                    state=RouterState.ESTABLISHED,
                    leases=tuple(r.leases),
                    awaiting_answer=r.name in changed,
                )
                for r in schedule.routers
            )
            plan = policy.plan_publish(
                policy.PublishInput(
                    links=links,
                    published=published,
                    last_publish_at=last_at,
                    spec=spec,
                    now=now,
                    now_ms=now * 1000,
                    publisher=publisher,
                    store_at=store_at,
                    last_publish_reason=last_reason,
                )
            )
            publisher = plan.publisher
            wake_at = plan.wake_at
            if plan.leases is not None and publisher is not None:
                published, last_at, last_reason = plan.leases, now, plan.publish_reason
                version += 1
                held_leases = tuple(s.lease for s in plan.leases)
                store_at[publisher] = policy.next_store_at(store_at.get(publisher), now)
                if (stored := stores[publisher].ask(now, now + version * 1e-6)) is not None:
                    floodfill.store(stored, held_leases, now)
        if now >= WARMUP_S:
            usable.append(_usable(floodfill.leases, now))
    return _figures(floodfill, usable, minutes * 60)


def simulate_routers_alone(routers: int, tunnels: int, minutes: int, seed: int) -> Figures:
    """Each router publishes its own LeaseSet of its own tunnels on every change, as i2pd
    does: one router is single-homed; several with the same keys are today's multihoming."""
    rng = random.Random(seed)
    schedule = Schedule(routers, tunnels, ramp=False, rng=rng)
    stores = {r.name: Store() for r in schedule.routers}
    own: dict[str, tuple[Lease, ...]] = {}
    created: dict[str, float] = {}
    floodfill = Floodfill()
    usable: list[int] = []
    end = WARMUP_S + minutes * 60
    for now in range(end):
        changed = schedule.tick(now)
        for router in schedule.routers:
            if router.name in changed and router.leases:
                own[router.name] = tuple(sorted(router.leases, key=lambda x: -x.end_ms))
                created[router.name] = now + rng.random() * 1e-3
                if (stored := stores[router.name].ask(now, created[router.name])) is not None:
                    floodfill.store(stored, own[router.name], now)
            if (fired := stores[router.name].fire(now)) is not None:
                floodfill.store(fired, own[router.name], now)
        if now >= WARMUP_S:
            usable.append(_usable(floodfill.leases, now))
    return _figures(floodfill, usable, minutes * 60)


def _mean(figures: list[Figures]) -> Figures:
    return Figures(
        accepted_per_10_min=statistics.fmean(f.accepted_per_10_min for f in figures),
        mean_usable=statistics.fmean(f.mean_usable for f in figures),
        min_usable=min(f.min_usable for f in figures),
        seconds_without_usable=sum(f.seconds_without_usable for f in figures),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes per run")
    parser.add_argument("--seeds", type=int, default=5, help="runs per setup")
    args = parser.parse_args()
    bench_assemble_sign()
    print(
        f"LeaseSet versions a floodfill accepts per 10 minutes (model, {args.seeds} x "
        f"{args.minutes} min after 10 min warm-up):"
    )
    print(f"{'setup':<34} {'versions/10min':>14} {'usable (mean)':>13} {'min':>4} {'s w/o':>6}")
    setups = [
        ("single-homed, 1 router x 12", simulate_routers_alone, 1, 12),
        ("naive, same keys on 4 x 3", simulate_routers_alone, 4, 3),
        ("this project, 4 routers x 3", simulate_balancer, 4, 3),
        ("this project, 8 routers x 3", simulate_balancer, 8, 3),
        ("naive, same keys on 8 x 3", simulate_routers_alone, 8, 3),
    ]
    for label, simulate, routers, tunnels in setups:
        runs = [simulate(routers, tunnels, args.minutes, seed) for seed in range(args.seeds)]
        f = _mean(runs)
        print(
            f"{label:<34} {f.accepted_per_10_min:>14.1f} {f.mean_usable:>13.1f} "
            f"{f.min_usable:>4} {f.seconds_without_usable:>6}"
        )


if __name__ == "__main__":
    main()
