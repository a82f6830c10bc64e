"""The operator through an API-server outage, as an operator would meet it: the API server is
stopped for 60 s while the operator hosts a destination on 4 routers, and a hosting router
dies meanwhile. The balancer keeps the floodfills serving without the API server; once the
server is back (same etcd, same port), the status catches up within 30 s without an operator
restart.

The test runs its own control plane: stopping the session's shared one would disturb others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.fixtures_cluster import KubeCluster
from e2e.fixtures_testnet import skip_if_testbed_opted_out
from e2e.operator_run import Destination, new_namespace
from e2e.test_operator import CRD_FILE, HOSTS4, wait_served
from i2p_multihome_dev import cluster
from i2p_multihome_dev.balancer_process import destination_manifest
from i2p_multihome_dev.kube import install_crds
from i2p_multihome_dev.observe import serving
from i2p_multihome_dev.operator_process import operator_running
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.cluster]

OUTAGE_S = 60.0
CATCH_UP_S = 30.0  # from the API server's return to a status that shows what happened
VICTIM = "r3"


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[Path, cluster.ClusterInfo]]:
    skip_if_testbed_opted_out()
    directory = tmp_path / "cluster"
    info, _ = cluster.up(directory)
    try:
        yield directory, info
    finally:
        cluster.down(directory)


def test_status_catches_up_after_the_api_server_returns(
    testnet: Testnet,
    own_cluster: tuple[Path, cluster.ClusterInfo],
    tmp_path: Path,
    restore_routers: None,
) -> None:
    directory, info = own_cluster
    install_crds(info.kubeconfig, CRD_FILE)
    namespace = new_namespace(KubeCluster(info.kubeconfig, info.server, local=True), "outage")
    name = "outage"
    dest = Destination(namespace, name, testnet)
    with operator_running(info.kubeconfig, tmp_path / "operator.log", [namespace.name]) as operator:
        namespace.apply(destination_manifest(name, testnet, HOSTS4, inbound=2, length=1))
        b32 = wait_served(dest, HOSTS4, operator)
        before = dest.status()
        assert dest.condition("Degraded", before) == "False"

        cluster.stop_apiserver(directory)
        stopped_at = time.monotonic()
        testnet.stop_router(VICTIM)

        # Without the API server the balancer still does its job: the victim's leases
        # leave every floodfill, which keeps serving the others'.
        def floodfills_without_victim() -> dict[str, object] | NotYet:
            now = time.time()
            views = dest.floodfill_views(b32)
            detail = {
                floodfill: (serving(ls, now), sorted(dest.watch.routers_of(ls)) if ls else None)
                for floodfill, ls in views.items()
            }
            done = all(
                good and owners is not None and VICTIM not in owners
                for good, owners in detail.values()
            )
            return detail if done else NotYet(detail)

        wait_until(
            f"{VICTIM}'s leases to leave every floodfill while the API server is down",
            OUTAGE_S - 5,
            floodfills_without_victim,
            interval=2.0,
        )
        operator.assert_running()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))

        cluster.start_apiserver(directory)
        returned_at = time.monotonic()

        def status_shows_the_loss() -> dict[str, object] | NotYet:
            operator.assert_running()
            try:
                status = dest.status()
            except Exception as exc:  # the API server may still be settling
                return NotYet(f"reading the object: {exc!r}")
            victim = dest.routers(status).get(VICTIM, {})
            degraded = dest.conditions(status).get("Degraded", {})
            detail = {
                "victim": victim.get("state"),
                "lastError": victim.get("lastError"),
                "Degraded": degraded.get("status"),
                "message": degraded.get("message"),
            }
            shown = (
                victim.get("state") not in (None, "Established")
                and bool(victim.get("lastError"))
                and degraded.get("status") == "True"
                and VICTIM in str(degraded.get("message"))
            )
            return detail if shown else NotYet(detail)

        wait_until(
            "the status to show the dead router and Degraded after the API server's return",
            CATCH_UP_S,
            status_shows_the_loss,
            interval=1.0,
        )
        caught_up = time.monotonic() - returned_at
        assert operator.running()  # the same process: no restart was needed
        # ... and the same sessions: the surviving routers were never reconnected.
        after = dest.status()
        for router in set(HOSTS4) - {VICTIM}:
            kept, now = dest.routers(before)[router], dest.routers(after)[router]
            assert (now["state"], now["since"]) == ("Established", kept["since"]), router
        log = operator.log_text()
        assert "ended unexpectedly" not in log
        assert "status not written; will retry" in log
        assert "status written again" in log
        print(
            f"API server down {OUTAGE_S:.0f}s with {VICTIM} killed meanwhile: status caught up "
            f"{caught_up:.1f}s after the server's return"
        )
