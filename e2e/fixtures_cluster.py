"""pytest plugin: a real Kubernetes API server for the session, and ServiceAccount credentials.

A reachable cluster named by $KUBECONFIG is used as is; otherwise one local control plane
(etcd + kube-apiserver, see `i2p_multihome_dev.cluster`) is started for the whole session,
building kube-apiserver first if this machine has never built it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from i2p_multihome.logs import fields
from i2p_multihome_dev import cluster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeCluster:
    """The session's cluster; `local` is True when this session started (and owns) it."""

    kubeconfig: Path
    server: str
    local: bool


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    external = _reachable_env_cluster()
    if external is not None:
        yield external
        return
    directory = tmp_path_factory.mktemp("kube-cluster")
    info, _ = cluster.up(directory)
    try:
        yield KubeCluster(kubeconfig=info.kubeconfig, server=info.server, local=True)
    finally:
        cluster.down(directory)


def mint_service_account_token(
    kubeconfig: Path, namespace: str, service_account: str, expiration_seconds: int = 3600
) -> str:
    """A bound token for an existing ServiceAccount, via the TokenRequest API.

    Lets a test act with exactly the RBAC that the chart grants that ServiceAccount.
    """
    with api_client_for(kubeconfig) as api_client:
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(
                audiences=[], expiration_seconds=expiration_seconds
            )
        )
        response = kubernetes.client.CoreV1Api(api_client).create_namespaced_service_account_token(
            service_account, namespace, request
        )
        if response.status is None:
            raise RuntimeError(f"TokenRequest for {namespace}/{service_account} gave no status")
        return str(response.status.token)


def api_client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A Python client for one kubeconfig file, leaving the process-wide default alone."""
    # The kubernetes package ships no annotations for its config loader.
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client


def write_token_kubeconfig(kubeconfig: Path, token: str, path: Path) -> Path:
    """Write a kubeconfig at `path` for `kubeconfig`'s current cluster, authenticating with
    `token` only, so a process run with it has no credentials beyond the token's."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    current = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    entry = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    cluster_entry = dict(entry)
    ca_file = cluster_entry.get("certificate-authority")
    if ca_file is not None:
        # Relative paths in a kubeconfig are relative to that kubeconfig's own directory.
        cluster_entry["certificate-authority"] = str(kubeconfig.parent / ca_file)
    token_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster_entry}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "cluster", "user": "token"}}],
        "current-context": "token",
    }
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(token_config, sort_keys=False))
    return path


def _reachable_env_cluster() -> KubeCluster | None:
    """The cluster $KUBECONFIG names, if it answers /version; otherwise None."""
    env = os.environ.get("KUBECONFIG")
    if not env:
        return None
    path = Path(env)
    try:
        with api_client_for(path) as api_client:
            kubernetes.client.VersionApi(api_client).get_code(_request_timeout=5)
            server = str(api_client.configuration.host)
    # Whatever the reason (missing file, bad config, refused, TLS), it is not usable.
    except Exception as exc:
        log.warning(
            "KUBECONFIG cluster unreachable; starting a local control plane",
            extra=fields(kubeconfig=env, error=exc),
        )
        return None
    log.info("using KUBECONFIG cluster", extra=fields(kubeconfig=env, server=server))
    return KubeCluster(kubeconfig=path, server=server, local=False)
