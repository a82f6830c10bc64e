"""Runs the real `i2p-multihome balance` command against the testnet and observes it the way
a user would: its status file, and the floodfills' web consoles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome_dev.testnet import (
    ConsoleLeaseSet,
    Testnet,
    fetch_leasesets,
    fetch_local_destinations,
)

LeaseKey = tuple[str, int]  # (gateway base64, tunnel id)


def manifest(
    name: str,
    testnet: Testnet,
    routers: Sequence[str],
    inbound: int,
    length: int = 1,
    **spec_extra: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": name},
        "spec": {
            "routers": [
                {
                    "name": r,
                    "i2cp": {
                        "host": testnet.router(r).i2cp[0],
                        "port": testnet.router(r).i2cp[1],
                    },
                }
                for r in routers
            ],
            "tunnels": {
                "inbound": {"quantity": inbound, "length": length},
                "outbound": {"quantity": 2, "length": length},
            },
            **spec_extra,
        },
    }


@dataclass
class BalancerRun:
    """One balancer process plus what has been learned from watching it."""

    directory: Path
    process: subprocess.Popen[bytes]
    testnet: Testnet
    # Every (gateway, tunnel id) ever reported, with the router that built it: leases stay
    # attributable after their router died and vanished from the status.
    owners: dict[LeaseKey, str] = field(default_factory=dict)
    last_views: dict[str, ConsoleLeaseSet | None] = field(default_factory=dict)

    @property
    def status_path(self) -> Path:
        return self.directory / "status.json"

    def status(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        for tunnel in document.get("tunnels", []):
            self.owners[(tunnel["gateway"], tunnel["tunnelId"])] = tunnel["router"]
        return document

    @property
    def b32(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            b32 = self.status().get("destination", {}).get("b32")
            if b32:
                return str(b32)
            self.assert_running()
            time.sleep(0.5)
        raise AssertionError("balancer wrote no destination to its status file in 30 s")

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            log = (self.directory / "balancer.log").read_text(errors="replace")[-4000:]
            raise AssertionError(f"balancer exited with {self.process.returncode}:\n{log}")

    def floodfill_views(self) -> dict[str, ConsoleLeaseSet | None]:
        self.last_views = floodfill_views(self.testnet, self.b32)
        return self.last_views

    def explain_floodfills(self) -> str:
        """What each floodfill held at the last look, for a timeout's message: tells a lost
        flood (one floodfill holds nothing) from a LeaseSet that lacks a router's leases."""
        parts = []
        for floodfill, lease_set in sorted(self.last_views.items()):
            if lease_set is None:
                parts.append(f"{floodfill}: nothing")
                continue
            routers = ",".join(sorted(self.routers_of(lease_set)))
            state = "valid" if valid(lease_set) else "NOT valid"
            parts.append(
                f"{floodfill}: {state}, {len(lease_set.leases)} leases from {routers}, "
                f"expires {lease_set.expires}"
            )
        return "; ".join(parts) or "no floodfill looked at yet"

    def routers_of(self, lease_set: ConsoleLeaseSet) -> set[str]:
        self.status()
        return {
            self.owners.get((lease.gateway, lease.tunnel_id), "?") for lease in lease_set.leases
        }

    def hosted_on(self, router: str) -> bool:
        label = self.b32.removesuffix(".b32.i2p")
        console = self.testnet.router(router).console
        return any(d.b32 == label for d in fetch_local_destinations(console))


def floodfill_views(testnet: Testnet, b32: str) -> dict[str, ConsoleLeaseSet | None]:
    """Each floodfill's stored LeaseSet for destination `b32` (None: it holds none)."""
    label = b32.removesuffix(".b32.i2p")
    views: dict[str, ConsoleLeaseSet | None] = {}
    for router in testnet.routers:
        if router.floodfill:
            found = [ls for ls in fetch_leasesets(router.console) if ls.b32 == label]
            views[router.name] = found[0] if found else None
    return views


def valid(lease_set: ConsoleLeaseSet | None) -> bool:
    return (
        lease_set is not None
        and not lease_set.expired
        and not lease_set.invalid
        and (lease_set.non_expired_leases or 0) > 0
    )


@contextmanager
def run_balancer(
    directory: Path, testnet: Testnet, document: dict[str, Any]
) -> Iterator[BalancerRun]:
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(document))
    log = (directory / "balancer.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "i2p_multihome.cli", "balance",
            "-f", str(manifest_path),
            "--keys", str(directory / "keys.json"),
            "--status-file", str(directory / "status.json"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    run = BalancerRun(directory, process, testnet)
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def wait_until(
    what: str,
    timeout: float,
    check: Any,
    interval: float = 2.0,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `check()` until it returns something truthy; fail with `what`, the last value
    and, when given, `explain()`'s account of the state."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    detail = f"; {explain()}" if explain is not None else ""
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{detail}"
    )
