"""Repliable datagrams to UDP backends, like i2pd's UDP server tunnel: one backend socket per
(client, port), closed after an idle time, its replies sent back to that client through the
router its latest datagram came through.

Replies are repliable datagrams (protocol 17), not raw ones: an i2pd 2.45.1 SAM DATAGRAM
session registers a receiver for repliable datagrams only (SAM.cpp, SESSION CREATE), so a
raw reply would be dropped there ("no receiver for raw datagram").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from i2p_multihome.clock import Clock, wait_event
from i2p_multihome.dataplane.ports import PortMap
from i2p_multihome.dataplane.stats import (
    DROP_BAD_DATAGRAM,
    DROP_FLOW_LIMIT,
    DROP_NO_PORT,
    DROP_NO_SESSION,
    DROP_RAW_DATAGRAM,
    DROP_REPLY_QUEUE_FULL,
    DataPlaneStats,
)
from i2p_multihome.dataplane.streams import BackendResolver, Sender
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import PortProtocol, PortSpec
from i2p_multihome.streaming.endpoint import DROP_HELD_FOR_MOVE
from i2p_multihome.streaming.routes import ClientRoutes, RememberedClient
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.datagrams import RepliableDatagram, Signer
from i2p_multihome.wire.messages import PROTOCOL_DATAGRAM, Payload
from i2p_multihome.wire.structures import Destination

log = logging.getLogger(__name__)

MAX_FLOWS = 256  # backend sockets at once, one per (client, port)
FLOW_IDLE_S = 120.0  # a flow nobody used for this long is closed (its socket freed)
MAX_QUEUED_REPLIES = 512  # backend replies waiting to be signed and sent
UDP_RECEIVE_MAX = 64 * 1024
MAX_WAITING = 16  # datagrams held per flow while its backend socket opens


@dataclass
class _Flow:
    key: tuple[bytes, str]
    client: Destination
    client_port: int
    port: PortSpec
    via: str
    last_used: float
    transport: asyncio.DatagramTransport | None = None
    # Datagrams that arrived while the backend socket was being opened.
    waiting: list[bytes] = field(default_factory=list)


class _BackendProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: DatagramService, flow: _Flow) -> None:
        self._service = service
        self._flow = flow

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._service.backend_replied(self._flow, data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" from a backend that is not listening: nothing to tell
        # the client (datagrams are unreliable), the flow stays until it idles out.
        log.debug("backend datagram error", extra=fields(port=self._flow.port.name, error=exc))


class DatagramService:
    def __init__(
        self,
        local: Signer,
        ports: PortMap,
        resolve: BackendResolver,
        send: Sender,
        clock: Clock,
        stats: DataPlaneStats,
        log_fields: Mapping[str, object] | None = None,
        on_client: Callable[[str], None] = lambda router: None,
        nudge: Callable[[Destination, str], None] = lambda client, router: None,
    ) -> None:
        """`nudge(client, router)`: send `client` a message through `router` that needs no
        answer (a streaming ping), for a client moved to `router` (see move_clients)."""
        self._local = local
        self._on_client = on_client  # a client's first datagram to a port came through it
        self._nudge = nudge
        self.ports = ports
        self._resolve = resolve
        self._send = send
        self._clock = clock
        self._stats = stats
        self._log_fields = dict(log_fields or {})
        self._flows: dict[tuple[bytes, str], _Flow] = {}
        # The router each client's latest datagram came through, while it has flows (and
        # remembered a while after): every flow of the client answers through it (its
        # end-to-end session lives there).
        self._routes = ClientRoutes()
        self._replies: asyncio.Queue[tuple[_Flow, bytes]] = asyncio.Queue(MAX_QUEUED_REPLIES)
        self._wake = asyncio.Event()

    @property
    def flows(self) -> int:
        return len(self._flows)

    def receive(self, router: str, payload: Payload) -> None:
        """A datagram that arrived through `router`."""
        if payload.protocol != PROTOCOL_DATAGRAM:
            self._stats.drops[DROP_RAW_DATAGRAM] += 1
            return
        try:
            datagram = RepliableDatagram.decode_verified(payload.data)
        except WireError:
            self._stats.drops[DROP_BAD_DATAGRAM] += 1
            return
        port = self.ports.lookup(PortProtocol.DATAGRAM, payload.to_port)
        if port is None:
            self._stats.drops[DROP_NO_PORT] += 1
            return
        now = self._clock.monotonic()
        key = (datagram.source.hash, port.name)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= MAX_FLOWS:
                self._stats.drops[DROP_FLOW_LIMIT] += 1
                return
            flow = _Flow(key, datagram.source, payload.from_port, port, router, now)
            self._flows[key] = flow
            self._on_client(router)
            asyncio.get_running_loop().create_task(self._open(flow, datagram.payload))
        else:
            flow.via, flow.last_used, flow.client_port = router, now, payload.from_port
            if flow.transport is not None:
                flow.transport.sendto(datagram.payload)
            elif len(flow.waiting) < MAX_WAITING:
                flow.waiting.append(datagram.payload)
            else:
                self._stats.drops[DROP_FLOW_LIMIT] += 1
                return
        self._routes.heard(datagram.source.hash, router, now, datagram.source)
        self._stats.datagrams_in[port.name] += 1
        self._stats.bytes_in[(router, port.name)] += len(datagram.payload)
        self._wake.set()

    def routes(self) -> dict[bytes, str]:
        """The router each client with flows is answered through, by its hash."""
        return self._routes.routes()

    def remembered(self) -> list[RememberedClient]:
        """The clients worth keeping across a restart (see `ClientRoutes.remembered`)."""
        return self._routes.remembered(self._clock.monotonic(), self._clock.wall())

    def held(self, client: bytes) -> bool:
        """Whether replies to `client` wait for its move to a new router (see move_clients)."""
        return self._routes.held(client, self._clock.monotonic())

    def move_clients(self, lost: Collection[str], choose: Callable[[bytes], str]) -> int:
        """The routers in `lost` are gone: answer their clients, those with flows and those
        remembered, through `choose(client)` once their sessions there can have replaced the
        old ones (see streaming.routes), and nudge each then: a client that only sends
        would otherwise go on sending to the lost router's leases and never hear a reply.
        Returns how many clients moved."""
        moved = self._routes.move(lost, choose, self._clock.monotonic())
        for flow in self._flows.values():
            if flow.via in lost:
                flow.via = self._routes.via(flow.client.hash) or choose(flow.client.hash)
        self._wake.set()
        return len(moved)

    def backend_replied(self, flow: _Flow, data: bytes) -> None:
        try:
            self._replies.put_nowait((flow, data[:UDP_RECEIVE_MAX]))
        except asyncio.QueueFull:
            self._stats.drops[DROP_REPLY_QUEUE_FULL] += 1
            return
        self._wake.set()

    async def run(self) -> None:
        """Sign and send backend replies, close idle flows; until cancelled."""
        try:
            while True:
                while not self._replies.empty():
                    await self._reply(*self._replies.get_nowait())
                self._close_idle()
                self._release_due()
                timeout = FLOW_IDLE_S / 4
                if (release := self._routes.next_release()) is not None:
                    timeout = min(timeout, max(0.0, release - self._clock.monotonic()))
                await wait_event(self._wake, self._clock, timeout)
                self._wake.clear()
        finally:
            for flow in list(self._flows.values()):
                self._close(flow)

    async def _open(self, flow: _Flow, first: bytes) -> None:
        host, port = self._resolve(flow.port.backend)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _BackendProtocol(self, flow), remote_addr=(host, port)
            )
        except OSError as exc:
            log.warning(
                "datagram backend unreachable",
                extra=fields(**self._log_fields, port=flow.port.name, error=str(exc)),
            )
            self._close(flow)
            return
        if self._flows.get(flow.key) is not flow:  # closed while opening
            transport.close()
            return
        flow.transport = transport
        for data in (first, *flow.waiting):
            transport.sendto(data)
        flow.waiting.clear()

    async def _reply(self, flow: _Flow, data: bytes) -> None:
        now = flow.last_used = self._clock.monotonic()
        if self._routes.held(flow.client.hash, now):
            self._stats.drops[DROP_HELD_FOR_MOVE] += 1
            return
        try:
            datagram = RepliableDatagram.build(self._local, data).encode()
        except WireError:  # larger than one I2CP payload
            self._stats.drops[DROP_BAD_DATAGRAM] += 1
            return
        payload = Payload(datagram, PROTOCOL_DATAGRAM, flow.port.port, flow.client_port)
        via = self._routes.via(flow.client.hash) or flow.via
        if await self._send(via, flow.client, payload.encode(compresslevel=0)):
            self._stats.datagrams_out[flow.port.name] += 1
            self._stats.bytes_out[(via, flow.port.name)] += len(data)
        else:
            self._stats.drops[DROP_NO_SESSION] += 1

    def _release_due(self) -> None:
        for client in self._routes.release_due(self._clock.monotonic()):
            address, via = self._routes.address(client), self._routes.route_of(client)
            if address is not None and via is not None:
                self._nudge(address, via)

    def _close_idle(self) -> None:
        cutoff = self._clock.monotonic() - FLOW_IDLE_S
        for flow in [f for f in self._flows.values() if f.last_used < cutoff]:
            self._close(flow)

    def _close(self, flow: _Flow) -> None:
        self._flows.pop(flow.key, None)
        client = flow.client.hash
        if not any(key[0] == client for key in self._flows):
            self._routes.forget(client)
        if flow.transport is not None:
            flow.transport.close()
