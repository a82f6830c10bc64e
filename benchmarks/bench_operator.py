"""Operator footprint benchmark (not a test): memory and CPU of one operator process hosting
1, then 10, then 50 MultihomedDestinations on the same 4 i2pd routers.

Brings up its own local control plane (etcd + kube-apiserver) and a private i2pd testnet
(3 floodfills + 4 routers; root, Debian's i2pd), runs the real `i2p-multihome operator`
process, and at each level creates destinations (inbound 1 tunnel of length 0, outbound 1
of length 0, to keep router load sane: 50 destinations x 4 routers = 200 I2CP sessions),
waits until all are Ready (or a timeout, reporting how many were), then measures a quiet
window. Figures come from /proc: resident memory (VmRSS), CPU time (utime + stime) and
CPU % (CPU time over wall time) for the operator, and the same for the i2pd routers.
Everything it started is removed at the end.

Run (root): python benchmarks/bench_operator.py [--levels 1,10,50] [--ready-timeout 300]
                                               [--quiet 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from i2p_multihome_dev import cluster
from i2p_multihome_dev.balancer_process import destination_manifest
from i2p_multihome_dev.kube import Namespace, install_crds
from i2p_multihome_dev.operator_process import (
    OperatorError,
    OperatorProcess,
    samples,
    start_operator,
)
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import Usage, process_usage
from i2p_multihome_dev.repo import CRD_FILE
from i2p_multihome_dev.testnet import Testnet, fetch_local_destinations

HOSTS = ["r1", "r2", "r3", "r4"]


class NotAllReady(Exception):
    """A level's destinations were not all Ready within the timeout."""


DEFAULT_QUIET_S = 30.0


@dataclass(frozen=True)
class Level:
    destinations: int
    ready: int
    ready_s: float
    ramp_cpu_pct: float
    operator: Usage
    quiet_cpu_pct: float
    established: int
    router_sessions: int
    router_cpu_pct: float
    router_rss_mib: float
    loadavg: str


def i2pd_pids(testnet: Testnet, names: list[str]) -> dict[str, int]:
    """The i2pd process of each named router, found by its --datadir."""
    wanted = {f"--datadir={testnet.router(n).datadir}": n for n in names}
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            for arg in argv:
                name = wanted.get(arg.decode(errors="replace"))
                if name is not None:
                    found[name] = int(proc.name)
    return found


def count_ready(namespace: Namespace) -> int:
    ready = 0
    for item in namespace.mhds():
        conditions = (item.get("status") or {}).get("conditions") or []
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready


def cpu_pct(before: Usage, after: Usage, wall_s: float) -> float:
    return 100.0 * (after.cpu_s - before.cpu_s) / wall_s


def routers_usage(pids: dict[str, int]) -> dict[str, Usage]:
    return {name: process_usage(pid) for name, pid in pids.items()}


def run_level(
    namespace: Namespace,
    operator: OperatorProcess,
    testnet: Testnet,
    routers: dict[str, int],
    existing: int,
    target: int,
    ready_timeout: float,
    quiet_s: float,
) -> Level:
    start_op = operator.usage()
    started = time.monotonic()
    for index in range(existing, target):
        name = f"bench-{index:03d}"
        document = destination_manifest(name, testnet, HOSTS, inbound=1, length=0)
        document["spec"]["tunnels"]["outbound"] = {"quantity": 1, "length": 0}
        namespace.apply(document)
    ready = 0

    def all_ready() -> bool:
        nonlocal ready
        operator.assert_running()
        ready = count_ready(namespace)
        return ready >= target

    # A level that does not get Ready in time is reported with how many did.
    with contextlib.suppress(NotAllReady):
        wait_until(f"{target} Ready", ready_timeout, all_ready, error=NotAllReady)
    ready_s = time.monotonic() - started
    ramp_cpu = cpu_pct(start_op, operator.usage(), ready_s)
    # A quiet window: everything hosted, only lease renewals, status refreshes and metrics.
    quiet_op = operator.usage()
    quiet_routers = routers_usage(routers)
    time.sleep(quiet_s)
    end_op = operator.usage()
    end_routers = routers_usage(routers)
    router_cpu = sum(cpu_pct(quiet_routers[n], end_routers[n], quiet_s) for n in routers) / len(
        routers
    )
    text = operator.metrics_text()
    established = int(sum(samples(text, "i2p_multihome_sessions", state="Established")))
    per_router = {
        n: [
            d.b32
            for d in fetch_local_destinations(testnet.router(n).console)
            if d.i2cp_session is not None
        ]
        for n in HOSTS
    }
    hosted = sum(len(listed) for listed in per_router.values())
    if hosted != established:
        report_missing(namespace, per_router)
    return Level(
        destinations=target,
        ready=ready,
        ready_s=ready_s,
        ramp_cpu_pct=ramp_cpu,
        operator=end_op,
        quiet_cpu_pct=cpu_pct(quiet_op, end_op, quiet_s),
        established=established,
        router_sessions=hosted,
        router_cpu_pct=router_cpu,
        router_rss_mib=sum(u.rss_bytes for u in end_routers.values()) / len(routers) / 2**20,
        loadavg=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )


