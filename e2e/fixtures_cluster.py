"""pytest plugin: a real Kubernetes API server for the session.

A reachable cluster named by $KUBECONFIG is used as is; otherwise one local control plane
(etcd + kube-apiserver, see `i2p_multihome_dev.cluster`) is started for the whole session,
building kube-apiserver first if this machine has never built it. A control plane that
cannot start fails the tests that need it, unless the test bed is opted out
(I2P_MULTIHOME_SKIP_TESTBED=1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from e2e.fixtures_testnet import skip_if_testbed_opted_out
from i2p_multihome.logs import fields
from i2p_multihome_dev import cluster
from i2p_multihome_dev.kube import api_client_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeCluster:
    """The session's cluster; `local` is True when this session started (and owns) it."""

    kubeconfig: Path
    server: str
    local: bool


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    skip_if_testbed_opted_out()
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
