"""Which backend serves a client's packet: pure lookups over `spec.ports`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from i2p_multihome.model.v1alpha1 import BackendSpec, PortProtocol, PortSpec


@dataclass(frozen=True)
class PortMap:
    """`spec.ports` by protocol and I2P port. A packet to a port no entry names goes to the
    protocol's port-0 entry if there is one, as an i2pd server tunnel without `inport`
    takes every port."""

    entries: tuple[PortSpec, ...] = ()

    @classmethod
    def of(cls, ports: Iterable[PortSpec]) -> PortMap:
        return cls(tuple(ports))

    def lookup(self, protocol: PortProtocol, port: int) -> PortSpec | None:
        fallback = None
        for entry in self.entries:
            if entry.protocol is not protocol:
                continue
            if entry.port == port:
                return entry
            if entry.port == 0:
                fallback = entry
        return fallback

    def serves(self, protocol: PortProtocol) -> bool:
        return any(entry.protocol is protocol for entry in self.entries)


def backend_address(backend: BackendSpec, namespace: str) -> tuple[str, int]:
    """(host, port) to connect to: the host as given, or the Service's cluster DNS name in
    the destination's namespace (resolved by the cluster's DNS, as any pod would)."""
    if backend.service is not None:
        return f"{backend.service.name}.{namespace}.svc", backend.service.port
    if backend.host is None or backend.port is None:  # the model refuses this
        raise ValueError("backend without host and port")
    return backend.host, backend.port
