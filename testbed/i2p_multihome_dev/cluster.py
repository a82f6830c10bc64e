"""A real Kubernetes control plane (etcd + kube-apiserver) as plain loopback processes.

Tests and the demo need the genuine API server (CEL validation, RBAC, TokenRequest), and
this machine has no container engine, so the control plane starts the way controller-runtime's
envtest does it. There is no kubelet and no controller-manager: Pods never run, namespaces
never finish deleting, owner references never cascade, and no `default` ServiceAccount appears.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import logging
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from i2p_multihome.logs import fields
from i2p_multihome_dev import toolchain
from i2p_multihome_dev.pki import Pki, write_pki
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import (
    free_ports,
    process_alive,
    spawn_detached,
    start_ticks,
    stop_process_group,
    wait_port_closed,
)
from i2p_multihome_dev.statefile import load_state, save_state

log = logging.getLogger(__name__)

STATE_FILE = "cluster.json"
KUBECONFIG_FILE = "kubeconfig"
SERVICE_CIDR = "10.0.0.0/24"
_START_TIMEOUT = 180.0
_STOP_TIMEOUT = 15.0
# Removed before a fresh start; logs are kept so the last failure can still be read.
_STATE_DIRS = ("etcd", "pki", "apiserver-certs")


class ClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class ClusterInfo:
    """What a client needs: the admin kubeconfig and the API server URL."""

    kubeconfig: Path
    server: str

    def as_json(self) -> str:
        return json.dumps({"kubeconfig": str(self.kubeconfig), "server": self.server})


@dataclass(frozen=True)
class _Process:
    pid: int
    # Kernel start time (clock ticks since boot) tells our process from a later one that
    # happens to reuse the PID after a reboot or a long time.
    start_ticks: int
    ports: tuple[int, ...]


@dataclass(frozen=True)
class ClusterState:
    """Contents of DIR/cluster.json: enough to reuse or stop the processes later."""

    kubeconfig: str
    server: str
    kube_version: str
    etcd: _Process
    apiserver: _Process

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        return load_state(directory / STATE_FILE, cls._from_json, ClusterError)

    @classmethod
    def _from_json(cls, raw: dict[str, Any]) -> ClusterState:
        return cls(
            kubeconfig=str(raw["kubeconfig"]),
            server=str(raw["server"]),
            kube_version=str(raw["kube_version"]),
            etcd=_process_from(raw["etcd"]),
            apiserver=_process_from(raw["apiserver"]),
        )

    def save(self, directory: Path) -> None:
        save_state(directory / STATE_FILE, asdict(self))

    def info(self) -> ClusterInfo:
        return ClusterInfo(kubeconfig=Path(self.kubeconfig), server=self.server)


def _process_from(raw: dict[str, Any]) -> _Process:
    return _Process(
        pid=int(raw["pid"]),
        start_ticks=int(raw["start_ticks"]),
        ports=tuple(int(port) for port in raw["ports"]),
    )


def up(directory: Path) -> tuple[ClusterInfo, bool]:
    """Start a control plane in `directory`, or reuse the live one recorded there.

    Returns the cluster and whether it was reused.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    state = ClusterState.load(directory)
    if state is not None:
        if _is_healthy(state, directory):
            log.info("reusing cluster", extra=fields(dir=directory, server=state.server))
            return state.info(), True
        log.info("recorded cluster is gone; starting fresh", extra=fields(dir=directory))
        down(directory)
    tools = toolchain.ensure_tools()
    for name in _STATE_DIRS:
        shutil.rmtree(directory / name, ignore_errors=True)
    try:
        state = _start(directory, tools)
    except BaseException:
        with contextlib.suppress(ClusterError):
            down(directory)
        raise
    return state.info(), False


