"""Data-plane benchmark (not a test): one stream's throughput and time to first byte through
the multihomed destination, beside an i2pd server tunnel serving the same backend, in one run.

Brings up its own private i2pd testnet (9 routers, 3 floodfills; root, Debian's i2pd). One
HTTP backend (`i2p_multihome_dev.backends.HttpBackend`: GET / is a 110-byte page, GET /file
1 MiB) serves two destinations:

- multihomed: the real `i2p-multihome balance` on r1..r4 (3 inbound tunnels of length 1
  each), `spec.ports` port 0 to the backend;
- single-homed: an i2pd server tunnel on r1 (i2pd's own streaming, same tunnel settings).

A SAM client on r5 (a router hosting neither) fetches from both in alternation, one stream
at a time: `--pages` GETs of the page (time to first byte) and `--files` GETs of the 1 MiB
file (throughput: bytes over the time from the connection's start to the last byte). The
first fetch of each destination (LeaseSet lookup, new end-to-end session) is a warm-up and
not counted. The balancer's CPU time over the measured fetches comes from /proc.

Prints a table, writes JSON to benchmarks/results/dataplane-DATE.json, exits 1 when a fetch
failed. Everything it started is removed.

Run (root): python benchmarks/bench_dataplane.py [--pages 30] [--files 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import multihomed_served, percentile, single_served, testnet_version, wait_served
from i2p_multihome_dev.backends import FILE_PATH, INDEX_PAGE, INDEX_PATH, HttpBackend
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.clients import HttpResponse, http_via_sam
from i2p_multihome_dev.processes import process_usage
from i2p_multihome_dev.sam import StreamSession, stream_session
from i2p_multihome_dev.testnet import Testnet, TestnetError, check_host
from results import write_results

ROUTERS = 9
FLOODFILLS = 3
HOSTS = ["r1", "r2", "r3", "r4"]
SINGLE_HOST = "r1"
CLIENT = "r5"
INBOUND = 3
LENGTH = 1
FETCH_TIMEOUT_S = 120.0
MIB = 1 << 20
TARGETS = ("multihomed", "single-homed")


async def fetch(session: StreamSession, b32: str, path: str) -> HttpResponse | str:
    try:
        return await http_via_sam(session, b32, path, timeout_s=FETCH_TIMEOUT_S)
    except Exception as exc:  # a failed fetch is a result to report
        return repr(exc)


async def measure(
    testnet: Testnet,
    targets: dict[str, str],
    backend: HttpBackend,
    run: BalancerRun,
    pages: int,
    files: int,
) -> dict[str, Any]:
    sessions = {
        name: await stream_session(testnet.router(CLIENT).sam) for name in targets
    }  # one client destination per target: their end-to-end sessions stay apart
    figures: dict[str, dict[str, Any]] = {
        name: {"page_ttfb_s": [], "file_s": [], "file_ttfb_s": [], "failures": []}
        for name in targets
    }
    try:
        for name, b32 in targets.items():
            warm = await fetch(sessions[name], b32, INDEX_PATH)
            if not isinstance(warm, HttpResponse):
                figures[name]["failures"].append(f"warm-up: {warm}")
        cpu_before = process_usage(run.process.pid).cpu_s
        wall_before = time.monotonic()
        for path, count, key in ((INDEX_PATH, pages, "page"), (FILE_PATH, files, "file")):
            for i in range(count):
                # Alternate which goes first, so neither always meets a busier network.
                order = list(targets) if i % 2 == 0 else list(reversed(targets))
                for name in order:
                    response = await fetch(sessions[name], targets[name], path)
                    fig = figures[name]
                    if not isinstance(response, HttpResponse):
                        fig["failures"].append(f"{path} #{i}: {response}")
                        continue
                    expected = INDEX_PAGE if path == INDEX_PATH else backend.content
                    if response.status != 200 or response.body != expected:
                        fig["failures"].append(
                            f"{path} #{i}: HTTP {response.status}, {len(response.body)} bytes, "
                            f"sha256 {hashlib.sha256(response.body).hexdigest()[:12]}"
                        )
                        continue
                    if key == "page":
                        fig["page_ttfb_s"].append(response.first_byte_s)
                    else:
                        fig["file_s"].append(response.total_s)
                        fig["file_ttfb_s"].append(response.first_byte_s)
        cpu_s = process_usage(run.process.pid).cpu_s - cpu_before
        wall_s = time.monotonic() - wall_before
    finally:
        for session in sessions.values():
            await session.close()
    rows: dict[str, Any] = {}
    for name, fig in figures.items():
        throughputs = [MIB / s / MIB for s in fig["file_s"]]
        rows[name] = {
            "pages_ok": len(fig["page_ttfb_s"]),
            "files_ok": len(fig["file_s"]),
            "page_ttfb_median_s": statistics.median(fig["page_ttfb_s"])
            if fig["page_ttfb_s"]
            else None,
            "page_ttfb_p90_s": percentile(fig["page_ttfb_s"], 0.9) if fig["page_ttfb_s"] else None,
            "file_ttfb_median_s": statistics.median(fig["file_ttfb_s"])
            if fig["file_ttfb_s"]
            else None,
            "file_throughput_median_mib_s": statistics.median(throughputs) if throughputs else None,
            "file_throughput_min_mib_s": min(throughputs) if throughputs else None,
            "failures": fig["failures"],
            "samples": {k: fig[k] for k in ("page_ttfb_s", "file_s", "file_ttfb_s")},
        }
    multihomed_mib = len(figures["multihomed"]["file_s"]) + pages * len(INDEX_PAGE) / MIB
    return {
        "targets": rows,
        "balancer": {
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "cpu_share_of_one_core": cpu_s / wall_s if wall_s else None,
            "cpu_s_per_mib": cpu_s / multihomed_mib if multihomed_mib else None,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    def show(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print()
    print(
        f"{'destination':<14} {'pages ok':>8} {'page TTFB med':>13} {'p90':>6} "
        f"{'files ok':>8} {'1 MiB TTFB med':>14} {'MiB/s med':>9} {'MiB/s min':>9}"
    )
    for name, row in result["targets"].items():
        print(
            f"{name:<14} {row['pages_ok']:>8} {show(row['page_ttfb_median_s']):>13} "
            f"{show(row['page_ttfb_p90_s']):>6} {row['files_ok']:>8} "
            f"{show(row['file_ttfb_median_s']):>14} "
            f"{show(row['file_throughput_median_mib_s'], 2):>9} "
            f"{show(row['file_throughput_min_mib_s'], 2):>9}"
        )
    balancer = result["balancer"]
    print(
        f"balancer CPU: {balancer['cpu_s']:.1f} s over {balancer['wall_s']:.0f} s of fetching "
        f"({100 * balancer['cpu_share_of_one_core']:.1f}% of one core; "
        f"{show(balancer['cpu_s_per_mib'])} s per MiB served)"
    )
    for name, row in result["targets"].items():
        for failure in row["failures"]:
            print(f"  {name} failed: {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=30, help="page GETs per destination (30)")
    parser.add_argument("--files", type=int, default=20, help="1 MiB GETs per destination (20)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    try:
        check_host()
    except TestnetError as exc:
        print(f"bench_dataplane: {exc}", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-dataplane-"))
    print(f"work directory: {work}", flush=True)
    testnet = Testnet(work / "testnet")
    started = datetime.datetime.now(datetime.UTC)
    try:
        testnet.up(routers=ROUTERS, floodfills=FLOODFILLS, timeout=300)
        with HttpBackend(testnet.bridge_address) as backend:
            host, port = backend.address
            ports = [{"name": "web", "port": 0, "backend": {"host": host, "port": port}}]
            document = destination_manifest(
                "bench", testnet, HOSTS, inbound=INBOUND, length=LENGTH, ports=ports
            )
            options = {
                "inbound.quantity": str(INBOUND),
                "inbound.length": str(LENGTH),
                "outbound.quantity": str(INBOUND),
                "outbound.length": str(LENGTH),
            }
            single_b32 = testnet.add_server_tunnel(SINGLE_HOST, "single", host, port, options)
            with run_balancer(work / "balancer", testnet, document) as run:
                multihomed_s = wait_served(
                    "the multihomed destination to be served", lambda: multihomed_served(run, HOSTS)
                )
                single_s = wait_served(
                    "the single-homed destination to be served",
                    lambda: single_served(testnet, single_b32),
                )
                targets = {"multihomed": run.b32, "single-homed": single_b32}
                measured = asyncio.run(
                    measure(testnet, targets, backend, run, args.pages, args.files)
                )
    finally:
        testnet.down()
    result = {
        "benchmark": "dataplane",
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "parameters": {
            "routers": ROUTERS,
            "floodfills": FLOODFILLS,
            "hosts": HOSTS,
            "single_host": SINGLE_HOST,
            "client": CLIENT,
            "inbound": INBOUND,
            "length": LENGTH,
            "pages": args.pages,
            "files": args.files,
            "page_bytes": len(INDEX_PAGE),
            "file_bytes": MIB,
            "i2pd": testnet_version(),
        },
        "served_after_s": {"multihomed": multihomed_s, "single-homed": single_s},
        **measured,
    }
    print_table(result)
    path = write_results("dataplane", result)
    print(f"results: {path}")
    failed = any(row["failures"] for row in result["targets"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
