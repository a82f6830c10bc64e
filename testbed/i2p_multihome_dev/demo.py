"""`i2p-multihome-dev demo`: the main job on an embedded default, the way a cluster runs it.

A private i2pd testnet and a local Kubernetes control plane on this machine; the Helm chart
installed into it (CRD, ServiceAccount, RBAC); the operator as a background process holding
only the chart ServiceAccount's credentials (no kubelet runs here, so its Pod never starts);
the example MultihomedDestination applied with routers r1..r4 of the testnet; then, once it
is Ready, `kubectl get mhd -o wide` and what the floodfills hold.

`demo up` is idempotent (a second run reuses the testnet, control plane and operator that
still run, and re-applies the chart and the example); `demo down` stops the operator (which
destroys its I2CP sessions), the control plane and the testnet, leaving no process, network
namespace or listening port.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome_dev import cluster, toolchain
from i2p_multihome_dev.processes import (
    free_ports,
    process_alive,
    spawn_detached,
    start_ticks,
    stop_process_group,
    wait_port_closed,
)
from i2p_multihome_dev.testnet import Testnet, TestnetError, fetch_leasesets

HOSTS = ("r1", "r2", "r3", "r4")
RELEASE = "i2p-multihome"
RELEASE_NAMESPACE = "i2p-multihome"
# The chart names its ServiceAccount after the release's full name, which is the release
# name when that already contains the chart's name.
SERVICE_ACCOUNT = RELEASE
DEMO_NAMESPACE = "demo"
READY_TIMEOUT_S = 300.0
OPERATOR_START_TIMEOUT_S = 60.0
OPERATOR_STOP_TIMEOUT_S = 30.0
TOKEN_SECONDS = 7 * 24 * 3600
_STATE_FILE = "demo.json"
_REPO = Path(__file__).resolve().parents[2]
CHART_DIR = _REPO / "charts" / "i2p-multihome"
EXAMPLE = _REPO / "examples" / "multihomed-destination.yaml"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where to look."""


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class OperatorProcess:
    """The operator started in the background, as DIR/demo.json records it."""

    pid: int
    start_ticks: int
    healthz_port: int
    metrics_port: int
    kubeconfig: str
    log: str

    @property
    def healthz(self) -> str:
        return f"http://127.0.0.1:{self.healthz_port}/healthz"

    @property
    def ports(self) -> tuple[int, int]:
        return (self.healthz_port, self.metrics_port)


def start_operator(
    kubeconfig: Path,
    log_path: Path,
    scope: list[str] | None = None,
    extra_args: Sequence[str] = (),
) -> OperatorProcess:
    """`i2p-multihome operator` in its own session, credentials from `kubeconfig` only.

    `scope` is the namespaces to serve (None: all); `extra_args` are further operator
    options (e.g. `--peering=NAME`). Liveness and metrics listen on free
    loopback ports, so several operators (tests, the demo) can run side by side. Returns once
    kopf's liveness endpoint answers.
    """
    healthz_port, metrics_port = free_ports(2)
    namespaces = [f"--namespace={ns}" for ns in scope] if scope else ["--all-namespaces"]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "KUBECONFIG"))
    }
    env["KUBECONFIG"] = str(kubeconfig)
    pid = spawn_detached(
        [
            sys.executable, "-m", "i2p_multihome.cli", "operator", *namespaces,
            f"--liveness=http://127.0.0.1:{healthz_port}/healthz",
            f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1",
            *extra_args,
        ],
        log_path,
        env,
    )  # fmt: skip
    process = OperatorProcess(
        pid=pid,
        start_ticks=start_ticks(pid),
        healthz_port=healthz_port,
        metrics_port=metrics_port,
        kubeconfig=str(kubeconfig),
        log=str(log_path),
    )
    deadline = time.monotonic() + OPERATOR_START_TIMEOUT_S
    while not operator_healthy(process):
        if not process_alive(process.pid, process.start_ticks):
            raise DemoError(f"the operator exited at start; see {log_path}")
        if time.monotonic() > deadline:
            stop_operator(process)
            raise DemoError(f"the operator did not answer {process.healthz}; see {log_path}")
        time.sleep(0.5)
    return process


