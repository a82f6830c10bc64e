"""Runs the real `i2p-multihome operator` process against a real API server and observes it
the way a user would: kubectl, the object's status and events, the metrics port, /proc, and
the floodfills' and routers' web consoles.

Used by e2e/test_operator.py and benchmarks/bench_operator.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from e2e.balancer_run import LeaseKey, floodfill_views, manifest, valid, wait_until
from e2e.fixtures_cluster import KubeCluster
from i2p_multihome.model.v1alpha1 import GROUP, PLURAL, VERSION
from i2p_multihome_dev.processes import free_ports, stat_fields
from i2p_multihome_dev.testnet import (
    ConsoleLeaseSet,
    Testnet,
    fetch_local_destinations,
)

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "multihomeddestinations.multihome.i2p.yaml"
PEERING_CRD_FILE = ROOT / "crds" / "kopf-peering.yaml"
START_TIMEOUT = 60.0

# --------------------------------------------------------------------------- kubectl / API


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def install_crds(kubeconfig: Path, *files: Path) -> None:
    """Apply CRD files (server-side, idempotent) and wait until each is served."""
    for path in files:
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))


class Namespace:
    """One namespace of the cluster, read through the Python client, written with kubectl."""

    def __init__(self, kubeconfig: Path, name: str) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        # The kubernetes package ships no annotations for its config loader.
        self._api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = kubernetes.client.CustomObjectsApi(self._api)
        self.core = kubernetes.client.CoreV1Api(self._api)

    def create(self) -> Namespace:
        kubectl(self.kubeconfig, "create", "namespace", self.name)
        return self

    def close(self) -> None:
        self._api.close()

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, f"--namespace={self.name}", *args, stdin=stdin, check=check)

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(document))

    def mhd(self, name: str) -> dict[str, Any] | None:
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.name, PLURAL, name, _request_timeout=10
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def secret(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.core.read_namespaced_secret(
            name, self.name, _request_timeout=10
        ).to_dict()
        return found

    def events(self, involved: str | None = None) -> list[dict[str, Any]]:
        """Events in the namespace as `kubectl get events` shows them (optionally for one
        object), oldest first."""
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "events", "-o", "json").stdout
        )["items"]
        if involved is not None:
            items = [e for e in items if e["involvedObject"].get("name") == involved]
        return items

    def has_event(self, involved: str, reason: str, kind: str) -> bool:
        return any(e["reason"] == reason and e["type"] == kind for e in self.events(involved))


def new_namespace(kube: KubeCluster, purpose: str) -> Namespace:
    namespace = Namespace(kube.kubeconfig, f"op-{purpose}-{uuid.uuid4().hex[:6]}").create()
    # Established comes a moment before the resource is served in a new namespace's discovery.
    wait_until(
        "multihomeddestinations to be served",
        30,
        lambda: namespace.kubectl("get", "mhd", check=False).returncode == 0,
        interval=0.5,
    )
    return namespace


# --------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class Usage:
    """One process's resources from /proc: resident memory and CPU time so far."""

    rss_bytes: int
    cpu_s: float
    wall_s: float  # since the process started


def process_usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    )
    # utime and stime are fields 14 and 15, the start time field 22.
    rest = stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(rest[11]) + int(rest[12])) / ticks
    start_s = int(rest[19]) / ticks
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return Usage(rss_kib * 1024, cpu_s, uptime_s - start_s)


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
class OperatorProcess:
    """One `i2p-multihome operator` process and its log file."""

    label: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    liveness_url: str
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def assert_running(self) -> None:
        if not self.running():
            raise AssertionError(
                f"operator {self.label} exited with {self.process.returncode}:\n"
                + self.log_text()[-4000:]
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            with _opener().open(self.liveness_url, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with _opener().open(url, timeout=10) as response:
            body: bytes = response.read()
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the sample `name` whose labels include `labels`; None if absent."""
        found = samples(self.metrics_text(), name, **labels)
        return found[0] if found else None

    def usage(self) -> Usage:
        return process_usage(self.pid)

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 45.0) -> float:
        """Send `signum` and wait for the exit; returns the seconds it took."""
        started = time.monotonic()
        if self.running():
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"operator {self.label} ignored {signum.name} for {timeout:.0f}s"
                ) from None
        self._log.close()
        return time.monotonic() - started


def samples(text: str, name: str, **labels: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_operator(
    kubeconfig: Path,
    directory: Path,
    namespaces: Sequence[str],
    *,
    label: str = "operator",
    peering: str | None = None,
    priority: int | None = None,
    peering_lifetime: int | None = None,
    log_level: str = "INFO",
) -> OperatorProcess:
    """Start the operator as a subprocess and return once its liveness endpoint answers."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics_port, liveness_port = free_ports(2)
    liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"
    argv = [
        sys.executable, "-m", "i2p_multihome.cli", "--log-level", log_level, "operator",
        *(f"--namespace={ns}" for ns in namespaces),
        f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1",
        f"--liveness={liveness_url}",
    ]  # fmt: skip
    if peering is not None:
        argv.append(f"--peering={peering}")
    if priority is not None:
        argv.append(f"--priority={priority}")
    if peering_lifetime is not None:
        argv.append(f"--peering-lifetime={peering_lifetime}")
    log_path = directory / f"{label}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        start_new_session=True,
    )
    run = OperatorProcess(label, process, log_path, metrics_port, liveness_url, log)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not run.healthy():
            run.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"operator {label} not live after {START_TIMEOUT:.0f}s:\n"
                    + run.log_text()[-4000:]
                )
            time.sleep(0.3)
    except BaseException:
        with contextlib.suppress(AssertionError):
            run.stop(signal.SIGKILL)
        raise
    return run


