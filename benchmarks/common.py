"""What the data-plane benchmarks share: waiting until a destination is served, percentiles,
client affinity in a manifest, and the i2pd version they ran against."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Collection
from typing import Any

from i2p_multihome_dev.balancer_process import BalancerRun
from i2p_multihome_dev.observe import floodfill_views, serving
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import ConsoleLeaseSet, Testnet
from i2p_multihome_dev.testnet.console import fetch_leasesets

SERVED_TIMEOUT_S = 300.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_served(description: str, check: Callable[[], bool | NotYet]) -> float:
    """Wait until `check` passes; how long that took."""
    started = time.monotonic()
    wait_until(description, SERVED_TIMEOUT_S, check, interval=2.0)
    return time.monotonic() - started


def multihomed_served(run: BalancerRun, hosts: Collection[str]) -> bool | NotYet:
    """A floodfill serves the balancer's LeaseSet with leases of every one of `hosts`."""
    return run.served_with(hosts)


def single_served(testnet: Testnet, b32: str) -> bool | NotYet:
    """A floodfill serves the LeaseSet of `b32` (an i2pd-hosted destination)."""
    now = time.time()
    views = floodfill_views(testnet, b32)
    return any(serving(v, now) for v in views.values() if v is not None) or NotYet(
        f"no floodfill serves {b32}"
    )


def testnet_version() -> str:
    done = subprocess.run(["i2pd", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def with_affinity(document: dict[str, Any], testnet: Testnet, publisher: str) -> dict[str, Any]:
    """`document` under leaseSet.clientAffinity: its routers serve (publish: false) and the
    testnet router `publisher` joins them to publish only."""
    spec = document["spec"]
    host, port = testnet.router(publisher).i2cp
    serving = [{**router, "publish": False} for router in spec["routers"]]
    publishing = {"name": publisher, "i2cp": {"host": host, "port": port}, "publish": True}
    return {
        **document,
        "spec": {**spec, "routers": [*serving, publishing], "leaseSet": {"clientAffinity": True}},
    }


def floodfill_lease_sets(
    testnet: Testnet, labels: list[str]
) -> dict[str, dict[str, ConsoleLeaseSet | None]]:
    """Each floodfill's LeaseSet of each destination (b32 label without ".b32.i2p"), one
    console page per floodfill: {label: {floodfill: lease set or None}}."""
    views: dict[str, dict[str, ConsoleLeaseSet | None]] = {label: {} for label in labels}
    for router in testnet.routers:
        if router.floodfill:
            stored = {ls.b32: ls for ls in fetch_leasesets(router.console)}
            for label in labels:
                views[label][router.name] = stored.get(label)
    return views


def routers_by_gateway(testnet: Testnet, names: list[str]) -> dict[str, str]:
    """Router identity hash (as the consoles show a lease's gateway) -> router name: with
    zero-hop inbound tunnels a lease's gateway is the router that built it."""
    return {testnet.identity_hash(name): name for name in names}
