"""The Helm chart in a real API server: `helm install` succeeds, and the operator, holding only
the chart ServiceAccount's token, makes the example Ready on testnet routers r5 and r6. That
proves the chart's RBAC is sufficient; `kubectl auth can-i` and a refused request prove that
what the operator does not need is not granted.

No kubelet runs here, so the chart's Deployment never gets a Pod: the operator runs as a
process with the ServiceAccount's credentials instead (TokenRequest). The release serves only
its own namespace, so it never touches other tests' objects in the shared control plane.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from e2e.fixtures_cluster import KubeCluster
from i2p_multihome_dev import demo, toolchain
from i2p_multihome_dev.kube import api_client_for, kubectl, service_account_kubeconfig
from i2p_multihome_dev.operator_process import OperatorProcess, start_operator
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import free_ports
from i2p_multihome_dev.repo import CHART_DIR
from i2p_multihome_dev.testnet import Testnet

pytestmark = [pytest.mark.cluster, pytest.mark.testnet]

CHART = CHART_DIR
ROUTERS = ("r5", "r6")  # other tests use r1..r4 at the same time
READY_TIMEOUT_S = 300.0
# kopf watches CRDs (and, serving listed namespaces, Namespaces) to notice ones created later.
# The chart grants neither: kopf logs the refusals, retries for about a minute, then serves
# what exists. Every other refusal would mean the chart's RBAC is short.


@dataclass(frozen=True)
class Release:
    kube: KubeCluster
    name: str
    namespace: str
    service_account: str
    install_output: str

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = kubectl(self.kube.kubeconfig, *args, stdin=stdin, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        where = [f"--namespace={namespace or self.namespace}"]
        if namespace == "*":
            where = ["--all-namespaces"]
        done = self.kubectl(
            "auth", "can-i", verb, resource, *where,
            f"--as=system:serviceaccount:{self.namespace}:{self.service_account}",
            check=False,
        )  # fmt: skip
        answer = done.stdout.strip()
        assert answer in {"yes", "no"}, done.stderr
        return answer == "yes"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(toolchain.ensure_helm()), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done


def install(kube: KubeCluster, name: str, namespace: str, *values: str) -> Release:
    """`helm install` as a user would; the CRDs come from the chart's crds/ (or exist)."""
    sets = [arg for value in values for arg in ("--set", value)]
    done = helm(
        "install", name, str(CHART), f"--kubeconfig={kube.kubeconfig}",
        f"--namespace={namespace}", "--create-namespace", *sets,
    )  # fmt: skip
    release = Release(kube, name, namespace, f"{name}-i2p-multihome", done.stdout)
    release.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/multihomeddestinations.multihome.i2p",
    )  # fmt: skip
    return release


