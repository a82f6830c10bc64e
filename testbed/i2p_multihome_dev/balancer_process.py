"""The real `i2p-multihome balance` command against the testnet, observed the way a user
would: its status file, the floodfills' consoles and the routers' consoles.

Used by the e2e tests and the soak benchmark.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome_dev.observe import FloodfillWatch, serving
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import ConsoleLeaseSet, Testnet, fetch_local_destinations

_STOP_TIMEOUT_S = 30.0
_LOG_TAIL = 4000


def destination_manifest(
    name: str,
    testnet: Testnet,
    routers: Sequence[str],
    inbound: int,
    length: int = 1,
    *,
    endpoints: dict[str, tuple[str, int]] | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    """A MultihomedDestination on the named testnet routers; `endpoints` overrides routers'
    I2CP host and port (e.g. an address where nothing listens)."""
    chosen = {r: (endpoints or {}).get(r, testnet.router(r).i2cp) for r in routers}
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": name},
        "spec": {
            "routers": [
                {"name": r, "i2cp": {"host": host, "port": port}}
                for r, (host, port) in chosen.items()
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
    watch: FloodfillWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = FloodfillWatch(self.testnet)

    @property
    def status_path(self) -> Path:
        return self.directory / "status.json"

    def status(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        self.watch.claim(document)
        return document

    @property
    def b32(self) -> str:
        def written() -> str | NotYet:
            # The status file outlives the process: a stopped balancer's destination is known.
            b32 = str(self.status().get("destination", {}).get("b32") or "")
            if not b32:
                self.assert_running()
            return b32 or NotYet("no destination in the status file")

        return wait_until(
            "the balancer's destination in its status file", 30, written, interval=0.5
        )

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop the balancer with `sig` (SIGTERM: a rollout; SIGKILL: a crash) and start it
        again on the same manifest and keys."""
        _stop_balancer(self.process, sig)
        self.process = _start_balancer(self.directory)

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            log = (self.directory / "balancer.log").read_text(errors="replace")[-_LOG_TAIL:]
            raise AssertionError(f"balancer exited with {self.process.returncode}:\n{log}")

    def floodfill_views(self) -> dict[str, ConsoleLeaseSet | None]:
        return self.watch.views(self.b32)

    @property
    def last_views(self) -> dict[str, ConsoleLeaseSet | None]:
        return self.watch.last_views

    def explain_floodfills(self) -> str:
        return self.watch.explain()

    def served_with(self, routers: Collection[str]) -> bool | NotYet:
        """Whether a floodfill serves the LeaseSet with leases of every one of `routers`
        (what clients need: they ask the floodfills closest to it, one after another)."""
        now = time.time()
        if any(
            serving(ls, now) and set(routers) <= self.routers_of(ls)
            for ls in self.floodfill_views().values()
            if ls is not None
        ):
            return True
        return NotYet(self.explain_floodfills())

    def routers_of(self, lease_set: ConsoleLeaseSet) -> set[str]:
        """Who built `lease_set`'s leases, the balancer's word checked against the consoles."""
        self.status()
        return self.watch.routers_of(lease_set)

    def hosted_on(self, router: str) -> bool:
        label = self.b32.removesuffix(".b32.i2p")
        console = self.testnet.router(router).console
        return any(d.b32 == label for d in fetch_local_destinations(console))


def _start_balancer(directory: Path) -> subprocess.Popen[bytes]:
    """`i2p-multihome balance` on the manifest in `directory`, appending to its log."""
    with (directory / "balancer.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable, "-m", "i2p_multihome.cli", "balance",
                "-f", str(directory / "manifest.yaml"),
                "--keys", str(directory / "keys.json"),
                "--status-file", str(directory / "status.json"),
                # Kept across `restart`, as a deployment keeps them.
                "--clients-file", str(directory / "clients.json"),
            ],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def _stop_balancer(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_balancer(
    directory: Path, testnet: Testnet, document: dict[str, Any]
) -> Iterator[BalancerRun]:
    """`i2p-multihome balance` on `document` for the `with` block; SIGTERM after it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.yaml").write_text(yaml.safe_dump(document))
    run = BalancerRun(directory, _start_balancer(directory), testnet)
    try:
        yield run
    finally:
        _stop_balancer(run.process)