def down(directory: Path) -> None:
    """Stop the recorded processes and their groups; a no-op when nothing is recorded.

    Raises ClusterError if a process or a listening port survives.
    """
    directory = directory.resolve()
    state = ClusterState.load(directory)
    if state is None:
        return
    # API server first, so it never sees its storage vanish and retries against a dead etcd.
    stopped = [
        stop_process_group(process.pid, process.start_ticks, _STOP_TIMEOUT)
        for process in (state.apiserver, state.etcd)
    ]
    for process, gone in zip((state.apiserver, state.etcd), stopped, strict=True):
        if not gone:
            raise ClusterError(f"pid {process.pid} survived SIGKILL")
        for port in process.ports:
            if not wait_port_closed(port):
                raise ClusterError(f"127.0.0.1:{port} still accepts connections after stop")
    (directory / STATE_FILE).unlink()
    log.info("cluster stopped", extra=fields(dir=directory))


def _start(directory: Path, tools: toolchain.Tools) -> ClusterState:
    etcd_port, peer_port, api_port = free_ports(3)
    server = f"https://127.0.0.1:{api_port}"
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = spawn_detached(
        [
            str(tools.etcd),
            "--name=default",
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--logger=zap",
        ],
        directory / "etcd.log",
    )
    # Recorded at once, so a failure from here on can still be cleaned up by `down`.
    partial = ClusterState(
        kubeconfig=str(directory / KUBECONFIG_FILE),
        server=server,
        kube_version=toolchain.KUBE_VERSION,
        etcd=_Process(etcd, start_ticks(etcd), (etcd_port, peer_port)),
        apiserver=_Process(0, 0, ()),
    )
    partial.save(directory)
    _wait_answering(
        "etcd health",
        f"{etcd_url}/health",
        None,
        _alive_check(partial.etcd, directory / "etcd.log"),
    )

    pki = write_pki(directory / "pki")
    return _start_apiserver(directory, tools.kube_apiserver, partial, api_port, pki)


def _start_apiserver(
    directory: Path, binary: Path, state: ClusterState, api_port: int, pki: Pki
) -> ClusterState:
    """kube-apiserver on `api_port` over the recorded etcd; returns once it serves."""
    etcd_url = f"http://127.0.0.1:{state.etcd.ports[0]}"
    apiserver = spawn_detached(
        [
            str(binary),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={directory / 'apiserver-certs'}",
            f"--secure-port={api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={state.server}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--allow-privileged=true",
            # Endpoints may not hold loopback addresses, so the `kubernetes` Service's
            # endpoints can't be reconciled here; nothing in-cluster would use them anyway.
            "--endpoint-reconciler-type=none",
        ],
        directory / "kube-apiserver.log",
    )
    state = dataclasses.replace(
        state, apiserver=_Process(apiserver, start_ticks(apiserver), (api_port,))
    )
    state.save(directory)
    context = _admin_tls(pki)
    alive = _alive_check(state.apiserver, directory / "kube-apiserver.log")
    # /readyz covers the RBAC bootstrap post-start hook; the default namespace and the
    # cluster-admin role are created moments later by controllers inside the API server.
    for what in (
        "/readyz",
        "/api/v1/namespaces/default",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin",
    ):
        _wait_answering(what, state.server + what, context, alive)
    _write_kubeconfig(Path(state.kubeconfig), state.server, pki)
    log.info(
        "API server started",
        extra=fields(dir=directory, server=state.server, pid=apiserver, etcd=etcd_url),
    )
    return state


def stop_apiserver(directory: Path) -> None:
    """Stop the API server alone (etcd keeps the cluster's data), as an outage would;
    `start_apiserver` brings it back on the same port, certificates and etcd."""
    directory = directory.resolve()
    state = _require(directory)
    process = state.apiserver
    if not stop_process_group(process.pid, process.start_ticks, _STOP_TIMEOUT):
        raise ClusterError(f"API server pid {process.pid} survived SIGKILL")
    for port in process.ports:
        if not wait_port_closed(port):
            raise ClusterError(f"127.0.0.1:{port} still accepts connections after stop")
    log.info("API server stopped", extra=fields(dir=directory, pid=process.pid))


def start_apiserver(directory: Path) -> ClusterInfo:
    """Start the API server again after `stop_apiserver`: same URL, same credentials."""
    directory = directory.resolve()
    state = _require(directory)
    if process_alive(state.apiserver.pid, state.apiserver.start_ticks):
        raise ClusterError(f"the API server of {directory} is still running")
    tools = toolchain.ensure_tools()
    (api_port,) = state.apiserver.ports
    return _start_apiserver(
        directory, tools.kube_apiserver, state, api_port, Pki.at(directory / "pki")
    ).info()


