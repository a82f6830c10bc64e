"""Floodfill load and failover, side by side on one private i2pd testnet in one run (not a
test): the same kind of destination served

  (a) naive: the same keys on 4 i2pd routers (r1-r4) as server tunnels, each router storing
      its own LeaseSet (today's multihoming);
  (b) single-homed: one i2pd router (r9) with as many tunnels as (a) has leases;
  (c) this project on 4 routers (r1-r4, publisher first in spec order: r1);
  (d) this project on 8 routers (r8..r1, so that its publisher, r8, is not (c)'s).

Every destination has 3 inbound tunnels per router (12 on r9) and zero-hop tunnels, so a
lease's gateway is the router that built it: which router a floodfill's lease belongs to
is exact, without asking the balancer.

Measured:
- LeaseSet versions each floodfill accepts per 10 minutes (i2pd logs "NetDb: LeaseSet2
  updated: <b32>" at info level), over a window after a warm-up, and the stores it
  receives (the publisher's own stores and other floodfills' floods, of new versions and
  of ones it holds; "NetDb: Store request: LeaseSet2 ... for <b32>", logged at debug
  level, which the floodfills are switched to for the window only).
- Leases a client can find at a random moment: the usable leases (more than 51 s from their
  end) of the LeaseSet a floodfill holds, sampled every 5 s.
- Kills (SIGKILL) of r1-r4, alternately (c)'s publisher and one of (c)'s other routers: for
  (a), (c) and (d) the seconds from the kill until no floodfill holds a lease of the dead
  router (capped), the share of the leases the floodfills held meanwhile that were dead,
  and samples where a floodfill did not serve (c) or (d) at all. The router is restarted
  and rejoins before the next kill. (b) is not killed: with one router it has no failover.

Prints a table with ratios to (a) and (b), writes benchmarks/results/floodfill-DATE.json.
Everything it started is removed.

Run (root): python benchmarks/bench_floodfill.py [--window-minutes 10] [--kills 10]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import floodfill_lease_sets, routers_by_gateway, testnet_version
from i2p_multihome_dev.backends import HttpBackend
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.observe import serving, usable
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import (
    ConsoleParseError,
    Testnet,
    TestnetError,
    check_host,
    run_console_command,
)
from i2p_multihome_dev.testnet.tunnels import keys_file
from results import write_results

ROUTERS = 13  # ff1-ff3, r1-r10
FLOODFILLS = 3
NAIVE_HOSTS = ["r1", "r2", "r3", "r4"]
SINGLE_HOST = "r9"
HOSTS4 = ["r1", "r2", "r3", "r4"]
HOSTS8 = ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1"]
INBOUND = 3
SERVED_TIMEOUT_S = 300.0
SAMPLE_S = 5.0
KILL_POLL_S = 1.0
GONE_CAP_S = 90.0
REJOIN_TIMEOUT_S = 300.0

UPDATED = "NetDb: LeaseSet2 updated: "
STORE_REQUEST = "NetDb: Store request: LeaseSet2 of type "  # then "<type> for <b32>"


@dataclass
class Setup:
    key: str  # a, b, c, d
    label: str
    b32: str
    hosts: list[str]
    run: BalancerRun | None = None

    @property
    def label_b32(self) -> str:
        return self.b32.removesuffix(".b32.i2p")


@dataclass
class KillRecord:
    victim: str
    role_in_c: str  # publisher or standby
    role_in_d: str
    gone_s: dict[str, float | None] = field(default_factory=dict)  # None: not within the cap
    dead_share: dict[str, float] = field(default_factory=dict)
    not_serving_samples: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    error: str | None = None


def all_serve(testnet: Testnet, setups: list[Setup], owners: dict[str, str]) -> bool | NotYet:
    """Every floodfill serves each balancer's destination, with leases of each of its
    hosts; i2pd's own destinations (a, b) need one floodfill: in this testnet floods to ff3
    are mostly lost (2026-12-01: ff3 accepted 2 of 35 versions of (a), 0 of 11 of (b),
    while its direct stores, and its floods to ff1 and ff2, arrive)."""
    views = floodfill_lease_sets(testnet, [s.label_b32 for s in setups])
    now = time.time()
    for setup in setups:
        if setup.run is None:
            if not any(serving(ls, now) for ls in views[setup.label_b32].values()):
                return NotYet(f"no floodfill serves ({setup.key})")
            continue
        for floodfill, lease_set in views[setup.label_b32].items():
            if not serving(lease_set, now):
                return NotYet(f"{floodfill} does not serve ({setup.key})")
            routers = {owners.get(lease.gateway) for lease in lease_set.leases}
            wanted = set(setup.hosts) if setup.key != "a" else set()  # naive: one router's
            if not wanted <= routers:
                return NotYet(
                    f"{floodfill} lacks leases of {sorted(wanted - routers)} ({setup.key})"
                )
    return True


def log_offsets(testnet: Testnet) -> dict[str, int]:
    return {r.name: testnet.log_file(r.name).stat().st_size for r in testnet.routers if r.floodfill}


def count_log_lines(
    testnet: Testnet, since: dict[str, int], labels: list[str], marker: str
) -> dict[str, dict[str, int]]:
    """Per destination label per floodfill, the log lines since the offsets that hold
    `marker` and end with the label."""
    counts = {label: dict.fromkeys(since, 0) for label in labels}
    for name, offset in since.items():
        with testnet.log_file(name).open("rb") as log:
            log.seek(offset)
            for raw in log:
                line = raw.decode(errors="replace")
                if marker in line:
                    label = line.rsplit(" ", 1)[-1].strip()
                    if label in counts:
                        counts[label][name] += 1
    return counts


def set_floodfill_log_level(testnet: Testnet, level: str) -> None:
    for router in testnet.routers:
        if router.floodfill:
            run_console_command(router.console, "set_loglevel", arguments={"level": level})


def window(
    testnet: Testnet, setups: list[Setup], minutes: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Versions accepted per floodfill per 10 minutes, and usable leases sampled."""
    labels = [s.label_b32 for s in setups]
    offsets = log_offsets(testnet)
    set_floodfill_log_level(testnet, "debug")
    usable_samples: dict[str, list[int]] = {s.key: [] for s in setups}
    not_serving: dict[str, int] = {s.key: 0 for s in setups}
    started = time.monotonic()
    while time.monotonic() - started < minutes * 60:
        taken = time.monotonic()
        try:
            views = floodfill_lease_sets(testnet, labels)
        except (OSError, ConsoleParseError) as exc:
            print(f"  sample skipped: {exc}", flush=True)
            views = {}
        now = time.time()
        for setup in setups:
            for lease_set in views.get(setup.label_b32, {}).values():
                count = 0 if lease_set is None else sum(usable(x, now) for x in lease_set.leases)
                usable_samples[setup.key].append(count)
                not_serving[setup.key] += not serving(lease_set, now)
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - taken)))
    elapsed = time.monotonic() - started
    set_floodfill_log_level(testnet, "info")
    counts = count_log_lines(testnet, offsets, labels, UPDATED)
    stores = count_log_lines(testnet, offsets, labels, STORE_REQUEST)
    versions = {
        s.key: {
            "per_floodfill": counts[s.label_b32],
            "per_floodfill_per_10_min": round(
                statistics.fmean(counts[s.label_b32].values()) * 600 / elapsed, 2
            ),
            "stores_received": stores[s.label_b32],
            "stores_received_per_floodfill_per_10_min": round(
                statistics.fmean(stores[s.label_b32].values()) * 600 / elapsed, 2
            ),
        }
        for s in setups
    }
    leases = {
        key: {
            "mean": round(statistics.fmean(values), 2) if values else None,
            "min": min(values, default=None),
            "samples": len(values),
            "not_serving": not_serving[key],
        }
        for key, values in usable_samples.items()
    }
    return {"elapsed_s": round(elapsed, 1), **versions}, leases


