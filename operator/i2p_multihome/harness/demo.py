"""`i2p-multihome demo`: the main job on an embedded default. A private i2pd testnet on this
machine, one destination multihomed on four of its routers by the standalone balancer, and
what the floodfills hold, printed. Safe to run twice; `demo down` removes everything."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome.harness.testnet import Testnet, TestnetError, fetch_leasesets

HOSTS = ("r1", "r2", "r3", "r4")
READY_TIMEOUT_S = 240.0


def _testnet_alive(testnet: Testnet) -> bool:
    try:
        return all(testnet.is_running(r.name) for r in testnet.routers)
    except TestnetError:
        return False


def _balancer_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "balancer.pid").read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _manifest(testnet: Testnet) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": "demo"},
        "spec": {
            "routers": [
                {"name": name, "i2cp": {"host": testnet.router(name).address, "port": 7654}}
                for name in HOSTS
            ],
            "tunnels": {
                "inbound": {"quantity": 3, "length": 1},
                "outbound": {"quantity": 2, "length": 1},
            },
        },
    }


def demo_up(directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    testnet = Testnet(directory / "testnet")
    if _testnet_alive(testnet):
        print("demo: reusing the running testnet", file=sys.stderr)
    else:
        print(
            "demo: starting a private testnet of 9 i2pd routers (about a minute)", file=sys.stderr
        )
        testnet.down()
        testnet.up(9, 3)
    if _balancer_pid(directory) is None:
        manifest = directory / "manifest.yaml"
        manifest.write_text(yaml.safe_dump(_manifest(testnet), sort_keys=False))
        with (directory / "balancer.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "i2p_multihome.cli", "balance",
                    "-f", str(manifest),
                    "--keys", str(directory / "keys.json"),
                    "--status-file", str(directory / "status.json"),
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        (directory / "balancer.pid").write_text(str(process.pid))
        print(f"demo: balancer started (pid {process.pid}, log {log.name})", file=sys.stderr)
    else:
        print("demo: reusing the running balancer", file=sys.stderr)
    return _wait_ready(directory, testnet)


def _wait_ready(directory: Path, testnet: Testnet) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = _read_status(directory)
        views = _floodfill_views(testnet, status)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        if ready and views and all(v["nonExpiredLeases"] for v in views.values()):
            return {"status": status, "floodfills": views}
        if _balancer_pid(directory) is None:
            raise TestnetError(f"the balancer exited; see {directory / 'balancer.log'}")
        if time.monotonic() > deadline:
            raise TestnetError(f"not Ready after {READY_TIMEOUT_S:.0f}s; see {directory}")
        time.sleep(3)


def _read_status(directory: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads((directory / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return document


def _floodfill_views(testnet: Testnet, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    b32 = status.get("destination", {}).get("b32", "").removesuffix(".b32.i2p")
    owners = {(t["gateway"], t["tunnelId"]): t["router"] for t in status.get("tunnels", [])}
    views = {}
    for router in testnet.routers:
        if not router.floodfill or not b32:
            continue
        for lease_set in fetch_leasesets(router.console):
            if lease_set.b32 == b32:
                views[router.name] = {
                    "nonExpiredLeases": lease_set.non_expired_leases,
                    "routers": sorted(
                        {owners.get((x.gateway, x.tunnel_id), "?") for x in lease_set.leases}
                    ),
                }
    return views


def _print_summary(result: dict[str, Any]) -> None:
    status, views = result["status"], result["floodfills"]
    lease_set = status["leaseSet"]
    print(f"destination  {status['destination']['b32']}")
    print(
        f"LeaseSet     {lease_set['leases']} leases from {', '.join(lease_set['routers'])}; "
        f"published {lease_set['published']}, expires {lease_set['expires']}"
    )
    print(f"{'ROUTER':<8} {'STATE':<12} {'LEASES':>6}  VERSION")
    for router in status["routers"]:
        print(
            f"{router['name']:<8} {router['state']:<12} {router['leases']:>6}  "
            f"{router.get('version', '')}"
        )
    print("floodfills hold:")
    for name, view in sorted(views.items()):
        print(
            f"  {name}: {view['nonExpiredLeases']} non-expired leases "
            f"from {', '.join(view['routers'])}"
        )


def demo_down(directory: Path) -> None:
    pid = _balancer_pid(directory)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            if _balancer_pid(directory) is None:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    (directory / "balancer.pid").unlink(missing_ok=True)
    Testnet(directory / "testnet").down()


def _command(args: argparse.Namespace) -> int:
    try:
        if args.demo_command == "up":
            _print_summary(demo_up(args.dir))
        else:
            demo_down(args.dir)
    except (TestnetError, OSError) as exc:
        print(f"i2p-multihome demo: {exc}", file=sys.stderr)
        return 2
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="multihome a destination on a local testnet")
    commands = parser.add_subparsers(dest="demo_command", required=True)
    for name, text in (("up", "start (or reuse) and wait for Ready"), ("down", "remove all")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, required=True, help="demo state directory")
        sub.set_defaults(func=_command)
