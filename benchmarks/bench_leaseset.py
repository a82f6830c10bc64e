"""Benchmarks that print figures (not tests).

1. LeaseSet assemble + sign time: merge 6 routers x 4 leases into 16, build and sign the
   LeaseSet2, serialize it, and the CreateLeaseSet2 frame.
2. Publishes per 10 minutes per destination: the balancer's real policy functions driven by
   a model of i2pd's tunnel schedule (10-minute tunnels, replaced 90 s before expiry, a lease
   request on every change), against the naive setup where every router publishes its own
   LeaseSet (at most once per 20 s each, as i2pd does). Every router with `publish: true`
   stores the merged LeaseSet it is handed, so floodfill stores = merged x publishing routers:
   keep `publish: true` on a few routers only. The measured figure from a real
   testnet run comes from the slow soak test (`pytest -m slow -s`), which prints it.

Run: python benchmarks/bench_leaseset.py
"""

from __future__ import annotations

import random
import statistics
import time

from i2p_multihome.balancer import policy
from i2p_multihome.wire import messages
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease, LeaseSet2

TUNNEL_LIFETIME_S = 600
REBUILD_BEFORE_S = 90
I2PD_PUBLISH_MIN_INTERVAL_S = 20


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
            (keys.encryption_key,),
            tuple(s.to_lease2() for s in selected),
            keys.sign,
        )
        messages.encode_frame(
            messages.CreateLeaseSet2(
                1, lease_set, (messages.PrivateKey(4, keys.encryption_private),)
            )
        )
        timings.append(time.perf_counter() - start)
    size = len(lease_set.to_bytes())
    print(
        f"assemble+sign (6 routers x 4 leases -> 16, {size}-byte LeaseSet2): "
        f"median {statistics.median(timings) * 1e6:.0f} us, "
        f"p99 {sorted(timings)[int(rounds * 0.99)] * 1e6:.0f} us over {rounds} rounds"
    )


def simulate(routers: int, tunnels: int, minutes: int = 60, seed: int = 1) -> tuple[float, float]:
    """(merged publishes, naive publishes) per 10 minutes, after a 10-minute warm-up."""
    rng = random.Random(seed)
    # Each router's tunnels start at random offsets; each is replaced 90 s before it expires.
    builds: dict[str, list[int]] = {
        f"r{r}": sorted(rng.randint(0, TUNNEL_LIFETIME_S) for _ in range(tunnels))
        for r in range(routers)
    }
    leases: dict[str, list[Lease]] = {name: [] for name in builds}
    gateway = {name: rng.randbytes(32) for name in builds}
    next_id = 1
    published: tuple[policy.SelectedLease, ...] | None = None
    last_publish: float | None = None
    pending_at: float | None = None
    merged = naive = 0
    naive_last: dict[str, float] = {}
    naive_pending: dict[str, bool] = {}
    warmup, end = 600, 600 + minutes * 60
    for now in range(end):
        now_ms = now * 1000
        changed: list[str] = []
        for name, starts in builds.items():
            for i, start in enumerate(starts):
                if start == now:
                    leases[name].append(
                        Lease(gateway[name], next_id, (now + TUNNEL_LIFETIME_S) * 1000)
                    )
                    next_id += 1
                    starts[i] = now + TUNNEL_LIFETIME_S - REBUILD_BEFORE_S
                    changed.append(name)
            before = len(leases[name])
            leases[name] = [x for x in leases[name] if x.end_ms > now_ms]
            if len(leases[name]) != before:
                changed.append(name)
        # Naive multihoming: each router publishes its own LeaseSet on every change.
        for name in set(changed):
            naive_pending[name] = True
        for name, pending in naive_pending.items():
            if pending and now - naive_last.get(name, -1e9) >= I2PD_PUBLISH_MIN_INTERVAL_S:
                naive_pending[name] = False
                naive_last[name] = now
                naive += now >= warmup
        # Merged: the balancer evaluates on each lease request and at its wake time.
        if changed or (pending_at is not None and now >= pending_at):
            desired = policy.select_leases(leases, now_ms, 16)
            decision = policy.decide_publish(desired, published, last_publish, now, now_ms=now_ms)
            pending_at = decision.at
            if decision.action is policy.PublishAction.NOW:
                published, last_publish, pending_at = desired, now, None
                merged += now >= warmup
        if published:
            wake = [t for t in (pending_at, policy.next_refresh_at(last_publish)) if t is not None]
            pending_at = min(wake, default=None)
    per10 = 10 / minutes
    return merged * per10, naive * per10


def main() -> None:
    bench_assemble_sign()
    print("publishes per 10 minutes per destination (model of i2pd's tunnel schedule):")
    for routers, tunnels in ((1, 3), (4, 3), (6, 4), (16, 16), (100, 16)):
        merged, naive = simulate(routers, tunnels, minutes=60 if routers < 100 else 20)
        print(
            f"  {routers:3d} routers x {tunnels:2d} tunnels: merged LeaseSets {merged:5.1f}"
            f" -> floodfill stores with 2 publishing routers {2 * merged:6.1f},"
            f" with all publishing {routers * merged:7.1f};"
            f" naive (each router its own LeaseSet) {naive:7.1f}"
        )


if __name__ == "__main__":
    main()