def operator_healthy(process: OperatorProcess) -> bool:
    if not process_alive(process.pid, process.start_ticks):
        return False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(process.healthz, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_operator(process: OperatorProcess) -> None:
    """SIGTERM (the operator destroys its I2CP sessions), then SIGKILL if it lingers."""
    if not stop_process_group(process.pid, process.start_ticks, OPERATOR_STOP_TIMEOUT_S):
        raise DemoError(f"operator pid {process.pid} survived SIGKILL")
    for port in process.ports:
        if not wait_port_closed(port):
            raise DemoError(f"127.0.0.1:{port} still accepts connections")


# --------------------------------------------------------------------------- kubernetes


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done


def helm_install(
    kubeconfig: Path,
    namespace: str,
    release: str = RELEASE,
    values: dict[str, Any] | None = None,
    chart: Path = CHART_DIR,
) -> None:
    """`helm upgrade --install` the chart, after applying its CRDs server-side.

    Helm installs a chart's crds/ only on the first install and never upgrades them; applying
    them first is the upgrade story the chart's README gives, and makes reruns idempotent.
    """
    if not (chart / "Chart.yaml").is_file():
        raise DemoError(f"no Helm chart at {chart}; run from a checkout of the repository")
    kubectl(
        kubeconfig, "apply", "--server-side", "--force-conflicts",
        f"--field-manager={release}", "-f", str(chart / "crds"),
    )  # fmt: skip
    names = [
        f"crd/{doc['metadata']['name']}"
        for path in sorted((chart / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names)
    values_args: list[str] = []
    if values:
        values_args = ["--values", "-"]
    done = subprocess.run(
        [
            str(toolchain.ensure_helm()), "upgrade", "--install", release, str(chart),
            f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", "--create-namespace",
            *values_args,
        ],
        input=json.dumps(values) if values else None,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"helm upgrade --install {release}: {done.stderr.strip()}")


def service_account_kubeconfig(
    admin_kubeconfig: Path, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig at `path` that authenticates as the ServiceAccount only (TokenRequest)."""
    token = kubectl(
        admin_kubeconfig, "create", "token", service_account, f"--namespace={namespace}",
        f"--duration={TOKEN_SECONDS}s",
    ).stdout.strip()  # fmt: skip
    config: dict[str, Any] = yaml.safe_load(admin_kubeconfig.read_text())
    current = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    entry = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    token_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": entry}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {"name": service_account, "context": {"cluster": "cluster", "user": service_account}}
        ],
        "current-context": service_account,
    }
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(token_config, sort_keys=False))
    return path


def example_manifest(addresses: dict[str, str], name: str = "demo") -> dict[str, Any]:
    """examples/multihomed-destination.yaml with its routers pointed at testnet routers.

    `addresses` maps testnet router names to their I2CP hosts, in the order the example's
    routers are replaced (their publish settings are kept); the example's routers beyond
    those are left out.
    """
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    routers = manifest["spec"]["routers"][: len(addresses)]
    if len(addresses) > len(routers):
        raise DemoError(f"{EXAMPLE} has only {len(routers)} routers, not {len(addresses)}")
    manifest["spec"]["routers"] = routers
    for router, (router_name, host) in zip(routers, addresses.items(), strict=True):
        router["name"] = router_name
        router["i2cp"] = {"host": host, "port": 7654}
    manifest["metadata"] = {"name": name}
    manifest["spec"]["keys"] = {"secretRef": {"name": f"{name}-keys"}}
    return manifest


# --------------------------------------------------------------------------- the demo


@dataclass(frozen=True)
class DemoState:
    operator: OperatorProcess

    @classmethod
    def load(cls, directory: Path) -> DemoState | None:
        try:
            raw = json.loads((directory / _STATE_FILE).read_text())
            return cls(operator=OperatorProcess(**raw["operator"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise DemoError(f"unreadable {directory / _STATE_FILE}: {exc}") from exc

    def save(self, directory: Path) -> None:
        partial = directory / f".{_STATE_FILE}.partial"
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(directory / _STATE_FILE)


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def _testnet_alive(testnet: Testnet) -> bool:
    try:
        return all(testnet.is_running(r.name) for r in testnet.routers)
    except TestnetError:
        return False


def demo_up(directory: Path) -> dict[str, Any]:
    """Bring up (or reuse) everything and wait until the destination is Ready and stored."""
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
    helm_install(admin, RELEASE_NAMESPACE)

    state = DemoState.load(directory)
    if state is not None and reused_cluster and operator_healthy(state.operator):
        _say(f"reusing the running operator (pid {state.operator.pid})")
        operator = state.operator
    else:
        if state is not None:
            stop_operator(state.operator)
            (directory / _STATE_FILE).unlink()
        kubeconfig = service_account_kubeconfig(
            admin, RELEASE_NAMESPACE, SERVICE_ACCOUNT, directory / "operator.kubeconfig"
        )
        operator = start_operator(kubeconfig, directory / "operator.log")
        DemoState(operator).save(directory)
        _say(
            f"operator started as system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT} "
            f"(pid {operator.pid}, log {operator.log})"
        )

    addresses = {name: testnet.router(name).address for name in HOSTS}
    manifest = example_manifest(addresses)
    if kubectl(admin, "get", "namespace", DEMO_NAMESPACE, check=False).returncode != 0:
        kubectl(admin, "create", "namespace", DEMO_NAMESPACE)
    kubectl(admin, f"--namespace={DEMO_NAMESPACE}", "apply", "-f", "-", stdin=json.dumps(manifest))
    _say(f"applied {EXAMPLE.name} with routers {', '.join(HOSTS)}; waiting for Ready")
    return _wait_ready(admin, testnet, operator, manifest["metadata"]["name"])


def _wait_ready(
    admin: Path, testnet: Testnet, operator: OperatorProcess, name: str
) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        done = kubectl(
            admin, f"--namespace={DEMO_NAMESPACE}", "get", "mhd", name, "-o", "json", check=False
        )
        obj = json.loads(done.stdout) if done.returncode == 0 else {}
        status = obj.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        views = _floodfill_views(testnet, status) if ready else {}
        # Multihomed, seen from outside: every floodfill holding the destination holds leases
        # of at least two routers.
        if views and all(
            v["nonExpiredLeases"] and len(set(v["routers"]) - {"?"}) >= 2 for v in views.values()
        ):
            table = kubectl(
                admin, f"--namespace={DEMO_NAMESPACE}", "get", "mhd", "-o", "wide"
            ).stdout
            return {"status": status, "floodfills": views, "table": table}
        if not process_alive(operator.pid, operator.start_ticks):
            raise DemoError(f"the operator exited; see {operator.log}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"{DEMO_NAMESPACE}/{name} not Ready after {READY_TIMEOUT_S:.0f}s; "
                f"see {operator.log}"
            )
        time.sleep(3)


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
        print(
            f"  {name}: {view['nonExpiredLeases']} non-expired leases "
            f"from {', '.join(view['routers'])}"
        )


def demo_down(directory: Path) -> None:
    """Stop the operator, the control plane and the testnet; safe to repeat."""
    directory = directory.resolve()
    state = DemoState.load(directory)
    if state is not None:
        stop_operator(state.operator)
        (directory / _STATE_FILE).unlink()
    (directory / "operator.kubeconfig").unlink(missing_ok=True)
    cluster.down(directory / "cluster")
    Testnet(directory / "testnet").down()


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