def report_missing(namespace: Namespace, per_router: dict[str, list[str]]) -> None:
    """Which destinations a router does not list although the operator reports them."""
    for item in namespace.mhds():
        status = item.get("status") or {}
        b32 = (status.get("destination") or {}).get("b32", "").removesuffix(".b32.i2p")
        for router in status.get("routers", []):
            name = router["name"]
            count = per_router[name].count(b32)
            if router["state"] == "Established" and count != 1:
                print(
                    f"  {item['metadata']['name']} Established on {name} per the operator "
                    f"(since {router.get('since')}), router lists it {count} times"
                )


def print_table(levels: list[Level], baseline: Usage, quiet_s: float) -> None:
    print()
    print(f"operator idle (0 destinations): RSS {baseline.rss_bytes / 2**20:.1f} MiB")
    header = (
        f"{'dests':>5} {'ready':>9} {'to ready':>8} {'RSS MiB':>8} {'CPU s':>7} "
        f"{'CPU% ramp':>9} {'CPU% quiet':>10} {'sessions':>8} {'on routers':>10} "
        f"{'i2pd CPU%':>9} {'i2pd MiB':>8}  loadavg"
    )
    print(header)
    for lv in levels:
        print(
            f"{lv.destinations:>5} {f'{lv.ready}/{lv.destinations}':>9} {lv.ready_s:>7.0f}s "
            f"{lv.operator.rss_bytes / 2**20:>8.1f} {lv.operator.cpu_s:>7.1f} "
            f"{lv.ramp_cpu_pct:>9.1f} {lv.quiet_cpu_pct:>10.1f} {lv.established:>8} "
            f"{lv.router_sessions:>10} {lv.router_cpu_pct:>9.1f} {lv.router_rss_mib:>8.1f}  "
            f"{lv.loadavg}"
        )
    print(
        "CPU% is of one core. 'to ready': seconds from creating the level's new objects until "
        "all objects are Ready=True. 'sessions': Established sessions the operator reports; "
        "'on routers': I2CP destinations the 4 routers list. i2pd columns: mean per router "
        f"over the {quiet_s:.0f} s quiet window (tunnels live 10 min: a window shorter "
        "than that may miss their rebuilds)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--quiet", type=float, default=DEFAULT_QUIET_S, help="seconds measured after each level"
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-operator-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {work}")
    testnet = Testnet(work / "testnet")
    operator: OperatorProcess | None = None
    results: list[Level] = []
    try:
        info, _ = cluster.up(work / "cluster")
        testnet.up(routers=7, floodfills=3, timeout=300)
        install_crds(info.kubeconfig, CRD_FILE)
        namespace = Namespace(info.kubeconfig, f"bench-{uuid.uuid4().hex[:6]}").create()
        routers = i2pd_pids(testnet, HOSTS)
        operator = start_operator(info.kubeconfig, work / "operator.log", [namespace.name])
        time.sleep(5)
        baseline = operator.usage()
        existing = 0
        for target in levels:
            level = run_level(
                namespace, operator, testnet, routers, existing, target, args.ready_timeout,
                args.quiet,
            )  # fmt: skip
            existing = target
            results.append(level)
            print(
                f"{target} destinations: {level.ready} Ready after {level.ready_s:.0f}s; "
                f"RSS {level.operator.rss_bytes / 2**20:.1f} MiB, "
                f"CPU {level.operator.cpu_s:.1f}s total, "
                f"{level.quiet_cpu_pct:.1f}% quiet; load {level.loadavg}",
                flush=True,
            )
        print_table(results, baseline, args.quiet)
        errors = operator.log_text().count(" ERROR ")
        warnings = operator.log_text().count(" WARNING ")
        print(f"operator log: {errors} ERROR lines, {warnings} WARNING lines")
        for name in HOSTS:
            log = testnet.log_file(name)
            if log.exists():
                text = log.read_text(errors="replace")
                print(f"{name} i2pd log: {text.count('error')} lines with 'error'")
    finally:
        if operator is not None:
            with contextlib.suppress(OperatorError):
                operator.stop()
        testnet.down()
        cluster.down(work / "cluster")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_operator needs root (the i2pd testnet uses network namespaces)")
    sys.exit(main())