def _require(directory: Path) -> ClusterState:
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no cluster recorded in {directory}")
    return state


def _alive_check(process: _Process, log_path: Path) -> Callable[[], None]:
    """A probe that fails fast, quoting the log, once the process has died."""

    def check() -> None:
        if not process_alive(process.pid, process.start_ticks):
            lines = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise ClusterError(f"{log_path.stem} exited: {' | '.join(lines)}")

    return check


def _wait_answering(
    what: str, url: str, context: ssl.SSLContext | None, alive: Callable[[], None]
) -> None:
    """Wait until `url` answers 200, failing at once if the process behind it dies."""

    def answered() -> bool:
        alive()
        return _http_ok(url, context)

    wait_until(what, _START_TIMEOUT, answered, interval=0.25, error=ClusterError)


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    # Only loopback http(s) URLs built in this module reach here.
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _admin_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return context


def _is_healthy(state: ClusterState, directory: Path) -> bool:
    """Both recorded processes are ours and alive, and the API server answers as admin."""
    if not all(process_alive(p.pid, p.start_ticks) for p in (state.etcd, state.apiserver)):
        return False
    try:
        context = _admin_tls(Pki.at(directory / "pki"))
    except (OSError, ssl.SSLError):
        return False
    return _http_ok(f"{state.server}/readyz", context)


def _write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """Self-contained admin kubeconfig (certificates inline), mode 0600."""

    def inline(pem: Path) -> str:
        return base64.b64encode(pem.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": inline(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": inline(pki.admin_cert),
                    "client-key-data": inline(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cluster up|down|build` to the top-level CLI."""
    cluster = subparsers.add_parser(
        "cluster", help="run a local Kubernetes control plane (etcd + kube-apiserver)"
    )
    actions = cluster.add_subparsers(dest="cluster_command", required=True)
    start = actions.add_parser("up", help="start (or reuse) a control plane; print JSON")
    start.add_argument("--dir", type=Path, required=True, help="state, PKI and logs")
    start.set_defaults(func=_cmd_up)
    stop = actions.add_parser("down", help="stop the control plane recorded in DIR")
    stop.add_argument("--dir", type=Path, required=True)
    stop.set_defaults(func=_cmd_down)
    build = actions.add_parser("build", help="ensure cached binaries; print paths and versions")
    build.set_defaults(func=_cmd_build)


def _cmd_up(args: argparse.Namespace) -> int:
    def run() -> None:
        info, reused = up(args.dir)
        print(
            f"reusing running cluster in {args.dir}"
            if reused
            else f"started new cluster in {args.dir}",
            file=sys.stderr,
        )
        print(info.as_json())

    return _guarded(run)


def _cmd_down(args: argparse.Namespace) -> int:
    return _guarded(lambda: down(args.dir))


def _cmd_build(args: argparse.Namespace) -> int:
    def run() -> None:
        tools = toolchain.ensure_tools()
        probes = {
            "etcd": [str(tools.etcd), "--version"],
            "kube-apiserver": [str(tools.kube_apiserver), "--version"],
            "kubectl": [str(tools.kubectl), "version", "--client"],
            "helm": [str(toolchain.ensure_helm()), "version", "--short"],
            # Not a control-plane binary: the chart's scanner, installed with them so that
            # the test run does not pay for it.
            "checkov": [str(toolchain.ensure_checkov()), "--version"],
        }
        report = {
            name: {"path": argv[0], "version": _first_line(argv)} for name, argv in probes.items()
        }
        print(json.dumps(report, indent=2))

    return _guarded(run)


def _first_line(argv: list[str]) -> str:
    """A binary's own version report, so `build` shows what was really built."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip().split("\n", 1)[0]


def _guarded(run: Callable[[], None]) -> int:
    """Exit 2 with a one-line message instead of a traceback for expected failures."""
    try:
        run()
    except (ClusterError, toolchain.ToolchainError, OSError) as exc:
        print(f"i2p-multihome-dev cluster: {exc}", file=sys.stderr)
        return 2
    return 0