@contextlib.contextmanager
def operator_running(
    kubeconfig: Path, directory: Path, namespaces: Sequence[str], **options: Any
) -> Iterator[OperatorProcess]:
    run = start_operator(kubeconfig, directory, namespaces, **options)
    try:
        yield run
    finally:
        with contextlib.suppress(AssertionError):
            run.stop()


# --------------------------------------------------------------------------- one destination


def destination_manifest(
    name: str,
    testnet: Testnet,
    routers: Sequence[str],
    inbound: int,
    length: int,
    *,
    endpoints: dict[str, tuple[str, int]] | None = None,
    **spec_extra: Any,
) -> dict[str, Any]:
    """The standalone tests' manifest; `endpoints` overrides routers' I2CP host and port."""
    document = manifest(name, testnet, routers, inbound, length, **spec_extra)
    for router in document["spec"]["routers"]:
        if endpoints and router["name"] in endpoints:
            host, port = endpoints[router["name"]]
            router["i2cp"] = {"host": host, "port": port}
    return document


@dataclass
class Destination:
    """A MultihomedDestination as seen through the API and the testnet's consoles."""

    namespace: Namespace
    name: str
    testnet: Testnet
    # Every (gateway, tunnel id) the status ever listed, with the router that built it:
    # leases stay attributable after their router died and left the status.
    owners: dict[LeaseKey, str] = field(default_factory=dict)

    def object(self) -> dict[str, Any] | None:
        return self.namespace.mhd(self.name)

    def status(self) -> dict[str, Any]:
        obj = self.object()
        status: dict[str, Any] = (obj or {}).get("status") or {}
        for tunnel in status.get("tunnels", []):
            self.owners[(tunnel["gateway"], tunnel["tunnelId"])] = tunnel["router"]
        return status

    def conditions(self, status: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        status = self.status() if status is None else status
        return {c["type"]: c for c in status.get("conditions", [])}

    def condition(self, kind: str, status: dict[str, Any] | None = None) -> str | None:
        found = self.conditions(status).get(kind)
        return None if found is None else str(found["status"])

    def wait_condition(self, kind: str, value: str, timeout: float) -> dict[str, Any]:
        """Wait until condition `kind` has status `value`; returns that status document."""

        def check() -> tuple[bool, Any]:
            status = self.status()
            found = self.conditions(status).get(kind)
            return bool(found and found["status"] == value), status if found else None

        result: dict[str, Any] = wait_for(f"{self.name}: {kind}={value}", timeout, check, 1.0)
        return result

    def routers(self, status: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        status = self.status() if status is None else status
        return {r["name"]: r for r in status.get("routers", [])}

    def b32(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b32 = self.status().get("destination", {}).get("b32")
            if b32:
                return str(b32)
            time.sleep(0.5)
        raise AssertionError(f"{self.name} has no status.destination.b32 after {timeout:.0f}s")

    def published_keys(self, status: dict[str, Any] | None = None) -> set[LeaseKey]:
        status = self.status() if status is None else status
        return {(t["gateway"], t["tunnelId"]) for t in status.get("tunnels", []) if t["published"]}

    def floodfill_views(self, b32: str | None = None) -> dict[str, ConsoleLeaseSet | None]:
        return floodfill_views(self.testnet, b32 or self.b32())

    def routers_of(self, lease_set: ConsoleLeaseSet) -> set[str]:
        self.status()
        return {
            self.owners.get((lease.gateway, lease.tunnel_id), "?") for lease in lease_set.leases
        }

    def sessions_on(self, router: str, b32: str | None = None) -> int:
        """How many I2CP sessions `router` hosts for this destination."""
        label = (b32 or self.b32()).removesuffix(".b32.i2p")
        console = self.testnet.router(router).console
        return sum(
            1
            for d in fetch_local_destinations(console)
            if d.b32 == label and d.i2cp_session is not None
        )


def wait_for(
    what: str, timeout: float, check: Callable[[], tuple[bool, Any]], interval: float = 2.0
) -> Any:
    """Poll `check()` -> (done, detail) until done; fail with `what` and the last detail."""
    deadline = time.monotonic() + timeout
    detail: Any = None
    while True:
        done, detail = check()
        if done:
            return detail
        if time.monotonic() + interval > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {detail!r}"
            )
        time.sleep(interval)


def compare_floodfills(dest: Destination, b32: str, exact: bool = True) -> tuple[bool, Any]:
    """Whether every floodfill holds a valid LeaseSet whose leases are the ones the status
    marks published (`exact`) or a subset of them; the detail says per floodfill
    (valid, leases held, of them published, not published, published but not held)."""
    published = dest.published_keys()
    detail: dict[str, Any] = {}
    ok = True
    for floodfill, lease_set in dest.floodfill_views(b32).items():
        if lease_set is None:
            detail[floodfill], ok = None, False
            continue
        held = {(lease.gateway, lease.tunnel_id) for lease in lease_set.leases}
        good = valid(lease_set) and (held == published if exact else held <= published)
        ok = ok and good
        detail[floodfill] = (
            valid(lease_set), len(held), len(held & published), len(held - published),
            len(published - held),
        )  # fmt: skip
    return ok, detail


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
