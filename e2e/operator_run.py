"""What the operator e2e tests observe beyond what the test bed offers: one
MultihomedDestination through the API and the testnet's consoles, the operator's TCP peers,
and every spelling of key material a log might leak.

The operator process itself, kubectl and the namespace helper live in the test bed
(`i2p_multihome_dev.operator_process`, `i2p_multihome_dev.kube`), shared with the demo and
benchmarks/bench_operator.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.fixtures_cluster import KubeCluster
from i2p_multihome_dev.kube import Namespace
from i2p_multihome_dev.observe import FloodfillWatch, LeaseKey, lease_keys, serving
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import ConsoleLeaseSet, Testnet, fetch_local_destinations


def new_namespace(kube: KubeCluster, purpose: str) -> Namespace:
    """A namespace of one test's own (left behind: no namespace controller runs here)."""
    return Namespace(kube.kubeconfig, f"op-{purpose}-{uuid.uuid4().hex[:6]}").create()


def tcp_peers(pid: int) -> set[tuple[str, int]]:
    """Remote (address, port) of every established IPv4 TCP connection `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    peers = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        remote, state, inode = parts[2], parts[3], parts[9]
        if inode in inodes and state == "01":  # ESTABLISHED
            address_hex, port_hex = remote.split(":")
            address = socket.inet_ntoa(bytes.fromhex(address_hex)[::-1])
            peers.add((address, int(port_hex, 16)))
    return peers


@dataclass
class Destination:
    """A MultihomedDestination as seen through the API and the testnet's consoles."""

    namespace: Namespace
    name: str
    testnet: Testnet
    watch: FloodfillWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = FloodfillWatch(self.testnet)

    def object(self) -> dict[str, Any] | None:
        return self.namespace.mhd(self.name)

    def status(self) -> dict[str, Any]:
        obj = self.object()
        status: dict[str, Any] = (obj or {}).get("status") or {}
        self.watch.claim(status)
        return status

    def conditions(self, status: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        status = self.status() if status is None else status
        return {c["type"]: c for c in status.get("conditions", [])}

    def condition(self, kind: str, status: dict[str, Any] | None = None) -> str | None:
        found = self.conditions(status).get(kind)
        return None if found is None else str(found["status"])

    def wait_condition(self, kind: str, value: str, timeout: float) -> dict[str, Any]:
        """Wait until condition `kind` has status `value`; returns that status document."""

        def check() -> dict[str, Any] | NotYet:
            status = self.status()
            found = self.conditions(status).get(kind)
            return status if found and found["status"] == value else NotYet(found)

        return wait_until(f"{self.name}: {kind}={value}", timeout, check, interval=1.0)

    def routers(self, status: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        status = self.status() if status is None else status
        return {r["name"]: r for r in status.get("routers", [])}

    def b32(self, timeout: float = 60.0) -> str:
        def written() -> str | NotYet:
            return str(self.status().get("destination", {}).get("b32") or "") or NotYet(
                "no status.destination.b32"
            )

        return wait_until(f"{self.name}'s destination", timeout, written, interval=0.5)

    def published_keys(self, status: dict[str, Any] | None = None) -> set[LeaseKey]:
        status = self.status() if status is None else status
        return {(t["gateway"], t["tunnelId"]) for t in status.get("tunnels", []) if t["published"]}

    def floodfill_views(self, b32: str | None = None) -> dict[str, ConsoleLeaseSet | None]:
        return self.watch.views(b32 or self.b32())

    def routers_of(self, lease_set: ConsoleLeaseSet) -> set[str]:
        """Who built `lease_set`'s leases, the operator's word checked against the consoles."""
        self.status()
        return self.watch.routers_of(lease_set)

    def sessions_on(self, router: str, b32: str | None = None) -> int:
        """How many I2CP sessions `router` hosts for this destination."""
        label = (b32 or self.b32()).removesuffix(".b32.i2p")
        console = self.testnet.router(router).console
        return sum(
            1
            for d in fetch_local_destinations(console)
            if d.b32 == label and d.i2cp_session is not None
        )


def compare_floodfills(dest: Destination, b32: str, exact: bool = True) -> dict[str, Any] | NotYet:
    """Every floodfill serves a LeaseSet whose leases are the ones the status marks
    published (`exact`) or a subset of them. Not yet: per floodfill (serving, leases held,
    of them published, not published, published but not held)."""
    published = dest.published_keys()
    now = time.time()
    detail: dict[str, Any] = {}
    ok = True
    for floodfill, lease_set in dest.floodfill_views(b32).items():
        if lease_set is None:
            detail[floodfill], ok = None, False
            continue
        held = lease_keys(lease_set)
        good = serving(lease_set, now) and (held == published if exact else held <= published)
        ok = ok and good
        detail[floodfill] = (
            serving(lease_set, now), len(held), len(held & published), len(held - published),
            len(published - held),
        )  # fmt: skip
    return detail if ok else NotYet(detail)


# --------------------------------------------------------------------------- key material


def key_material_forms(secret: dict[str, Any]) -> dict[str, str]:
    """Every spelling of the Secret's private keys a careless log line might contain:
    the Secret's own base64 value, and each private field in I2P/standard/URL-safe base64,
    hex and base32. Keyed by a description for the failure message."""
    data = secret["data"]
    forms = {f"Secret data {key}": value for key, value in data.items()}
    document = json.loads(base64.b64decode(data["keys.json"]))
    for field_name in ("signingPrivateKey", "encryptionPrivateKey"):
        text = document[field_name]
        raw = base64.b64decode(text.replace("-", "+").replace("~", "/"))
        assert len(raw) == 32, f"{field_name} is not 32 bytes"
        std = base64.b64encode(raw).decode()
        for label, form in {
            "i2p-base64": text,
            "base64": std,
            "urlsafe-base64": base64.urlsafe_b64encode(raw).decode(),
            "hex": raw.hex(),
            "base32": base64.b32encode(raw).decode().rstrip("="),
        }.items():
            # Without padding too; the first 40 characters catch truncated or wrapped copies.
            forms[f"{field_name} {label}"] = form.rstrip("=")[:40]
    return forms


def find_key_material(texts: dict[str, str], forms: dict[str, str]) -> list[str]:
    """Which forms occur in which texts (case-insensitive for hex and base32)."""
    found = []
    for where, text in texts.items():
        lowered = text.lower()
        for what, form in forms.items():
            if form in text or (("hex" in what or "base32" in what) and form.lower() in lowered):
                found.append(f"{what} in {where}")
    return found
