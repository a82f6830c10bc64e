"""The local control plane behaves like a real cluster where the operator's tests depend on it:
kubectl, CEL validation on CRDs, RBAC for ServiceAccount tokens, and a clean `cluster` CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from e2e.fixtures_cluster import KubeCluster
from i2p_multihome_dev import cluster, toolchain
from i2p_multihome_dev.kube import api_client_for, kubectl, service_account_kubeconfig
from i2p_multihome_dev.processes import live_processes

pytestmark = pytest.mark.cluster

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: replicaranges.harness.i2p-multihome.test
spec:
  group: harness.i2p-multihome.test
  scope: Namespaced
  names: {plural: replicaranges, singular: replicarange, kind: ReplicaRange}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [min, max]
              properties:
                min: {type: integer}
                max: {type: integer}
              x-kubernetes-validations:
                - rule: self.min <= self.max
                  message: min must not exceed max
"""


def test_kubectl_version_and_api_resources(kube_cluster: KubeCluster) -> None:
    version = json.loads(kubectl(kube_cluster.kubeconfig, "version", "--output=json").stdout)
    if kube_cluster.local:
        assert version["serverVersion"]["gitVersion"] == toolchain.KUBE_VERSION
    resources = kubectl(kube_cluster.kubeconfig, "api-resources", "--output=name").stdout.split()
    assert "customresourcedefinitions.apiextensions.k8s.io" in resources
    assert "roles.rbac.authorization.k8s.io" in resources


def test_crd_cel_rule_rejects_violating_object(kube_cluster: KubeCluster) -> None:
    kubectl(kube_cluster.kubeconfig, "apply", "-f", "-", stdin=CRD)
    try:
        kubectl(
            kube_cluster.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/replicaranges.harness.i2p-multihome.test",
        )
        name = f"r-{uuid.uuid4().hex[:8]}"

        def create(low: int, high: int) -> subprocess.CompletedProcess[str]:
            manifest = json.dumps(
                {
                    "apiVersion": "harness.i2p-multihome.test/v1",
                    "kind": "ReplicaRange",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"min": low, "max": high},
                }
            )
            return kubectl(
                kube_cluster.kubeconfig, "create", "-f", "-", stdin=manifest, check=False
            )

        rejected = create(3, 1)
        assert rejected.returncode != 0
        assert "min must not exceed max" in rejected.stderr
        assert create(1, 3).returncode == 0
    finally:
        kubectl(kube_cluster.kubeconfig, "delete", "crd/replicaranges.harness.i2p-multihome.test")


def test_service_account_token_has_only_its_roles_rights(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    namespace = f"rbac-{uuid.uuid4().hex[:8]}"
    kubectl(
        kube_cluster.kubeconfig,
        "apply",
        "-f",
        "-",
        stdin=f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {namespace}}}
rules:
  - {{apiGroups: [""], resources: [configmaps], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
  - {{kind: ServiceAccount, name: reader, namespace: {namespace}}}
""",
    )
    try:
        token_kubeconfig = service_account_kubeconfig(
            kube_cluster.kubeconfig, namespace, "reader", tmp_path / "reader.kubeconfig"
        )
        with api_client_for(token_kubeconfig) as api_client:
            core = kubernetes.client.CoreV1Api(api_client)
            core.list_namespaced_config_map(namespace)
            with pytest.raises(kubernetes.client.ApiException) as denied:
                core.list_namespaced_secret(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)
    finally:
        # Without a namespace controller the local cluster leaves it Terminating; harmless.
        kubectl(kube_cluster.kubeconfig, "delete", "namespace", namespace, "--wait=false")


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cluster_cli(*argv: str) -> CliResult:
    """Run `i2p-multihome-dev cluster ...` in-process through the real argument parser."""
    parser = argparse.ArgumentParser()
    cluster.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cluster", *argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def second_cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A control plane of the tests' own, apart from the session's, so stopping it is safe."""
    directory = tmp_path_factory.mktemp("second-cluster")
    yield directory
    run_cluster_cli("down", "--dir", str(directory))


def test_cluster_up_twice_reuses_the_running_cluster(second_cluster_dir: Path) -> None:
    first = run_cluster_cli("up", "--dir", str(second_cluster_dir))
    assert first.code == 0, first.err
    assert "started new cluster" in first.err
    state = cluster.ClusterState.load(second_cluster_dir)
    second = run_cluster_cli("up", "--dir", str(second_cluster_dir))
    assert second.code == 0, second.err
    assert "reusing running cluster" in second.err
    assert json.loads(second.out) == json.loads(first.out)
    assert cluster.ClusterState.load(second_cluster_dir) == state


def test_cluster_down_leaves_no_process_or_port(second_cluster_dir: Path) -> None:
    assert run_cluster_cli("up", "--dir", str(second_cluster_dir)).code == 0
    state = cluster.ClusterState.load(second_cluster_dir)
    assert state is not None
    processes = (state.etcd, state.apiserver)

    assert run_cluster_cli("down", "--dir", str(second_cluster_dir)).code == 0

    groups = {p.pid for p in processes}
    assert not [pid for pid, stat in live_processes() if pid in groups or int(stat[2]) in groups]
    for port in (port for p in processes for port in p.ports):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not (second_cluster_dir / cluster.STATE_FILE).exists()
    assert run_cluster_cli("down", "--dir", str(second_cluster_dir)).code == 0


def test_cluster_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    (tmp_path / cluster.STATE_FILE).write_text("{not json")
    result = run_cluster_cli("down", "--dir", str(tmp_path))
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert cluster.STATE_FILE in result.err
