"""The operator with a real Java I2P router (2.7.0 from Maven Central) beside an i2pd router.

The Java router serves I2CP over TLS with password authentication and nothing else (no
transports: it cannot join the testnet), so its client tunnels are zero-hop. That is enough
to prove what a Java router asks of the balancer: the TLS handshake, credentials from the
Secret `credentialsSecretRef` names (and their rotation), Java's own SessionConfig checks,
and a LeaseSet2 it accepts, merged with an i2pd router's leases and published by i2pd.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from e2e.fixtures_cluster import KubeCluster
from e2e.operator_run import Destination, new_namespace
from i2p_multihome_dev.javarouter import JavaRouter, JavaRouterError
from i2p_multihome_dev.kube import Namespace, install_crds
from i2p_multihome_dev.observe import serving
from i2p_multihome_dev.operator_process import operator_running
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.repo import CRD_FILE
from i2p_multihome_dev.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.cluster]

USER = "multihome"
CREDENTIALS = "java-i2cp-credentials"
# A router no earlier test uses as a SAM client: i2pd 2.45.1's SAM thread now and then
# segfaults seconds after a client's sessions close, and once took r5 down at the start of
# this test, right after test_failover_clients' SAM download on r5.
I2PD = "r4"
# The Java router shares this router's network namespace: the testnet's bridge is all it
# could ever reach.
JAVA_HOST = "r6"


@pytest.fixture(scope="module")
def java_password() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def java_router(
    testnet: Testnet, tmp_path_factory: pytest.TempPathFactory, java_password: str
) -> Iterator[JavaRouter]:
    try:
        router = JavaRouter.start(
            testnet.router(JAVA_HOST),
            tmp_path_factory.mktemp("java-router"),
            users={USER: java_password},
            tls=True,
        )
    except JavaRouterError as exc:
        pytest.fail(f"the Java router did not start: {exc}", pytrace=False)
    yield router
    router.stop()


def credentials_secret(password: str) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=CREDENTIALS),
        type="Opaque",
        data={
            "username": base64.b64encode(USER.encode()).decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    )


def mixed_manifest(testnet: Testnet, java: JavaRouter) -> dict[str, Any]:
    host, port = java.i2cp
    i2pd_host, i2pd_port = testnet.router(I2PD).i2cp
    return {
        "apiVersion": "multihome.i2p/v1alpha1",
        "kind": "MultihomedDestination",
        "metadata": {"name": "mixed"},
        "spec": {
            "routers": [
                {
                    "name": "java",
                    "implementation": "java",
                    "publish": False,
                    "i2cp": {
                        "host": host,
                        "port": port,
                        "tls": True,
                        "credentialsSecretRef": {"name": CREDENTIALS},
                    },
                },
                {"name": I2PD, "i2cp": {"host": i2pd_host, "port": i2pd_port}},
            ],
            "tunnels": {
                "inbound": {"quantity": 2, "length": 0},
                "outbound": {"quantity": 1, "length": 0},
            },
        },
    }


def router_state(dest: Destination, name: str) -> dict[str, Any]:
    return dest.routers().get(name) or {}


def test_operator_merges_a_java_router_over_tls_with_rotated_credentials(
    testnet: Testnet,
    java_router: JavaRouter,
    java_password: str,
    kube_cluster: KubeCluster,
    tmp_path: Path,
) -> None:
    """PROVES: wrong credentials show as Refused with Java's own reason; after the Secret
    is corrected the next attempt connects (no restart); the Java router accepts the
    merged LeaseSet2; i2pd publishes it with the Java router's leases in it."""
    install_crds(kube_cluster.kubeconfig, CRD_FILE)
    ns: Namespace = new_namespace(kube_cluster, "java")
    ns.core.create_namespaced_secret(ns.name, credentials_secret("not-" + java_password))
    log = tmp_path / "operator.log"
    with operator_running(kube_cluster.kubeconfig, log, [ns.name]) as operator:
        ns.apply(mixed_manifest(testnet, java_router))
        dest = Destination(ns, "mixed", testnet)
        # The Java router has no i2pd console: its leases are taken on the operator's word.
        dest.watch.without_console.add("java")

        refused = wait_until(
            "the Java router Refused for its wrong password",
            60,
            lambda: (
                router_state(dest, "java").get("state") == "Refused" and router_state(dest, "java")
            ),
            interval=1.0,
        )
        assert f"Authorization failed, user = {USER}" in refused["lastError"]
        wait_until(
            "a RouterRefused Warning for the Java router",
            30,
            lambda: ns.has_event("mixed", "RouterRefused", "Warning"),
        )
        assert router_state(dest, I2PD)["state"] == "Established"

        ns.core.replace_namespaced_secret(CREDENTIALS, ns.name, credentials_secret(java_password))
        dest.wait_condition("Ready", "True", 90)

        def merged() -> Any:
            status = dest.status()
            routers = (status.get("leaseSet") or {}).get("routers") or []
            return status if sorted(routers) == ["java", I2PD] else None

        status = wait_until(
            "a LeaseSet merged from both routers", 90, merged, explain=lambda: str(dest.status())
        )
        java = dest.routers(status)["java"]
        assert java["state"] == "Established"
        assert java["version"], java  # the API version Java answers in SetDate
        b32 = status["destination"]["b32"]

        def java_leases_on_a_floodfill() -> Any:
            now = time.time()
            return [
                (floodfill, sorted(dest.routers_of(lease_set)))
                for floodfill, lease_set in dest.floodfill_views(b32).items()
                if serving(lease_set, now) and {"java", I2PD} <= dest.routers_of(lease_set)
            ]

        held = wait_until(
            "a floodfill holding the merged LeaseSet with the Java router's leases",
            150,
            java_leases_on_a_floodfill,
        )
        # The Java router kept the session: it accepted every LeaseSet2 it was handed.
        assert router_state(dest, "java")["state"] == "Established"
        print(
            f"Java I2P {java_router.version} (API {java['version']}) over TLS: refused with "
            f"{refused['lastError']!r}, joined after the Secret was fixed; merged LeaseSet "
            f"on {held}"
        )
    assert java_password not in operator.log_text()
