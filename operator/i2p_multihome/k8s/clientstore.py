"""The recent clients kept across operator restarts (see `dataplane.remembered`), in a
ConfigMap the destination owns (deleted with it), sealed under a key derived from the
destination's keys: who talks to the service is readable only by whoever holds the keys,
and the operator needs no right to write Secrets. Blocking client calls: run them with
`asyncio.to_thread`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kubernetes import client

from i2p_multihome.dataplane.remembered import (
    ClientDocumentError,
    from_json_text,
    seal,
    to_json_text,
    unseal,
)
from i2p_multihome.k8s.profilestore import read_field, write_field
from i2p_multihome.logs import fields
from i2p_multihome.streaming.routes import RememberedClient
from i2p_multihome.wire.keys import DestinationKeys

log = logging.getLogger(__name__)

CLIENTS_FIELD = "clients.sealed"


def clients_configmap_name(name: str) -> str:
    return f"{name}-recent-clients"


def load_clients(
    core: client.CoreV1Api, namespace: str, name: str, keys: DestinationKeys
) -> list[RememberedClient]:
    """The clients stored for destination `name`; none when there are none yet or they
    cannot be read (they recover on their own, as without them; the reason is logged)."""
    configmap = clients_configmap_name(name)

    def where(**more: object) -> dict[str, object]:
        return fields(namespace=namespace, name=name, configmap=configmap, **more)

    sealed = read_field(core, namespace, configmap, CLIENTS_FIELD, "recent clients", where)
    if not sealed:
        return []
    try:
        clients = from_json_text(unseal(sealed, keys))
    except ClientDocumentError as exc:
        log.warning("recent clients unreadable, starting without them", extra=where(error=str(exc)))
        return []
    log.info("recent clients loaded", extra=where(clients=len(clients)))
    return clients


def save_clients(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    clients: Sequence[RememberedClient],
    keys: DestinationKeys,
    owner: dict[str, Any],
) -> None:
    """Write the clients, sealed, creating the ConfigMap (owned by the destination) if
    needed."""
    sealed = seal(to_json_text(clients), keys)
    write_field(core, namespace, clients_configmap_name(name), CLIENTS_FIELD, sealed, owner)
