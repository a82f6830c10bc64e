"""Invisibility benchmark (not a test): can an observer of the floodfills tell a multihomed
destination from a single-homed one?

`simulate`: gateway features at real-network scale (`i2p_multihome_dev.invisibility.
simulate`): per scenario (Java fast tiers of 12, 40 and 75 peers; an i2pd pool of 3000),
destinations of four populations: `single` (one router holding all the leases, the
reference), `single-b` (another such population: the negative control, expected about 0),
`native` (today's merge, each router with its own gateways and Java randomKey: the positive
control) and `shared` (the `shared` gateway policy). Each destination-hour after the first
is a sample; a classifier cross-validated by destination reports advantage = TPR - FPR and a
one-sided 95 % bound for each population against `single`.

Prints a table and writes benchmarks/results/invisibility-<date>.json."""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import time
from typing import Any

from i2p_multihome_dev.invisibility.classify import advantage
from i2p_multihome_dev.invisibility.features import (
    FEATURE_GROUPS,
    Sample,
    hourly_samples,
)
from i2p_multihome_dev.invisibility.simulate import EPOCH_S, SIZE_RULES, Scenario, simulate
from results import write_results

TARGET_ADVANTAGE = 0.05
TARGET_UPPER95 = 0.10
POSITIVE_CONTROL_MIN = 0.8
POPULATIONS = ("single", "single-b", "native", "shared")
# The gateway group, and its lease count apart from the features that count gateways: the
# two tell different stories (how many leases a LeaseSet shows depends on when leases are
# replaced, not on which gateways they use).
GROUPS = {
    "gateway": FEATURE_GROUPS["gateway"],
    "gateways-only": tuple(f for f in FEATURE_GROUPS["gateway"] if f != "lease_count"),
    "lease-count": ("lease_count",),
}
Job = tuple[Scenario, str, int, int, str]


def _destination(job: Job) -> list[Sample]:
    scenario, population, hours, seed, rule = job
    kind = "single" if population == "single-b" else population
    observations = simulate(scenario, kind, hours, seed, SIZE_RULES[rule])  # type: ignore[arg-type]
    return hourly_samples(f"{scenario.name}-{population}-{seed}", population, observations,
                          float(EPOCH_S), hours)  # fmt: skip


def run_simulation(
    scenarios: list[Scenario], destinations: int, hours: int, seed: int, workers: int, rule: str
) -> dict[str, Any]:
    jobs: list[Job] = [
        (scenario, population, hours, seed * 1_000_003 + index * 101 + p, rule)
        for scenario in scenarios
        for p, population in enumerate(POPULATIONS)
        for index in range(destinations)
    ]
    started = time.monotonic()
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(_destination, jobs, chunksize=4)
    simulated_s = time.monotonic() - started
    samples: dict[tuple[str, str], list[Sample]] = {}
    for job, found in zip(jobs, results, strict=True):
        samples.setdefault((job[0].name, job[1]), []).extend(found)
    rows = []
    for scenario in scenarios:
        reference = samples[(scenario.name, "single")]
        for population in POPULATIONS[1:]:
            compared = samples[(scenario.name, population)]
            for group, features in GROUPS.items():
                found = advantage(compared, reference, features, seed=seed)
                rows.append(
                    {
                        "scenario": scenario.name,
                        "population": population,
                        "against": "single",
                        "group": group,
                        **found.to_json(),
                    }
                )
    return {"rows": rows, "simulated_s": round(simulated_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="gateway features at 12, 40 and 75-peer fast tiers")
    sim.add_argument("--destinations", type=int, default=30, help="per population and scenario")
    sim.add_argument("--hours", type=int, default=7, help="per destination (the first: warm-up)")
    sim.add_argument("--tiers", default="12,40,75")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--workers", type=int, default=2)
    sim.add_argument(
        "--set-size",
        choices=sorted(SIZE_RULES),
        default="per-router",
        help="how the shared set is sized (per-router: the product's rule)",
    )
    args = parser.parse_args()

    scenarios = [Scenario("java", fast_tier=int(t)) for t in args.tiers.split(",")]
    scenarios.append(Scenario("i2pd"))
    outcome = run_simulation(
        scenarios, args.destinations, args.hours, args.seed, args.workers, args.set_size
    )
    rows = outcome["rows"]
    print(
        f"{'scenario':<16} {'population':<10} {'group':<13} {'advantage':>9} {'upper95':>8} "
        f"{'model':<14} {'samples':>7}"
    )
    for row in rows:
        print(
            f"{row['scenario']:<16} {row['population']:<10} {row['group']:<13} "
            f"{row['advantage']:>9.3f} {row['upper95']:>8.3f} {row['model']:<14} "
            f"{row['samples']:>7}"
        )

    def control(population: str) -> dict[str, Any]:
        return {
            r["scenario"]: {"advantage": r["advantage"], "upper95": r["upper95"]}
            for r in rows
            if r["population"] == population and r["group"] == "gateway"
        }

    result = {
        "date": datetime.date.today().isoformat(),
        "kind": "simulator",
        "target": {
            "advantage": TARGET_ADVANTAGE,
            "upper95": TARGET_UPPER95,
            "positive_control_min": POSITIVE_CONTROL_MIN,
        },
        "parameters": {
            "destinations_per_population": args.destinations,
            "hours_per_destination": args.hours,
            "warm_up_hours": 1,
            "scenarios": [vars(s) | {"name": s.name} for s in scenarios],
            "seed": args.seed,
            "shared_set_size_rule": args.set_size,
        },
        "simulated_s": outcome["simulated_s"],
        "results": rows,
        "positive_control": control("native"),
        "negative_control": control("single-b"),
    }
    print(f"wrote {write_results('invisibility', result)}")


if __name__ == "__main__":
    main()
