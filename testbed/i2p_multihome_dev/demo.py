"""`i2p-multihome-dev demo`: the main job on an embedded default, the way a cluster runs it.

A private i2pd testnet and a local Kubernetes control plane on this machine; the Helm chart
installed into it (CRD, ServiceAccount, RBAC); the operator as a background process holding
only the chart ServiceAccount's credentials (no kubelet runs here, so its Pod never starts);
the example MultihomedDestination applied with routers r1..r4 of the testnet and its ports
served by an HTTP server and a UDP echo on this machine; then, once it is Ready and every
floodfill serves it with leases of at least two routers, `kubectl get mhd -o wide`, what the
floodfills hold, and its page fetched through the SAM bridge of a router that does not host it.

`demo up` is idempotent (a second run reuses the testnet, control plane and operator that
still run, and re-applies the chart and the example); `demo down` stops the operator (which
destroys its I2CP sessions), the backends, the control plane and the testnet, leaving no
process, network namespace or listening port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome_dev import cluster, toolchain
from i2p_multihome_dev.backends import INDEX_PATH
from i2p_multihome_dev.clients import HttpClientError, HttpResponse, http_via_sam
from i2p_multihome_dev.kube import KubectlError, helm_install, kubectl, service_account_kubeconfig
from i2p_multihome_dev.observe import FloodfillWatch, LeaseOwnerError, serving
from i2p_multihome_dev.operator_process import OperatorError, OperatorProcess, start_operator
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.processes import (
    port_open,
    process_alive,
    spawn_detached,
    start_ticks,
    stop_process_group,
)
from i2p_multihome_dev.repo import CHART_DIR, EXAMPLES_DIR
from i2p_multihome_dev.sam import SamError, stream_session
from i2p_multihome_dev.statefile import load_state, save_state
from i2p_multihome_dev.testnet import I2CP_PORT, Testnet, TestnetError

HOSTS = ("r1", "r2", "r3", "r4")
CLIENT_ROUTER = "r5"  # fetches the demo page through its SAM bridge; hosts nothing
FETCH_TIMEOUT_S = 180.0
RELEASE = "i2p-multihome"
RELEASE_NAMESPACE = "i2p-multihome"
# The chart names its ServiceAccount after the release's full name, which is the release
# name when that already contains the chart's name.
SERVICE_ACCOUNT = RELEASE
DEMO_NAMESPACE = "demo"
READY_TIMEOUT_S = 300.0
READY_POLL_S = 3.0
TOKEN_SECONDS = 7 * 24 * 3600
EXAMPLE = EXAMPLES_DIR / "multihomed-destination.yaml"
_STATE_FILE = "demo.json"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where to look."""


def example_manifest(
    addresses: dict[str, str],
    name: str = "demo",
    backends: DemoBackends | None = None,
) -> dict[str, Any]:
    """examples/multihomed-destination.yaml with its routers pointed at testnet routers.

    `addresses` maps testnet router names to their I2CP hosts, in the order the example's
    routers are replaced (their publish settings are kept); the example's routers beyond
    those are left out. With `backends`, every Stream port is served by its HTTP server and
    every Datagram port by its UDP echo (no cluster DNS resolves the example's Services here).
    """
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    routers = manifest["spec"]["routers"][: len(addresses)]
    if len(addresses) > len(routers):
        raise DemoError(f"{EXAMPLE} has only {len(routers)} routers, not {len(addresses)}")
    manifest["spec"]["routers"] = routers
    for router, (router_name, host) in zip(routers, addresses.items(), strict=True):
        router["name"] = router_name
        router["i2cp"] = {"host": host, "port": I2CP_PORT}
    manifest["metadata"] = {"name": name}
    manifest["spec"]["keys"] = {"secretRef": {"name": f"{name}-keys"}}
    if backends is not None:
        for port in manifest["spec"].get("ports", []):
            stream = port.get("protocol", "Stream") == "Stream"
            port["backend"] = {
                "host": backends.host,
                "port": backends.http_port if stream else backends.udp_port,
            }
    return manifest