def publisher_of(setup: Setup) -> str | None:
    assert setup.run is not None
    value = setup.run.status().get("leaseSet", {}).get("publisher")
    return value if isinstance(value, str) else None


def kill_one(
    testnet: Testnet, setups: list[Setup], victim: str, owners: dict[str, str], record: KillRecord
) -> None:
    """SIGKILL `victim`, watch the floodfills until its leases are gone from every
    destination it hosted (or the cap), then restart it and wait until it rejoins."""
    watched = [s for s in setups if victim in s.hosts]
    labels = [s.label_b32 for s in watched]
    dead_seen = {s.key: 0 for s in watched}
    total_seen = {s.key: 0 for s in watched}
    not_serving = {s.key: 0 for s in watched}
    killed_at = time.monotonic()
    testnet.stop_router(victim)
    pending = {s.key for s in watched}
    while pending and time.monotonic() - killed_at < GONE_CAP_S:
        try:
            views = floodfill_lease_sets(testnet, labels)
        except (OSError, ConsoleParseError):
            time.sleep(KILL_POLL_S)
            continue
        now = time.time()
        record.samples += 1
        for setup in watched:
            if setup.key not in pending:
                continue
            lease_sets = list(views[setup.label_b32].values())
            dead = sum(
                1 for ls in lease_sets if ls for x in ls.leases if owners.get(x.gateway) == victim
            )
            dead_seen[setup.key] += dead
            total_seen[setup.key] += sum(len(ls.leases) for ls in lease_sets if ls)
            not_serving[setup.key] += sum(not serving(ls, now) for ls in lease_sets)
            if dead == 0:
                record.gone_s[setup.key] = round(time.monotonic() - killed_at, 1)
                pending.discard(setup.key)
        time.sleep(KILL_POLL_S)
    for key in pending:
        record.gone_s[key] = None
    for setup in watched:
        total = total_seen[setup.key]
        record.dead_share[setup.key] = round(dead_seen[setup.key] / total, 3) if total else 0.0
        record.not_serving_samples[setup.key] = not_serving[setup.key]
    print(
        f"  killed {victim} ({record.role_in_c} of c, {record.role_in_d} of d): gone after "
        + ", ".join(f"{k}={v if v is not None else f'>{GONE_CAP_S:.0f}'}s" for k, v in
                    sorted(record.gone_s.items()))
        + f"; dead share {record.dead_share}; not serving {record.not_serving_samples}",
        flush=True,
    )  # fmt: skip
    testnet.start_router(victim)
    testnet.wait_ready([victim], timeout=REJOIN_TIMEOUT_S)
    balanced = [s for s in watched if s.run is not None]
    wait_until(
        f"{victim} to rejoin (c) and (d) on every floodfill",
        REJOIN_TIMEOUT_S,
        lambda: all_serve(testnet, balanced, owners),
        interval=3.0,
    )