def uninstall(release: Release) -> None:
    helm("uninstall", release.name, f"--kubeconfig={release.kube.kubeconfig}",
         f"--namespace={release.namespace}")  # fmt: skip
    # Without a namespace controller the namespace stays Terminating; harmless.
    release.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def namespaced(kube_cluster: KubeCluster) -> Iterator[Release]:
    """The chart serving only its own namespace (a Role and RoleBinding there)."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"chart-{suffix}"
    release = install(
        kube_cluster, f"mh{suffix}", namespace,
        "watch.allNamespaces=false", f"watch.namespaces={{{namespace}}}",
    )  # fmt: skip
    yield release
    uninstall(release)


@pytest.fixture(scope="module")
def cluster_wide(kube_cluster: KubeCluster) -> Iterator[Release]:
    """The default install (ClusterRole); no operator runs with it in the shared cluster."""
    suffix = uuid.uuid4().hex[:6]
    release = install(kube_cluster, f"cw{suffix}", f"chart-cw-{suffix}")
    yield release
    uninstall(release)


def test_helm_install_creates_the_chart_objects_and_prints_notes(namespaced: Release) -> None:
    assert "STATUS: deployed" in namespaced.install_output
    assert "kubectl apply --server-side -f crds/" in namespaced.install_output
    assert f"serves MultihomedDestinations in {namespaced.namespace}" in namespaced.install_output
    found = namespaced.kubectl(
        f"--namespace={namespaced.namespace}",
        "get", "deployment,serviceaccount,role,rolebinding,service", "-o", "name",
    ).stdout.split()  # fmt: skip
    full = namespaced.service_account
    assert sorted(found) == sorted(
        [
            f"deployment.apps/{full}",
            f"serviceaccount/{full}",
            f"role.rbac.authorization.k8s.io/{full}",
            f"rolebinding.rbac.authorization.k8s.io/{full}",
            f"service/{full}-metrics",
        ]
    )
    stored = json.loads(
        namespaced.kubectl(
            f"--namespace={namespaced.namespace}", "get", "deployment", full, "-o", "json"
        ).stdout
    )
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert f"--namespace={namespaced.namespace}" in container["args"]


def test_operator_with_the_chart_service_account_makes_the_example_ready(
    namespaced: Release, testnet: Testnet, tmp_path: Path
) -> None:
    ns = namespaced.namespace
    kubeconfig = service_account_kubeconfig(
        namespaced.kube.kubeconfig, ns, namespaced.service_account, tmp_path / "operator.kubeconfig"
    )
    log = tmp_path / "operator.log"
    operator = start_operator(kubeconfig, log, [ns])
    name = "chart-example"
    try:
        manifest = demo.example_manifest({r: testnet.router(r).address for r in ROUTERS}, name=name)
        namespaced.kubectl(f"--namespace={ns}", "apply", "-f", "-", stdin=json.dumps(manifest))

        def ready() -> dict[str, Any] | None:
            obj = json.loads(
                namespaced.kubectl(f"--namespace={ns}", "get", "mhd", name, "-o", "json").stdout
            )
            conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            ok = conditions.get("Ready", {}).get("status") == "True"
            operator.assert_running()
            return obj if ok else None

        obj = wait_until(f"{ns}/{name} Ready=True", READY_TIMEOUT_S, ready)
        status = obj["status"]
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        assert {r["name"] for r in status["routers"]} == set(ROUTERS)
        assert status["destination"]["b32"].endswith(".b32.i2p")
        # secrets get/create and events create were all used, and allowed.
        secret = json.loads(
            namespaced.kubectl(
                f"--namespace={ns}", "get", "secret", f"{name}-keys", "-o", "json"
            ).stdout
        )
        assert (
            secret["metadata"]["annotations"]["multihome.i2p/b32"] == status["destination"]["b32"]
        )
        reasons = namespaced.kubectl(
            f"--namespace={ns}", "get", "events", "-o", "jsonpath={.items[*].reason}"
        ).stdout.split()
        assert "KeysGenerated" in reasons

        # Deletion: the operator destroys the sessions and removes its finalizer (a patch).
        namespaced.kubectl(f"--namespace={ns}", "delete", "mhd", name, "--wait=false")
        wait_until(
            f"{ns}/{name} deleted",
            60,
            lambda: namespaced.kubectl(
                f"--namespace={ns}", "get", "mhd", name, check=False
            ).returncode != 0,
        )  # fmt: skip
    finally:
        operator.stop()
    unexpected = refusals(log)
    assert not unexpected, "the operator was refused:\n" + "\n".join(unexpected[:5])
    assert "hosting destination" in log.read_text()


def test_verbs_the_operator_does_not_need_are_not_granted(
    namespaced: Release, tmp_path: Path
) -> None:
    ns = namespaced.namespace
    granted = [
        ("list", "multihomeddestinations.multihome.i2p"),
        ("watch", "multihomeddestinations.multihome.i2p"),
        ("patch", "multihomeddestinations.multihome.i2p"),
        ("patch", "multihomeddestinations.multihome.i2p/status"),
        ("get", "secrets"),
        ("create", "secrets"),
        ("get", "configmaps"),
        ("create", "configmaps"),
        ("patch", "configmaps"),
        ("create", "events"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "endpointslices.discovery.k8s.io"),
    ]
    for verb, resource in granted:
        assert namespaced.can_i(verb, resource), f"{verb} {resource} should be granted"
    refused = [
        ("delete", "secrets"),
        ("list", "secrets"),
        ("update", "secrets"),
        ("get", "multihomeddestinations.multihome.i2p"),
        ("create", "multihomeddestinations.multihome.i2p"),
        ("delete", "multihomeddestinations.multihome.i2p"),
        ("update", "multihomeddestinations.multihome.i2p"),
        ("get", "pods"),
        ("list", "configmaps"),
        ("delete", "configmaps"),
        ("patch", "events"),
        ("list", "kopfpeerings.kopf.dev"),
        ("get", "endpointslices.discovery.k8s.io"),
        ("create", "endpointslices.discovery.k8s.io"),
        ("patch", "endpointslices.discovery.k8s.io"),
        ("delete", "endpointslices.discovery.k8s.io"),
        ("list", "endpoints"),
    ]
    for verb, resource in refused:
        assert not namespaced.can_i(verb, resource), f"{verb} {resource} must not be granted"
    # Nothing outside its own namespace, and nothing cluster-wide.
    assert not namespaced.can_i("list", "multihomeddestinations.multihome.i2p", "default")
    assert not namespaced.can_i("list", "multihomeddestinations.multihome.i2p", "*")
    assert not namespaced.can_i("list", "namespaces", "*")

    # The same, as a request with the token: refused with 403.
    kubeconfig = service_account_kubeconfig(
        namespaced.kube.kubeconfig, ns, namespaced.service_account, tmp_path / "sa.kubeconfig"
    )
    with api_client_for(kubeconfig) as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        with pytest.raises(kubernetes.client.ApiException) as denied:
            core.delete_namespaced_secret("anything", ns)
    assert denied.value.status == 403


def test_cluster_wide_install_grants_the_same_verbs_in_every_namespace(
    cluster_wide: Release,
) -> None:
    for where in ("default", "*"):
        assert cluster_wide.can_i("watch", "multihomeddestinations.multihome.i2p", where)
        assert cluster_wide.can_i("patch", "multihomeddestinations.multihome.i2p/status", where)
        assert cluster_wide.can_i("create", "secrets", where)
        assert cluster_wide.can_i("watch", "endpointslices.discovery.k8s.io", where)
        assert not cluster_wide.can_i("delete", "secrets", where)
        assert not cluster_wide.can_i("list", "secrets", where)
        assert not cluster_wide.can_i("delete", "multihomeddestinations.multihome.i2p", where)
    assert not cluster_wide.can_i("list", "clusterkopfpeerings.kopf.dev", "*")
    assert not cluster_wide.can_i("list", "namespaces", "*")


def refusals(log: Path) -> list[str]:
    """Lines of the operator's log where the API server refused it."""
    lines = log.read_text().splitlines()
    # A whole-word 403: a port such as 40351 in a connect error is not a refusal.
    return [line for line in lines if "forbidden" in line.lower() or re.search(r"\b403\b", line)]