@dataclass(frozen=True)
class DemoBackends:
    """The HTTP server and UDP echo (`python3 -m i2p_multihome_dev.backends`) behind the
    demo destination, a background process listening on the testnet's bridge address."""

    pid: int
    start_ticks: int
    host: str
    http_port: int
    udp_port: int

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DemoBackends:
        return cls(
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            host=str(raw["host"]),
            http_port=int(raw["http_port"]),
            udp_port=int(raw["udp_port"]),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def running(self) -> bool:
        return process_alive(self.pid, self.start_ticks) and port_open(self.http_port, self.host)

    def stop(self) -> None:
        stop_process_group(self.pid, self.start_ticks, term_grace_s=10.0)


def _free_port(host: str, kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_backends(host: str, log_path: Path) -> DemoBackends:
    """Start the demo backends on `host`; return once the HTTP server accepts."""
    http_port, udp_port = _free_port(host, socket.SOCK_STREAM), _free_port(host, socket.SOCK_DGRAM)
    argv = [
        sys.executable, "-m", "i2p_multihome_dev.backends",
        "--host", host, "--http-port", str(http_port), "--udp-port", str(udp_port),
    ]  # fmt: skip
    pid = spawn_detached(argv, log_path)
    backends = DemoBackends(pid, start_ticks(pid), host, http_port, udp_port)
    wait_until(
        f"the demo backends to listen on {host}:{http_port}",
        30.0,
        lambda: port_open(http_port, host) or NotYet(f"see {log_path}"),
        interval=0.2,
        error=DemoError,
    )
    return backends


@dataclass(frozen=True)
class DemoState:
    """Contents of DIR/demo.json: the operator and backends `demo up` left running."""

    operator: OperatorProcess
    backends: DemoBackends | None = None

    @classmethod
    def load(cls, directory: Path) -> DemoState | None:
        return load_state(
            directory / _STATE_FILE,
            lambda raw: cls(
                OperatorProcess.from_json(raw["operator"]),
                DemoBackends.from_json(raw["backends"]) if raw.get("backends") else None,
            ),
            DemoError,
        )

    def save(self, directory: Path) -> None:
        document: dict[str, Any] = {"operator": self.operator.to_json()}
        if self.backends is not None:
            document["backends"] = self.backends.to_json()
        save_state(directory / _STATE_FILE, document)


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def _testnet_alive(testnet: Testnet) -> bool:
    try:
        return all(testnet.is_running(r.name) for r in testnet.routers)
    except TestnetError:
        return False


def demo_up(directory: Path) -> dict[str, Any]:
    """Bring up (or reuse) everything and wait until the destination is Ready and served."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    testnet = Testnet(directory / "testnet")
    if _testnet_alive(testnet):
        _say("reusing the running testnet")
    else:
        _say("starting a private testnet of 9 i2pd routers (about a minute)")
        testnet.down()
        testnet.up(9, 3)
    _say("starting (or reusing) the local control plane (etcd + kube-apiserver)")
    info, reused_cluster = cluster.up(directory / "cluster")
    admin = info.kubeconfig
    _say(f"installing the Helm chart {CHART_DIR.name} into namespace {RELEASE_NAMESPACE}")
    helm_install(admin, CHART_DIR, RELEASE, RELEASE_NAMESPACE)

    state = DemoState.load(directory)
    previous_backends = state.backends if state is not None else None
    if state is not None and reused_cluster and state.operator.healthy():
        _say(f"reusing the running operator (pid {state.operator.pid})")
        operator = state.operator
    else:
        if state is not None:
            state.operator.stop()
            (directory / _STATE_FILE).unlink()
        kubeconfig = service_account_kubeconfig(
            admin,
            RELEASE_NAMESPACE,
            SERVICE_ACCOUNT,
            directory / "operator.kubeconfig",
            expiration_seconds=TOKEN_SECONDS,
        )
        operator = start_operator(kubeconfig, directory / "operator.log")
        DemoState(operator).save(directory)
        _say(
            f"operator started as system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT} "
            f"(pid {operator.pid}, log {operator.log})"
        )

    bridge = testnet.bridge_address
    if (
        previous_backends is not None
        and previous_backends.host == bridge
        and (previous_backends.running())
    ):
        _say(f"reusing the running backends (pid {previous_backends.pid})")
        backends = previous_backends
    else:
        if previous_backends is not None:
            previous_backends.stop()
        backends = start_backends(bridge, directory / "backends.log")
        _say(
            f"backends started: HTTP on {bridge}:{backends.http_port}, UDP echo on "
            f"{bridge}:{backends.udp_port} (pid {backends.pid})"
        )
    DemoState(operator, backends).save(directory)

    addresses = {name: testnet.router(name).address for name in HOSTS}
    manifest = example_manifest(addresses, backends=backends)
    if kubectl(admin, "get", "namespace", DEMO_NAMESPACE, check=False).returncode != 0:
        kubectl(admin, "create", "namespace", DEMO_NAMESPACE)
    kubectl(admin, f"--namespace={DEMO_NAMESPACE}", "apply", "-f", "-", stdin=json.dumps(manifest))
    _say(f"applied {EXAMPLE.name} with routers {', '.join(HOSTS)}; waiting for Ready")
    result = _wait_ready(admin, testnet, operator, manifest["metadata"]["name"])
    b32 = result["status"]["destination"]["b32"]
    _say(f"fetching http://{b32}{INDEX_PATH} through the SAM bridge of {CLIENT_ROUTER}")
    result["fetch"] = asyncio.run(_fetch_page(testnet, b32))
    return result


async def _fetch_page(testnet: Testnet, b32: str) -> HttpResponse:
    """The destination's page as an I2P client on a router that does not host it sees it."""
    try:
        async with await stream_session(testnet.router(CLIENT_ROUTER).sam) as session:
            return await http_via_sam(session, b32, INDEX_PATH, timeout_s=FETCH_TIMEOUT_S)
    except (SamError, HttpClientError, TimeoutError, OSError) as exc:
        raise DemoError(
            f"the destination is published but its page could not be fetched through "
            f"{CLIENT_ROUTER}'s SAM bridge: {exc!r}"
        ) from exc


def _wait_ready(
    admin: Path, testnet: Testnet, operator: OperatorProcess, name: str
) -> dict[str, Any]:
    """Ready, and multihomed as seen from outside: every floodfill serves the destination
    with leases of at least two routers."""
    watch = FloodfillWatch(testnet)

    def multihomed() -> dict[str, Any] | NotYet:
        if not operator.running():
            raise DemoError(f"the operator exited; see {operator.log}")
        done = kubectl(
            admin, f"--namespace={DEMO_NAMESPACE}", "get", "mhd", name, "-o", "json", check=False
        )
        status = (json.loads(done.stdout) if done.returncode == 0 else {}).get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        b32 = status.get("destination", {}).get("b32")
        if not ready or not b32:
            return NotYet("the destination is not Ready yet")
        watch.claim(status)
        now = time.time()
        views = watch.views(b32)
        routers = {
            floodfill: sorted(watch.routers_of(lease_set, now) - {"?"})
            for floodfill, lease_set in views.items()
            if lease_set is not None and serving(lease_set, now)
        }
        if len(routers) < len(views) or any(len(names) < 2 for names in routers.values()):
            return NotYet(watch.explain())
        held = {
            floodfill: {"leases": len(lease_set.leases), "routers": routers[floodfill]}
            for floodfill, lease_set in views.items()
            if lease_set is not None
        }
        return {"status": status, "floodfills": held}

    result = wait_until(
        f"{DEMO_NAMESPACE}/{name} to be Ready and served by every floodfill",
        READY_TIMEOUT_S,
        multihomed,
        interval=READY_POLL_S,
        explain=lambda: f"see {operator.log}",
        error=DemoError,
    )
    result["table"] = kubectl(
        admin, f"--namespace={DEMO_NAMESPACE}", "get", "mhd", "-o", "wide"
    ).stdout
    return result


def _print_summary(result: dict[str, Any]) -> None:
    status, views = result["status"], result["floodfills"]
    print(f"$ kubectl get mhd --namespace={DEMO_NAMESPACE} -o wide")
    print(result["table"].rstrip())
    print()
    print(f"{'ROUTER':<8} {'STATE':<12} {'LEASES':>6}  VERSION")
    for router in status["routers"]:
        print(
            f"{router['name']:<8} {router['state']:<12} {router['leases']:>6}  "
            f"{router.get('version', '')}"
        )
    print("floodfills hold:")
    for name, view in sorted(views.items()):
        print(f"  {name}: {view['leases']} leases from {', '.join(view['routers'])}")
    fetch: HttpResponse = result["fetch"]
    print(
        f"GET http://{status['destination']['b32']}{INDEX_PATH} through {CLIENT_ROUTER}'s SAM "
        f"bridge: HTTP {fetch.status}, {len(fetch.body)} bytes, first byte after "
        f"{fetch.first_byte_s:.2f} s"
    )
    print(fetch.body.decode(errors="replace").rstrip())


def demo_down(directory: Path) -> None:
    """Stop the operator, the control plane and the testnet; safe to repeat. Everything is
    removed even when the operator did not stop cleanly, which is then reported."""
    directory = directory.resolve()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(Testnet(directory / "testnet").down)
        cleanup.callback(cluster.down, directory / "cluster")
        cleanup.callback((directory / "operator.kubeconfig").unlink, missing_ok=True)
        state = DemoState.load(directory)
        if state is not None:
            if state.backends is not None:
                cleanup.callback(state.backends.stop)
            state.operator.stop()
            (directory / _STATE_FILE).unlink()


def _command(args: argparse.Namespace) -> int:
    try:
        if args.demo_command == "up":
            _print_summary(demo_up(args.dir))
        else:
            demo_down(args.dir)
    except (
        DemoError,
        TestnetError,
        cluster.ClusterError,
        toolchain.ToolchainError,
        KubectlError,
        OperatorError,
        LeaseOwnerError,
        OSError,
    ) as exc:
        print(f"i2p-multihome-dev demo: {exc}", file=sys.stderr)
        return 2
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="the operator, installed with its Helm chart, on a local testnet"
    )
    commands = parser.add_subparsers(dest="demo_command", required=True)
    for name, text in (("up", "start (or reuse) and wait for Ready"), ("down", "remove all")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, required=True, help="demo state directory")
        sub.set_defaults(func=_command)