def choose_victim(setups: dict[str, Setup], index: int) -> tuple[str, str, str]:
    """Even kills: (c)'s publisher; odd kills: the next of (c)'s other routers in turn."""
    c, d = setups["c"], setups["d"]
    publisher_c, publisher_d = publisher_of(c), publisher_of(d)
    if index % 2 == 0 and publisher_c is not None:
        victim = publisher_c
    else:
        others = [r for r in HOSTS4 if r != publisher_c]
        victim = others[(index // 2) % len(others)]
    return (
        victim,
        "publisher" if victim == publisher_c else "standby",
        "publisher" if victim == publisher_d else "standby",
    )


@dataclass
class Started:
    setups: dict[str, Setup]
    owners: dict[str, str]


def bring_up(testnet: Testnet, work: Path, stack: ExitStack) -> Started:
    backend = stack.enter_context(HttpBackend(testnet.bridge_address))
    host, port = backend.address
    zero_hop = {
        "inbound.length": "0", "outbound.length": "0", "outbound.quantity": "2",
    }  # fmt: skip
    # (a) the same keys on r1-r4: the first router writes them, the others are given a copy.
    naive = {**zero_hop, "inbound.quantity": str(INBOUND)}
    naive_b32 = testnet.add_server_tunnel(NAIVE_HOSTS[0], "naive", host, port, naive)
    source = testnet.router(NAIVE_HOSTS[0]).datadir / keys_file("naive")
    for name in NAIVE_HOSTS[1:]:
        shutil.copy(source, testnet.router(name).datadir / keys_file("naive"))
        again = testnet.add_server_tunnel(name, "naive", host, port, naive)
        if again != naive_b32:
            raise TestnetError(f"{name} did not take the shared keys: {again} != {naive_b32}")
    # (b) one router, as many tunnels as (a) has leases.
    single_b32 = testnet.add_server_tunnel(
        SINGLE_HOST, "single", host, port,
        {**zero_hop, "inbound.quantity": str(INBOUND * len(NAIVE_HOSTS))},
    )  # fmt: skip
    setups = {
        "a": Setup("a", "naive, same keys on 4", naive_b32, list(NAIVE_HOSTS)),
        "b": Setup("b", f"single-homed, 1 x {INBOUND * 4}", single_b32, [SINGLE_HOST]),
    }
    for key, name, hosts in (("c", "four", HOSTS4), ("d", "eight", HOSTS8)):
        document = destination_manifest(name, testnet, hosts, inbound=INBOUND, length=0)
        run = stack.enter_context(run_balancer(work / name, testnet, document))
        setups[key] = Setup(key, f"this project, {len(hosts)} routers", run.b32, hosts, run)
    owners = routers_by_gateway(testnet, NAIVE_HOSTS + HOSTS8[:4] + [SINGLE_HOST])
    return Started(setups, owners)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--window-minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    try:
        check_host()
    except TestnetError as exc:
        print(f"bench_floodfill: {exc}", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="floodfill-"))
    print(f"work directory: {work}", flush=True)
    testnet = Testnet(work / "testnet")
    kills: list[KillRecord] = []
    try:
        testnet.up(routers=ROUTERS, floodfills=FLOODFILLS, timeout=400)
        with ExitStack() as stack:
            started = bring_up(testnet, work, stack)
            setups, owners = started.setups, started.owners
            ordered = [setups[k] for k in "abcd"]
            took = time.monotonic()
            wait_until(
                "every destination to be served",
                SERVED_TIMEOUT_S,
                lambda: all_serve(testnet, ordered, owners),
                interval=3.0,
            )
            print(f"all served after {time.monotonic() - took:.0f}s; warm-up", flush=True)
            time.sleep(args.warmup_minutes * 60)
            print(f"measuring for {args.window_minutes} min", flush=True)
            versions, leases = window(testnet, ordered, args.window_minutes)
            publishers = {k: publisher_of(setups[k]) for k in "cd"}
            for index in range(args.kills):
                victim, role_c, role_d = choose_victim(setups, index)
                record = KillRecord(victim, role_c, role_d)
                try:
                    kill_one(testnet, ordered, victim, owners, record)
                except (TestnetError, AssertionError, OSError, ConsoleParseError) as exc:
                    # Keep what was measured; the JSON says where it stopped.
                    print(f"  kill {index + 1} stopped the kills: {exc}", flush=True)
                    record.error = str(exc)
                    kills.append(record)
                    break
                kills.append(record)
    finally:
        testnet.down()
    result = report(setups, versions, leases, publishers, kills, args)
    print_table(result)
    path = write_results("floodfill", result)
    print(f"results: {path}")
    return 0


def report(
    setups: dict[str, Setup],
    versions: dict[str, Any],
    leases: dict[str, Any],
    publishers: dict[str, str | None],
    kills: list[KillRecord],
    args: argparse.Namespace,
) -> dict[str, Any]:
    failover: dict[str, Any] = {}
    for key in "acd":
        times = [k.gone_s.get(key) for k in kills if key in k.gone_s]
        done = [t for t in times if t is not None]
        failover[key] = {
            "kills": len(times),
            "within_cap": len(done),
            "median_s": statistics.median(done) if done else None,
            "worst_s": max(done) if len(done) == len(times) and done else None,
            "mean_dead_share": _mean_share(kills, key),
            "not_serving_samples": sum(k.not_serving_samples.get(key, 0) for k in kills),
            "by_role_in_c": {
                role: [k.gone_s.get(key) for k in kills if k.role_in_c == role]
                for role in ("publisher", "standby")
            },
        }  # fmt: skip
    return {
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "i2pd": testnet_version(),
        "parameters": {
            "routers": ROUTERS,
            "floodfills": FLOODFILLS,
            "inbound_per_router": INBOUND,
            "tunnel_length": 0,
            "window_minutes": args.window_minutes,
            "warmup_minutes": args.warmup_minutes,
            "kills": args.kills,
            "gone_cap_s": GONE_CAP_S,
            "usable_rule": "a lease more than 51 s from its end",
        },
        "setups": {k: {"label": s.label, "hosts": s.hosts} for k, s in setups.items()},
        "publishers_after_window": publishers,
        "versions": versions,
        "usable_leases": leases,
        "failover": failover,
        "kill_log": [vars(k) for k in kills],
    }


def _mean_share(kills: list[KillRecord], key: str) -> float | None:
    shares = [k.dead_share[key] for k in kills if key in k.dead_share]
    return round(statistics.fmean(shares), 3) if shares else None


def print_table(result: dict[str, Any]) -> None:
    versions, leases, failover = result["versions"], result["usable_leases"], result["failover"]
    a = versions["a"]["per_floodfill_per_10_min"]
    b = versions["b"]["per_floodfill_per_10_min"]
    print()
    print(
        f"{'setup':<30} {'versions/ff/10min':>17} {'vs a':>6} {'vs b':>6} {'stores/ff/10min':>15} "
        f"{'usable mean':>11} {'min':>4} {'failover median':>15} {'worst':>6} {'dead share':>10}"
    )
    for key, setup in result["setups"].items():
        v = versions[key]["per_floodfill_per_10_min"]
        stores = versions[key].get("stores_received_per_floodfill_per_10_min", 0)
        f = failover.get(key, {})
        median = f.get("median_s")
        worst = f.get("worst_s")
        share = f.get("mean_dead_share")
        print(
            f"{key}) {setup['label']:<27} {v:>17.2f} {v / a if a else 0:>6.2f} "
            f"{v / b if b else 0:>6.2f} {stores:>15.1f} {leases[key]['mean'] or 0:>11.1f} "
            f"{leases[key]['min'] if leases[key]['min'] is not None else '-':>4} "
            f"{median if median is not None else '-':>15} "
            f"{worst if worst is not None else '-':>6} "
            f"{share if share is not None else '-':>10}"
        )
    for key in "cd":
        f = failover[key]
        print(
            f"{key}) kills: {f['kills']}, within {result['parameters']['gone_cap_s']:.0f}s: "
            f"{f['within_cap']}, samples where a floodfill did not serve: "
            f"{f['not_serving_samples']}; by role in c: {f['by_role_in_c']}"
        )


if __name__ == "__main__":
    sys.exit(main())
