"""spec.routersFrom on a real kube-apiserver and the real i2pd testnet: the routers are a
Service's ready endpoints. No kubelet or endpoint controller runs here, so the test writes the
EndpointSlice that the controller would for a headless Service over router pods, pointing at
testnet routers; the operator reads it as it would in a cluster.

A destination found on 3 endpoints publishes their leases on every floodfill; a fourth ready
endpoint adds its leases; an endpoint removed takes its leases off every floodfill within the
failover goal; an endpoint that turns not ready leaves too; and the destination object is never
edited (its generation stays 1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from e2e.fixtures_cluster import KubeCluster
from e2e.measured import report
from e2e.operator_run import Destination, new_namespace
from e2e.test_operator import FLOOD_CONVERGENCE_S, floodfills_hold, wait_served
from i2p_multihome_dev.kube import Namespace, install_crds
from i2p_multihome_dev.observe import serving
from i2p_multihome_dev.operator_process import OperatorProcess, operator_running
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.repo import CRD_FILE, PEERING_CRD_FILE
from i2p_multihome_dev.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.cluster]

SERVICE = "i2pd"
SLICE = "i2pd-x7k2p"  # the endpoint controller's generated name: the Service's, a suffix
# Issue 11's failover goal (worst case): a router gone leaves every floodfill within it.
FAILOVER_GOAL_S = 25.0


@pytest.fixture(scope="module")
def crds(kube_cluster: KubeCluster) -> KubeCluster:
    install_crds(kube_cluster.kubeconfig, CRD_FILE, PEERING_CRD_FILE)
    return kube_cluster


def headless_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE},
        "spec": {
            "clusterIP": "None",
            "selector": {"app.kubernetes.io/name": "i2pd"},
            "ports": [{"name": "i2cp", "port": 7654, "targetPort": 7654}],
        },
    }


def endpoint_slice(
    testnet: Testnet, namespace: str, routers: list[str], not_ready: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The slice the endpoint controller writes for router pods named after the testnet's
    routers (their I2CP listens on one port, as in a StatefulSet)."""
    port = {testnet.router(r).i2cp[1] for r in routers} or {7654}
    (i2cp_port,) = port
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SLICE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [testnet.router(r).i2cp[0]],
                "conditions": {
                    "ready": r not in not_ready,
                    "serving": r not in not_ready,
                    "terminating": r in not_ready,
                },
                "hostname": r,
                "targetRef": {"kind": "Pod", "name": r, "namespace": namespace},
            }
            for r in routers
        ],
        "ports": [{"name": "i2cp", "port": i2cp_port, "protocol": "TCP"}],
    }


def routers_from_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": name},
        "spec": {
            "routersFrom": {"service": {"name": SERVICE, "port": "i2cp"}, "implementation": "i2pd"},
            "tunnels": {
                "inbound": {"quantity": 3, "length": 1},
                "outbound": {"quantity": 2, "length": 1},
            },
        },
    }


def status_routers(dest: Destination) -> list[str]:
    return sorted(r["name"] for r in dest.status().get("routers", []))


def wait_status_routers(dest: Destination, routers: list[str]) -> None:
    """status.routers lists exactly `routers` (the reporter writes a change within seconds)."""
    wait_until(
        f"status.routers {routers}",
        20,
        lambda: status_routers(dest) == routers or NotYet(status_routers(dest)),
        interval=0.5,
    )


def wait_left(
    dest: Destination, b32: str, gone: str, operator: OperatorProcess, since: float
) -> float:
    """Wait until no floodfill serves a lease of `gone` (each still serving the destination);
    seconds since `since`."""

    def left() -> bool | NotYet:
        operator.assert_running()
        views = dest.floodfill_views(b32)
        held = {
            floodfill: sorted(dest.routers_of(ls)) if ls is not None else None
            for floodfill, ls in views.items()
        }
        ok = all(
            ls is not None and serving(ls, time.time()) and gone not in dest.routers_of(ls)
            for ls in views.values()
        )
        return True if ok else NotYet(held)

    wait_until(f"{gone}'s leases to leave every floodfill", FAILOVER_GOAL_S, left, interval=0.5)
    return time.monotonic() - since


def test_routers_follow_the_services_ready_endpoints(
    testnet: Testnet, crds: KubeCluster, tmp_path: Path
) -> None:
    ns: Namespace = new_namespace(crds, "routers-from")
    name = "from-service"
    ns.apply(headless_service())
    ns.apply(endpoint_slice(testnet, ns.name, ["r1", "r2", "r3"]))
    with operator_running(crds.kubeconfig, tmp_path / "operator.log", [ns.name]) as operator:
        ns.apply(routers_from_manifest(name))
        dest = Destination(ns, name, testnet)
        b32 = wait_served(dest, ["r1", "r2", "r3"], operator)
        assert status_routers(dest) == ["r1", "r2", "r3"]
        assert dest.status()["routersConnected"] == "3/3"

        # A fourth pod turns ready: its leases join on every floodfill.
        ns.apply(endpoint_slice(testnet, ns.name, ["r1", "r2", "r3", "r4"]))
        joined_at = time.monotonic()
        wait_until(
            "r4's leases on every floodfill",
            FLOOD_CONVERGENCE_S,
            lambda: floodfills_hold(dest, b32, ["r1", "r2", "r3", "r4"]),
        )
        report("routers-from joined", router="r4", floodfills_s=time.monotonic() - joined_at)
        wait_status_routers(dest, ["r1", "r2", "r3", "r4"])
        wait_until(
            "a RoutersChanged event naming r4",
            20,
            lambda: any(
                e["reason"] == "RoutersChanged" and "joined: r4" in e["message"]
                for e in ns.events(name)
            ),
        )

        # One endpoint deleted (the pod gone): its session ends and its leases leave.
        ns.apply(endpoint_slice(testnet, ns.name, ["r1", "r3", "r4"]))
        removed = wait_left(dest, b32, "r2", operator, time.monotonic())
        report("routers-from removed", router="r2", floodfills_s=removed)
        wait_status_routers(dest, ["r1", "r3", "r4"])
        wait_until(
            "r2 to host no session of the destination",
            20,
            lambda: dest.sessions_on("r2", b32) == 0 or NotYet(dest.sessions_on("r2", b32)),
        )

        # One endpoint turns not ready (a failing probe, or terminating): it leaves too.
        ns.apply(endpoint_slice(testnet, ns.name, ["r1", "r3", "r4"], frozenset({"r3"})))
        not_ready = wait_left(dest, b32, "r3", operator, time.monotonic())
        report("routers-from not ready", router="r3", floodfills_s=not_ready)
        wait_status_routers(dest, ["r1", "r4"])
        assert dest.condition("Ready") == "True"

        obj = dest.object()
        assert obj is not None and obj["metadata"]["generation"] == 1  # never edited
