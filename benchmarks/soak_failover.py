"""Failover soak (not a test): 5 multihomed destinations through 30 minutes of random router
kills and restarts on a private i2pd testnet.

Routers r1-r5 host the destinations, each on 3 of them (d1 on r1-r3, d2 on r2-r4, ...,
d5 on r5, r1, r2), each through its own `i2p-multihome balance`, 2 inbound zero-hop tunnels
per router (a lease's gateway is then the router that built it). Every 20-60 s (random) a
running router is SIGKILLed, at most 2 of the 5 down at once (so every destination keeps one),
and a killed router is restarted 20-120 s later.

Watched throughout, every 2 s: each floodfill's LeaseSet of each destination. It is valid
when the floodfill serves it (a lease more than 51 s from its end) with a lease of a router
that is up. The longest stretch any (floodfill, destination) went without a valid LeaseSet
must be at most 30 s. Every 30 s: each balancer's resident memory. At the end, with every
router up: each destination's session exists exactly once on each of its routers and on no
other (no session leaked), then the balancers are stopped and no router hosts any of them.

Prints a table, writes benchmarks/results/soak-failover-DATE.json, exits 1 if a check
failed. Everything it started is removed.

Run (root): python benchmarks/soak_failover.py [--minutes 30] [--seed N]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import floodfill_lease_sets, routers_by_gateway, testnet_version
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.observe import serving, usable
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import (
    ConsoleLeaseSet,
    ConsoleParseError,
    Testnet,
    TestnetError,
    check_host,
)
from i2p_multihome_dev.testnet.console import fetch_local_destinations
from results import write_results

ROUTERS = 9  # ff1-ff3, r1-r6
FLOODFILLS = 3
HOSTS = ["r1", "r2", "r3", "r4", "r5"]
PER_DESTINATION = 3
INBOUND = 2
MAX_DOWN = 2
KILL_EVERY_S = (20.0, 60.0)
DOWN_FOR_S = (20.0, 120.0)
SAMPLE_S = 2.0
MEMORY_EVERY_S = 30.0
ALLOWED_GAP_S = 30.0
SERVED_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 300.0


@dataclass
class Destination:
    name: str
    hosts: list[str]
    run: BalancerRun
    label: str = ""


@dataclass
class Watch:
    invalid_since: dict[tuple[str, str], float] = field(default_factory=dict)
    # What a (destination, floodfill) held when it went invalid, for the gap record.
    invalid_view: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    longest_gap_s: dict[str, float] = field(default_factory=dict)  # destination -> seconds
    gaps: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    memory_kib: dict[str, list[int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def valid(
    lease_set: ConsoleLeaseSet | None, now: float, live: set[str], owners: dict[str, str]
) -> bool:
    return serving(lease_set, now) and any(
        usable(x, now) and owners.get(x.gateway) in live for x in lease_set.leases
    )


def lease_view(
    lease_set: ConsoleLeaseSet | None, now: float, owners: dict[str, str]
) -> list[tuple[str, int]] | None:
    if lease_set is None:
        return None
    return [(owners.get(x.gateway, "?"), round(x.end - now)) for x in lease_set.leases]


def observe(
    testnet: Testnet, destinations: list[Destination], down: set[str], owners: dict[str, str],
    watch: Watch,
) -> None:  # fmt: skip
    try:
        seen = floodfill_lease_sets(testnet, [d.label for d in destinations])
    except (OSError, ConsoleParseError):
        return
    now, mono = time.time(), time.monotonic()
    live = set(HOSTS) - down
    watch.samples += 1
    for destination in destinations:
        for floodfill, lease_set in seen[destination.label].items():
            key = (destination.name, floodfill)
            if valid(lease_set, now, live, owners):
                started = watch.invalid_since.pop(key, None)
                view = watch.invalid_view.pop(key, {})
                if started is not None:
                    gap = mono - started
                    if gap > SAMPLE_S * 1.5:
                        watch.gaps.append(
                            {"destination": destination.name, "floodfill": floodfill,
                             "seconds": round(gap, 1), "down": sorted(down),
                             "ended_at_s": round(mono - watch.started, 1), **view}
                        )  # fmt: skip
            elif key not in watch.invalid_since:
                watch.invalid_since[key] = mono
                watch.invalid_view[key] = {
                    "started_at_s": round(mono - watch.started, 1),
                    "down_at_start": sorted(down),
                    "publisher_at_start": destination.run.status()
                    .get("leaseSet", {})
                    .get("publisher"),
                    # (router, seconds to its end) of each lease the floodfill held
                    "held_at_start": lease_view(lease_set, now, owners),
                }
            open_gap = mono - watch.invalid_since.get(key, mono)
            longest = watch.longest_gap_s.get(destination.name, 0.0)
            watch.longest_gap_s[destination.name] = round(max(longest, open_gap), 1)


def churn(
    testnet: Testnet, destinations: list[Destination], owners: dict[str, str],
    minutes: float, rng: random.Random, watch: Watch,
) -> None:  # fmt: skip
    down: dict[str, float] = {}  # router -> when it comes back (monotonic)
    started = watch.started = time.monotonic()
    next_kill = started + rng.uniform(*KILL_EVERY_S)
    next_memory = started
    while time.monotonic() - started < minutes * 60:
        now = time.monotonic()
        for router, back_at in sorted(down.items()):
            if now >= back_at:
                testnet.start_router(router)
                del down[router]
                watch.events.append({"at_s": round(now - started, 1), "start": router})
                print(f"  {now - started:6.0f}s start {router}", flush=True)
        if now >= next_kill:
            candidates = [r for r in HOSTS if r not in down]
            if len(down) < MAX_DOWN and candidates:
                victim = rng.choice(candidates)
                testnet.stop_router(victim)
                down[victim] = now + rng.uniform(*DOWN_FOR_S)
                watch.events.append({"at_s": round(now - started, 1), "kill": victim})
                print(f"  {now - started:6.0f}s kill {victim}", flush=True)
            next_kill = now + rng.uniform(*KILL_EVERY_S)
        if now >= next_memory:
            for d in destinations:
                d.run.assert_running()
                if (kib := rss_kib(d.run.process.pid)) is not None:
                    watch.memory_kib.setdefault(d.name, []).append(kib)
            next_memory = now + MEMORY_EVERY_S
        observe(testnet, destinations, set(down), owners, watch)
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - now)))
    for router in sorted(down):
        testnet.start_router(router)
        watch.events.append({"at_s": round(time.monotonic() - started, 1), "start": router})


def sessions(testnet: Testnet, labels: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per router, how many I2CP sessions each destination has there."""
    counted: dict[str, dict[str, int]] = {}
    for router in [*HOSTS, "r6"]:
        hosted = Counter(
            d.b32 for d in fetch_local_destinations(testnet.router(router).console)
            if d.i2cp_session is not None
        )  # fmt: skip
        counted[router] = {name: hosted.get(label, 0) for name, label in labels.items()}
    return counted


