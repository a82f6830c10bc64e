"""Destination keys and router credentials from Secrets (blocking client calls: run them
with `asyncio.to_thread`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from i2p_multihome.wire.keys import DestinationKeys, KeyFileError

KEYS_FIELD = "keys.json"
I2PD_KEYS_SUFFIX = ".dat"
MANAGED_BY = {"app.kubernetes.io/managed-by": "i2p-multihome"}


class SecretError(Exception):
    """A Secret that is missing or unusable; the message says which and what to do."""


@dataclass(frozen=True)
class KeysResult:
    keys: DestinationKeys
    secret: str
    created: bool


def keys_secret_name(name: str, secret_ref: str | None) -> str:
    return secret_ref or f"{name}-keys"


def load_or_create_keys(
    core: client.CoreV1Api, namespace: str, secret: str, owner: dict[str, Any] | None
) -> KeysResult:
    """The destination keys from `secret`, or new keys written there. `owner` (an owner
    reference) is set only on a Secret this operator creates, never on the user's own."""
    try:
        existing = core.read_namespaced_secret(secret, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise SecretError(f"reading Secret {namespace}/{secret}: {exc.reason}") from None
        keys = DestinationKeys.generate()
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=secret,
                namespace=namespace,
                labels=MANAGED_BY,
                annotations={"multihome.i2p/b32": keys.destination.b32},
                owner_references=[owner] if owner else None,
            ),
            type="Opaque",
            data={KEYS_FIELD: base64.b64encode(keys.to_json().encode()).decode()},
        )
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as create_exc:
            if create_exc.status == 409:  # another writer won the race: use theirs
                return load_or_create_keys(core, namespace, secret, owner)
            raise SecretError(
                f"creating Secret {namespace}/{secret}: {create_exc.reason}"
            ) from None
        return KeysResult(keys, secret, created=True)
    return KeysResult(_keys_from(existing, namespace, secret), secret, created=False)


def _keys_from(secret: client.V1Secret, namespace: str, name: str) -> DestinationKeys:
    data: dict[str, Any] = secret.data or {}
    try:
        if KEYS_FIELD in data:
            return DestinationKeys.from_json(base64.b64decode(data[KEYS_FIELD]).decode())
        dat = sorted(k for k in data if k.endswith(I2PD_KEYS_SUFFIX))
        if dat:
            return DestinationKeys.from_i2pd_dat(base64.b64decode(data[dat[0]]))
    except (KeyFileError, ValueError) as exc:
        raise SecretError(f"Secret {namespace}/{name}: {exc}") from None
    raise SecretError(
        f"Secret {namespace}/{name} has no '{KEYS_FIELD}' and no i2pd '*{I2PD_KEYS_SUFFIX}' "
        "key; delete it to have keys generated, or add an i2pd private key file"
    )


def router_credentials(core: client.CoreV1Api, namespace: str, secret: str) -> tuple[str, str]:
    """`username` and `password` for a Java router with i2cp.auth."""
    try:
        data = core.read_namespaced_secret(secret, namespace).data or {}
    except ApiException as exc:
        raise SecretError(f"reading Secret {namespace}/{secret}: {exc.reason}") from None
    try:
        return (
            base64.b64decode(data["username"]).decode(),
            base64.b64decode(data["password"]).decode(),
        )
    except (KeyError, ValueError):
        raise SecretError(
            f"Secret {namespace}/{secret} needs 'username' and 'password' keys"
        ) from None
