"""`make demo` as the README gives it: `i2p-multihome-dev demo up` twice (the second run reuses
what runs), then `demo down`, which must leave no process, network namespace, listening port
or state file behind. Its own testnet and control plane, apart from the session's."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from i2p_multihome_dev import cluster, demo
from i2p_multihome_dev.kube import kubectl
from i2p_multihome_dev.processes import live_processes, port_open, process_alive
from i2p_multihome_dev.testnet import Testnet

pytestmark = [pytest.mark.cluster, pytest.mark.testnet, pytest.mark.timeout(900)]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "i2p_multihome_dev", "demo", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (not zombies) that mention `text`."""
    found = []
    for pid, _ in live_processes():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if text in cmdline and pid != os.getpid():
                found.append(f"{pid}: {cmdline}")
    return found


def test_demo_up_twice_then_down_leaves_nothing(testnet_host: None, tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    try:
        started = time.monotonic()
        first = run_demo("up", "--dir", str(directory))
        first_s = time.monotonic() - started
        assert first.returncode == 0, first.stderr[-3000:]
        assert "kubectl get mhd" in first.stdout
        header, row = first.stdout.split("\n")[1:3]
        assert header.split() == [
            "NAME",
            "READY",
            "ROUTERS",
            "LEASES",
            "PUBLISHED",
            "STREAMS",
            "AGE",
            "PUBLISHER",
            "B32",
        ]
        assert row.split()[1] == "True" and row.split()[-1].endswith(".b32.i2p")
        assert "floodfills hold:" in first.stdout
        # The example's http port serves a real page to an I2P client of another router.
        fetched = [line for line in first.stdout.splitlines() if line.startswith("GET http://")]
        assert fetched and "SAM bridge: HTTP 200," in fetched[0], first.stdout
        assert "Served by one I2P destination on several routers" in first.stdout
        assert "installing the Helm chart" in first.stderr

        state = demo.DemoState.load(directory)
        cluster_state = cluster.ClusterState.load(directory / "cluster")
        assert state is not None and cluster_state is not None
        testnet = Testnet(directory / "testnet")
        namespaces = [r.namespace for r in testnet.routers]
        # The operator runs with the chart ServiceAccount's token, not as admin.
        kubeconfig = Path(state.operator.kubeconfig).read_text()
        assert "token:" in kubeconfig and "client-key-data" not in kubeconfig
        operator_user = kubectl(
            Path(state.operator.kubeconfig), "auth", "whoami", "-o", "json"
        ).stdout
        assert json.loads(operator_user)["status"]["userInfo"]["username"] == (
            f"system:serviceaccount:{demo.RELEASE_NAMESPACE}:{demo.SERVICE_ACCOUNT}"
        )

        started = time.monotonic()
        second = run_demo("up", "--dir", str(directory))
        second_s = time.monotonic() - started
        assert second.returncode == 0, second.stderr[-3000:]
        for reused in (
            "reusing the running testnet",
            "reusing cluster",
            "reusing the running operator",
            "reusing the running backends",
        ):
            assert reused in second.stderr
        assert demo.DemoState.load(directory) == state
        assert cluster.ClusterState.load(directory / "cluster") == cluster_state
        assert second_s < first_s
        # Same destination: the keys Secret was kept.
        assert first.stdout.split("\n")[2].split()[-1] == second.stdout.split("\n")[2].split()[-1]
        print(f"demo up: first {first_s:.0f}s, second {second_s:.0f}s")
    finally:
        down = run_demo("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr[-3000:]

    assert not processes_mentioning(str(directory))
    assert not process_alive(state.operator.pid, state.operator.start_ticks)
    assert state.backends is not None
    assert not process_alive(state.backends.pid, state.backends.start_ticks)
    for process in (cluster_state.etcd, cluster_state.apiserver):
        assert not process_alive(process.pid, process.start_ticks)
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert not [ns for ns in namespaces if ns in listed]
    ports = [*state.operator.ports, *cluster_state.etcd.ports, *cluster_state.apiserver.ports]
    assert not [port for port in ports if port_open(port)]
    assert not port_open(state.backends.http_port, state.backends.host)
    assert not (directory / "demo.json").exists()
    assert not (directory / "cluster" / cluster.STATE_FILE).exists()
    assert run_demo("down", "--dir", str(directory)).returncode == 0