def sessions_as_spec(
    counted: dict[str, dict[str, int]], destinations: list[Destination]
) -> bool | NotYet:
    wrong = [
        f"{d.name}@{router}={counted[router][d.name]}"
        for d in destinations
        for router in counted
        if counted[router][d.name] != (1 if router in d.hosts else 0)
    ]
    return not wrong or NotYet(", ".join(wrong))


def memory_growth(samples: list[int]) -> dict[str, Any]:
    """First and last fifth of the run (after the first sample), and the growth between."""
    body = samples[1:] or samples
    fifth = max(1, len(body) // 5)
    first, last = statistics.fmean(body[:fifth]), statistics.fmean(body[-fifth:])
    return {
        "first_kib": round(first),
        "last_kib": round(last),
        "growth": round((last - first) / first, 3) if first else None,
        "samples": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    try:
        check_host()
    except TestnetError as exc:
        print(f"soak_failover: {exc}", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="soak-failover-"))
    print(f"work directory: {work}", flush=True)
    rng = random.Random(args.seed)
    testnet = Testnet(work / "testnet")
    watch = Watch()
    checks: dict[str, Any] = {}
    try:
        testnet.up(routers=ROUTERS, floodfills=FLOODFILLS, timeout=300)
        owners = routers_by_gateway(testnet, HOSTS)
        with ExitStack() as stack:
            destinations = []
            for i in range(len(HOSTS)):
                hosts = [HOSTS[(i + k) % len(HOSTS)] for k in range(PER_DESTINATION)]
                name = f"d{i + 1}"
                document = destination_manifest(name, testnet, hosts, inbound=INBOUND, length=0)
                run = stack.enter_context(run_balancer(work / name, testnet, document))
                destinations.append(Destination(name, hosts, run))
            for d in destinations:
                d.label = d.run.b32.removesuffix(".b32.i2p")
            wait_until(
                "every floodfill to serve every destination",
                SERVED_TIMEOUT_S,
                lambda: all(
                    valid(ls, time.time(), set(HOSTS), owners)
                    for per in floodfill_lease_sets(
                        testnet, [d.label for d in destinations]
                    ).values()
                    for ls in per.values()
                ),
                interval=3.0,
            )
            print(f"all served; {args.minutes} min of kills and restarts", flush=True)
            churn(testnet, destinations, owners, args.minutes, rng, watch)
            labels = {d.name: d.label for d in destinations}
            testnet.wait_ready(HOSTS, timeout=SETTLE_TIMEOUT_S)
            try:
                wait_until(
                    "each destination's session once on each of its routers",
                    SETTLE_TIMEOUT_S,
                    lambda: sessions_as_spec(sessions(testnet, labels), destinations),
                    interval=5.0,
                )
                checks["sessions_as_spec"] = True
            except AssertionError as exc:
                checks["sessions_as_spec"] = False
                checks["sessions_detail"] = str(exc)
            checks["sessions_at_end"] = sessions(testnet, labels)
        # The balancers are stopped (SIGTERM destroys their sessions).
        try:
            wait_until(
                "no router to host any destination after the balancers stopped",
                60,
                lambda: not any(n for per in sessions(testnet, labels).values()
                                for n in per.values()),
                interval=2.0,
            )  # fmt: skip
            checks["none_left_after_stop"] = True
        except AssertionError as exc:
            checks["none_left_after_stop"] = False
            checks["left_detail"] = str(exc)
    finally:
        testnet.down()
    memory = {name: memory_growth(kib) for name, kib in watch.memory_kib.items()}
    worst_gap = max(watch.longest_gap_s.values(), default=0.0)
    result = {
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "i2pd": testnet_version(),
        "parameters": {
            "minutes": args.minutes,
            "seed": args.seed,
            "routers": ROUTERS,
            "floodfills": FLOODFILLS,
            "hosts": HOSTS,
            "per_destination": PER_DESTINATION,
            "inbound": INBOUND,
            "tunnel_length": 0,
            "max_down": MAX_DOWN,
            "kill_every_s": KILL_EVERY_S,
            "down_for_s": DOWN_FOR_S,
            "sample_s": SAMPLE_S,
            "valid_rule": "served (a lease > 51 s from its end), a lease of a router that is up",
        },
        "samples": watch.samples,
        "kills": sum(1 for e in watch.events if "kill" in e),
        "longest_gap_s": watch.longest_gap_s,
        "worst_gap_s": worst_gap,
        "gaps_over_one_sample": watch.gaps,
        "memory": memory,
        "checks": checks,
        "events": watch.events,
    }
    passed = (
        worst_gap <= ALLOWED_GAP_S
        and checks.get("sessions_as_spec") is True
        and checks.get("none_left_after_stop") is True
        and all((m["growth"] or 0) < 0.10 for m in memory.values())
    )
    result["passed"] = passed
    print()
    print(f"{'destination':<12} {'longest without a valid LeaseSet':>32} {'RSS first':>10} "
          f"{'RSS last':>9} {'growth':>7}")  # fmt: skip
    for name in sorted(watch.longest_gap_s):
        m = memory.get(name, {})
        print(
            f"{name:<12} {watch.longest_gap_s[name]:>30.1f} s {m.get('first_kib', 0):>8} K "
            f"{m.get('last_kib', 0):>7} K {m.get('growth', 0) or 0:>7.1%}"
        )
    print(
        f"{result['kills']} kills in {args.minutes:.0f} min, {watch.samples} samples; "
        f"sessions as spec at the end: {checks.get('sessions_as_spec')}; none left after "
        f"stop: {checks.get('none_left_after_stop')}; passed: {passed}"
    )
    path = write_results("soak-failover", result)
    print(f"results: {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