def test_peering_release_lets_the_operator_join_its_kopf_peering(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """With peering.enabled, the chart's KopfPeering and kopfpeerings rules are all the
    operator needs to keep its peer entry fresh, serve, and leave the peering on SIGTERM."""
    suffix = uuid.uuid4().hex[:6]
    ns, peering = f"chart-peer-{suffix}", f"mh-{suffix}"
    release = install(
        kube_cluster, f"pe{suffix}", ns,
        "watch.allNamespaces=false", f"watch.namespaces={{{ns}}}",
        "peering.enabled=true", f"peering.name={peering}",
    )  # fmt: skip
    try:
        assert release.can_i("patch", "kopfpeerings.kopf.dev")
        assert not release.can_i("delete", "kopfpeerings.kopf.dev")
        assert not release.can_i("list", "clusterkopfpeerings.kopf.dev", "*")
        kubeconfig = service_account_kubeconfig(
            kube_cluster.kubeconfig, ns, release.service_account, tmp_path / "operator.kubeconfig"
        )
        log = tmp_path / "operator.log"
        operator: OperatorProcess = start_operator(kubeconfig, log, [ns], peering=peering)
        try:
            (closed_port,) = free_ports(1)
            manifest = {
                "apiVersion": "multihome.i2p/v1alpha1",
                "kind": "MultihomedDestination",
                "metadata": {"name": "unreachable"},
                # Nothing listens there: the destination stays NotPublished, with a status.
                "spec": {
                    "routers": [{"name": "r0", "i2cp": {"host": "127.0.0.1", "port": closed_port}}]
                },
            }
            release.kubectl(f"--namespace={ns}", "apply", "-f", "-", stdin=json.dumps(manifest))

            def peers() -> dict[str, Any]:
                obj = json.loads(
                    release.kubectl(
                        f"--namespace={ns}", "get", "kopfpeering", peering, "-o", "json"
                    ).stdout
                )
                found: dict[str, Any] = obj.get("status") or {}
                return found

            def served() -> bool:
                obj = json.loads(
                    release.kubectl(
                        f"--namespace={ns}", "get", "mhd", "unreachable", "-o", "json"
                    ).stdout
                )
                return bool(obj.get("status", {}).get("conditions"))

            wait_until("the operator's entry in the KopfPeering", READY_TIMEOUT_S, peers)
            wait_until("status on the destination (not paused)", READY_TIMEOUT_S, served)
            release.kubectl(f"--namespace={ns}", "delete", "mhd", "unreachable", "--wait=false")
            wait_until(
                "the destination deleted",
                60,
                lambda: release.kubectl(
                    f"--namespace={ns}", "get", "mhd", "unreachable", check=False
                ).returncode != 0,
            )  # fmt: skip
        finally:
            # On SIGTERM the operator removes its entry (a patch) and exits in time; one
            # that needs SIGKILL fails here.
            stop_s = operator.stop()
        print(f"operator with peering stopped in {stop_s:.1f}s on SIGTERM")
        assert peers() == {}
        unexpected = refusals(log)
        assert not unexpected, "the operator was refused:\n" + "\n".join(unexpected[:5])
    finally:
        uninstall(release)
