"""Soak benchmark (not a test): is the destination served by every floodfill at every moment,
through tunnel rotations, for 15 minutes?

Brings up its own private i2pd testnet (9 routers, 3 floodfills; root, Debian's i2pd), runs
the real `i2p-multihome balance` on 4 routers x 3 inbound tunnels of length 1, waits until
every floodfill serves the destination with leases of all 4 routers, then samples every
floodfill every 5 s. A sample is a gap when ANY floodfill does not serve the destination: a
client may ask any of them, and a floodfill serves only while it holds a lease with more
than 51 s left (what an i2pd client would still use). Every lease's router is checked
against the routers' own consoles. Tunnels live 10 minutes, so a run of more than 11 minutes
also checks that the floodfills then hold none of the leases they held at the start.

Prints a table, writes JSON to benchmarks/results/soak-DATE.json (date, parameters, every
sample, the gaps with what each floodfill held, per-floodfill serving counts, publishes per
10 minutes), and exits 1 on a gap or a failed check. Everything it started is removed.

Run (root): python benchmarks/soak.py [--minutes 15] [--interval 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.observe import (
    LEASE_LIFETIME_S,
    LeaseOwnerError,
    lease_keys,
    serving,
    usable,
)
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.testnet import (
    ConsoleLeaseSet,
    ConsoleParseError,
    Testnet,
    TestnetError,
    check_host,
)
from results import write_results

ROUTERS = 9
FLOODFILLS = 3
HOSTS = ["r1", "r2", "r3", "r4"]
INBOUND = 3
LENGTH = 1
FIRST_SERVED_TIMEOUT_S = 240.0
# A lease's tunnel lives 10 minutes; a minute more and every lease held at the start ended.
TURNOVER_S = LEASE_LIFETIME_S + 60


@dataclass(frozen=True)
class Held:
    """What one floodfill held at one sample."""

    serving: bool
    leases: int
    usable: int  # leases with more than 51 s left
    routers: list[str]
    last_end_in_s: float | None  # the latest lease end, from the sample
    note: str = ""  # a console that did not answer, or a lease no router owns

    def describe(self) -> str:
        if self.note:
            return self.note
        if not self.leases:
            return "nothing"
        return (
            f"{self.leases} leases ({self.usable} usable) from {','.join(self.routers)}, "
            f"last ends in {self.last_end_in_s:.0f}s"
        )


@dataclass(frozen=True)
class Sample:
    at_s: float  # since sampling started
    floodfills: dict[str, Held]

    @property
    def gap(self) -> bool:
        return not all(held.serving for held in self.floodfills.values())


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    first_leases: set[tuple[str, int]] = field(default_factory=set)
    last_leases: set[tuple[str, int]] = field(default_factory=set)
    owner_errors: list[str] = field(default_factory=list)


def hold(run: BalancerRun, lease_set: ConsoleLeaseSet | None, now: float) -> Held:
    if lease_set is None:
        return Held(False, 0, 0, [], None)
    note = ""
    try:
        routers = sorted(run.routers_of(lease_set))
    except LeaseOwnerError as exc:
        routers, note = ["?"], f"lease owner check failed: {exc}"
    return Held(
        serving=serving(lease_set, now),
        leases=len(lease_set.leases),
        usable=sum(usable(lease, now) for lease in lease_set.leases),
        routers=routers,
        last_end_in_s=round(max(lease.end for lease in lease_set.leases) - now, 1)
        if lease_set.leases
        else None,
        note=note,
    )


def sample(run: BalancerRun, floodfills: list[str], started: float) -> Sample:
    now = time.time()
    try:
        views = run.floodfill_views()
    except (OSError, ConsoleParseError) as exc:
        down = Held(False, 0, 0, [], None, note=f"console: {exc}")
        return Sample(round(time.monotonic() - started, 1), dict.fromkeys(floodfills, down))
    return Sample(
        round(time.monotonic() - started, 1),
        {name: hold(run, lease_set, now) for name, lease_set in sorted(views.items())},
    )


def all_served(run: BalancerRun) -> bool:
    run.assert_running()
    now = time.time()
    return all(
        serving(lease_set, now) and set(HOSTS) <= run.routers_of(lease_set)
        for lease_set in run.floodfill_views().values()
    )


def soak(run: BalancerRun, minutes: float, interval: float, soaked: Soak) -> dict[str, Any]:
    wait_until(
        "every floodfill to serve the destination with leases of all 4 routers",
        FIRST_SERVED_TIMEOUT_S,
        lambda: all_served(run),
        explain=run.explain_floodfills,
    )
    floodfills = sorted(run.last_views)
    soaked.first_leases = set().union(*(lease_keys(ls) for ls in run.last_views.values()))
    first_publishes = int(run.status()["leaseSet"]["publishes"])
    started = time.monotonic()
    while time.monotonic() - started < minutes * 60:
        run.assert_running()
        taken = sample(run, floodfills, started)
        soaked.samples.append(taken)
        soaked.owner_errors += [h.note for h in taken.floodfills.values() if "owner" in h.note]
        if taken.gap:
            print(f"  gap at {taken.at_s:.0f}s: {describe(taken)}", flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - started - taken.at_s)))
    elapsed = time.monotonic() - started
    soaked.last_leases = set().union(*(lease_keys(ls) for ls in run.last_views.values()))
    publishes = int(run.status()["leaseSet"]["publishes"]) - first_publishes
    return {
        "elapsed_s": round(elapsed, 1),
        "publishes": publishes,
        "publishes_per_10_min": round(publishes * 600 / elapsed, 1),
        "owner_counts": asdict(run.watch.counts),
    }


def describe(taken: Sample) -> str:
    return "; ".join(f"{name}: {held.describe()}" for name, held in taken.floodfills.items())


def report(soaked: Soak, figures: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    floodfills = sorted({name for s in soaked.samples for name in s.floodfills})
    per_floodfill = {
        name: {
            "serving": sum(s.floodfills[name].serving for s in soaked.samples),
            "not_serving": sum(not s.floodfills[name].serving for s in soaked.samples),
            "min_usable_leases": min(s.floodfills[name].usable for s in soaked.samples),
            "max_leases": max(s.floodfills[name].leases for s in soaked.samples),
        }
        for name in floodfills
    }
    gaps = [
        {
            "at_s": s.at_s,
            "floodfills": {name: held.describe() for name, held in s.floodfills.items()},
        }
        for s in soaked.samples
        if s.gap
    ]
    turnover_checked = figures["elapsed_s"] >= TURNOVER_S
    kept = sorted(soaked.first_leases & soaked.last_leases)
    return {
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "parameters": {
            "minutes": args.minutes,
            "interval_s": args.interval,
            "routers": ROUTERS,
            "floodfills": FLOODFILLS,
            "hosts": HOSTS,
            "inbound": INBOUND,
            "length": LENGTH,
            "serving_rule": "a lease with more than 51 s left",
        },
        **figures,
        "samples": len(soaked.samples),
        "gaps": gaps,
        "per_floodfill": per_floodfill,
        "turnover": {
            "checked": turnover_checked,
            "leases_at_start": len(soaked.first_leases),
            "leases_at_end": len(soaked.last_leases),
            "still_held_at_end": len(kept),
        },
        "owner_errors": soaked.owner_errors,
        "sample_log": [asdict(s) for s in soaked.samples],
    }


def print_table(result: dict[str, Any]) -> None:
    print()
    print(
        f"{'floodfill':<10} {'samples':>7} {'serving':>7} {'not':>5} {'min usable':>10} {'max':>5}"
    )
    for name, row in result["per_floodfill"].items():
        print(
            f"{name:<10} {row['serving'] + row['not_serving']:>7} {row['serving']:>7} "
            f"{row['not_serving']:>5} {row['min_usable_leases']:>10} {row['max_leases']:>5}"
        )
    turnover = result["turnover"]
    print(
        f"{result['elapsed_s'] / 60:.1f} min, {result['samples']} samples, "
        f"{len(result['gaps'])} gaps (a sample where any floodfill did not serve); "
        f"{result['publishes']} publishes = {result['publishes_per_10_min']} per 10 min for "
        f"{len(HOSTS)} routers x {INBOUND} tunnels"
    )
    print(
        "lease turnover: "
        + (
            f"{turnover['still_held_at_end']} of {turnover['leases_at_start']} leases of the "
            "start still held at the end"
            if turnover["checked"]
            else f"not checked (a run shorter than {TURNOVER_S / 60:.0f} min)"
        )
    )
    print(f"lease owners by the routers' consoles: {result['owner_counts']}")
    for gap in result["gaps"]:
        print(f"  gap at {gap['at_s']:.0f}s: {gap['floodfills']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=15.0, help="sampling time (15)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    try:
        check_host()
    except TestnetError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"work directory: {work}", flush=True)
    testnet = Testnet(work / "testnet")
    soaked = Soak()
    try:
        testnet.up(routers=ROUTERS, floodfills=FLOODFILLS, timeout=300)
        document = destination_manifest("soak", testnet, HOSTS, inbound=INBOUND, length=LENGTH)
        with run_balancer(work / "balancer", testnet, document) as run:
            figures = soak(run, args.minutes, args.interval, soaked)
    finally:
        testnet.down()
    result = report(soaked, figures, args)
    print_table(result)
    path = write_results("soak", result)
    print(f"results: {path}")
    turnover = result["turnover"]
    failed = (
        bool(result["gaps"])
        or bool(result["owner_errors"])
        or not turnover["leases_at_end"]
        or (turnover["checked"] and turnover["still_held_at_end"] > 0)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
