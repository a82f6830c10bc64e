"""Peer profiles kept across operator restarts in a ConfigMap the destination owns (deleted
with it), never in its status: they are the balancer's memory, not something to report.
Blocking client calls: run them with `asyncio.to_thread`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from i2p_multihome.balancer.profiles import (
    PeerProfiles,
    ProfileDocumentError,
    from_json_text,
    to_json_text,
)
from i2p_multihome.k8s.secrets import MANAGED_BY
from i2p_multihome.logs import fields

log = logging.getLogger(__name__)

PROFILES_FIELD = "profiles.json"


def profiles_configmap_name(name: str) -> str:
    return f"{name}-peer-profiles"


def load_profiles(core: client.CoreV1Api, namespace: str, name: str, now_s: float) -> PeerProfiles:
    """The profiles stored for destination `name`; none when there are none yet or they
    cannot be read (the balancer learns them again; the reason is logged)."""
    configmap = profiles_configmap_name(name)

    def where(**more: object) -> dict[str, object]:
        return fields(namespace=namespace, name=name, configmap=configmap, **more)

    text = read_field(core, namespace, configmap, PROFILES_FIELD, "peer profiles", where)
    if text is None:
        return PeerProfiles()
    try:
        profiles = from_json_text(text, now_s)
    except ProfileDocumentError as exc:
        log.warning("peer profiles unreadable, starting afresh", extra=where(error=str(exc)))
        return PeerProfiles()
    log.info("peer profiles loaded", extra=where(peers=len(profiles)))
    return profiles


def save_profiles(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    profiles: PeerProfiles,
    owner: dict[str, Any],
) -> None:
    """Write the profiles, creating the ConfigMap (owned by the destination) if needed."""
    write_field(
        core, namespace, profiles_configmap_name(name), PROFILES_FIELD, to_json_text(profiles),
        owner,
    )  # fmt: skip


def read_field(
    core: client.CoreV1Api,
    namespace: str,
    configmap: str,
    key: str,
    what: str,
    where: Callable[..., dict[str, object]],
) -> str | None:
    """Field `key` of a ConfigMap the operator keeps; None when there is none yet or it
    cannot be read (logged as `what`)."""
    try:
        stored = core.read_namespaced_config_map(configmap, namespace)
    except ApiException as exc:
        if exc.status != 404:
            log.warning(f"{what} not read", extra=where(error=exc.reason))
        return None
    return (stored.data or {}).get(key, "")


def write_field(
    core: client.CoreV1Api,
    namespace: str,
    configmap: str,
    key: str,
    text: str,
    owner: dict[str, Any],
) -> None:
    """Set field `key` of a ConfigMap the operator keeps, creating it (owned by the
    destination, so deleted with it) if needed."""
    data = {key: text}
    try:
        core.patch_namespaced_config_map(configmap, namespace, {"data": data})
        return
    except ApiException as exc:
        if exc.status != 404:
            raise
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name=configmap, namespace=namespace, labels=MANAGED_BY, owner_references=[owner]
        ),
        data=data,
    )
    try:
        core.create_namespaced_config_map(namespace, body)
    except ApiException as exc:
        if exc.status != 409:  # created meanwhile: the next save patches it
            raise
