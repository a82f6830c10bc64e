"""Talking to a Kubernetes API server the way a user would: kubectl, helm, and kubeconfigs
that hold a ServiceAccount's token and nothing more."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from i2p_multihome.model.v1alpha1 import GROUP, PLURAL, VERSION
from i2p_multihome_dev import toolchain
from i2p_multihome_dev.polling import wait_until

KUBECTL_TIMEOUT_S = 120
HELM_TIMEOUT_S = 300


class KubectlError(RuntimeError):
    """kubectl or helm failed; the message quotes the command and its stderr."""


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`kubectl --kubeconfig=KUBECONFIG ARGS`; with `check`, a failure is a KubectlError."""
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=False,
    )
    if check and done.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done


def install_crds(kubeconfig: Path, *files: Path, field_manager: str | None = None) -> None:
    """Apply CRD files or directories (server-side, idempotent) and wait until each is served.

    Helm installs a chart's crds/ only on the first install and never upgrades them; applying
    them like this first is the upgrade story the chart's README gives.
    """
    manager = [f"--field-manager={field_manager}"] if field_manager else []
    for path in files:
        kubectl(
            kubeconfig, "apply", "--server-side", "--force-conflicts", *manager, "-f", str(path)
        )
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))


def helm_install(
    kubeconfig: Path,
    chart: Path,
    release: str,
    namespace: str,
    values: dict[str, Any] | None = None,
) -> None:
    """`helm upgrade --install` the chart, after applying its CRDs server-side."""
    if not (chart / "Chart.yaml").is_file():
        raise KubectlError(f"no Helm chart at {chart}; run from a checkout of the repository")
    install_crds(kubeconfig, chart / "crds", field_manager=release)
    done = subprocess.run(
        [
            str(toolchain.ensure_helm()), "upgrade", "--install", release, str(chart),
            f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", "--create-namespace",
            *(["--values", "-"] if values else []),
        ],
        input=json.dumps(values) if values else None,
        capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise KubectlError(f"helm upgrade --install {release}: {done.stderr.strip()}")


def api_client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A Python client for one kubeconfig file, leaving the process-wide default alone."""
    # The kubernetes package ships no annotations for its config loader.
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client


def mint_service_account_token(
    kubeconfig: Path, namespace: str, service_account: str, expiration_seconds: int = 3600
) -> str:
    """A bound token for an existing ServiceAccount, via the TokenRequest API."""
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
            raise KubectlError(f"TokenRequest for {namespace}/{service_account} gave no status")
        return str(response.status.token)


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


def service_account_kubeconfig(
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    path: Path,
    expiration_seconds: int = 3600,
) -> Path:
    """A kubeconfig at `path` that authenticates as the ServiceAccount only (TokenRequest),
    so what a process run with it may do is exactly what RBAC grants that ServiceAccount."""
    token = mint_service_account_token(
        admin_kubeconfig, namespace, service_account, expiration_seconds
    )
    return write_token_kubeconfig(admin_kubeconfig, token, path)


def without_empty(value: Any) -> Any:
    """None and [] mean "absent" in the models; the API server leaves such fields out."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


class Namespace:
    """One namespace of a cluster, read through the Python client, written with kubectl."""

    def __init__(self, kubeconfig: Path, name: str) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self._api = api_client_for(kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self._api)
        self.core = kubernetes.client.CoreV1Api(self._api)

    def create(self) -> Namespace:
        """Create it, and return once MultihomedDestinations are served in it: a CRD is
        Established a moment before a new namespace's discovery serves its resource."""
        kubectl(self.kubeconfig, "create", "namespace", self.name)
        wait_until(
            f"multihomeddestinations to be served in {self.name}",
            30,
            lambda: self.kubectl("get", "mhd", check=False).returncode == 0,
            interval=0.5,
            error=KubectlError,
        )
        return self

    def close(self) -> None:
        # The kubernetes package ships no annotations for its API client.
        self._api.close()  # type: ignore[no-untyped-call]

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, f"--namespace={self.name}", *args, stdin=stdin, check=check)

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(document))

    def mhd(self, name: str) -> dict[str, Any] | None:
        """The MultihomedDestination `name`, or None when there is none."""
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.name, PLURAL, name, _request_timeout=10
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def mhds(self) -> list[dict[str, Any]]:
        listed = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.name, PLURAL, _request_timeout=30
            ),
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def secret(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.core.read_namespaced_secret(
            name, self.name, _request_timeout=10
        ).to_dict()
        return found

    def events(self, involved: str | None = None) -> list[dict[str, Any]]:
        """Events in the namespace as `kubectl get events` shows them (optionally for one
        object), oldest first."""
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "events", "-o", "json").stdout
        )["items"]
        if involved is not None:
            items = [e for e in items if e["involvedObject"].get("name") == involved]
        return items

    def has_event(self, involved: str, reason: str, kind: str) -> bool:
        return any(e["reason"] == reason and e["type"] == kind for e in self.events(involved))
