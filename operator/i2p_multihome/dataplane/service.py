"""One destination's data plane: payloads in from every router, replies out through the
router each client's traffic came through."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace

from i2p_multihome.clock import Clock
from i2p_multihome.dataplane.datagrams import DatagramService
from i2p_multihome.dataplane.ports import PortMap, backend_address
from i2p_multihome.dataplane.stats import (
    DROP_MALFORMED_PAYLOAD,
    DROP_UNKNOWN_PROTOCOL,
    DataPlaneStats,
)
from i2p_multihome.dataplane.streams import Sender, StreamService
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import BackendSpec, MultihomedDestinationSpec
from i2p_multihome.streaming import StreamConfig
from i2p_multihome.streaming.routes import KEPT_ACROSS_RESTART, RememberedClient
from i2p_multihome.wire import messages
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.keys import DestinationKeys

log = logging.getLogger(__name__)


# Under client affinity a bare SYN waits only this long (StreamConfig.syn_answer_delay):
# a client's stray resend reaches a lease of the router that holds its session, so the wait
# only has to keep two resends from leaving before our answer (i2pd sets the RTO to 9 s at
# the second). Measured on the testnet (bench_conversations --affinity, 2026-12-02): no
# stall and no "Can't handle" in 160 requests, p99 first byte 1.4-1.8 times single-homed.
AFFINITY_SYN_ANSWER_DELAY = 0.04


def stream_config_for(spec: MultihomedDestinationSpec, base: StreamConfig) -> StreamConfig:
    """The streaming configuration for `spec`: `base`, with the shorter SYN answer under
    client affinity."""
    if not spec.lease_set.client_affinity:
        return base
    return replace(base, syn_answer_delay=min(base.syn_answer_delay, AFFINITY_SYN_ANSWER_DELAY))


class DataPlane:
    def __init__(
        self,
        keys: DestinationKeys,
        spec: MultihomedDestinationSpec,
        namespace: str,
        send: Sender,
        clock: Clock,
        stream_config: StreamConfig | None = None,
        log_fields: Mapping[str, object] | None = None,
        on_change: Callable[[], None] = lambda: None,
        on_client: Callable[[str], None] = lambda router: None,
    ) -> None:
        """`on_client(router)`: a client opened a stream or a datagram flow through
        `router` (client affinity renews that router's own LeaseSet, see the balancer)."""
        self.stats = DataPlaneStats()
        self._clock = clock
        self._stream_config = stream_config or StreamConfig()
        self._log_fields = dict(log_fields or {})
        self._namespace = namespace
        ports = PortMap.of(spec.ports)
        self.streams = StreamService(
            keys,
            ports,
            self._resolve,
            send,
            clock,
            self.stats,
            stream_config_for(spec, self._stream_config),
            log_fields,
            on_change,
            on_client,
        )
        self.datagrams = DatagramService(
            keys, ports, self._resolve, send, clock, self.stats, log_fields, on_client,
            nudge=self.streams.nudge,
        )  # fmt: skip

    def receive(self, router: str, message: messages.MessagePayload) -> None:
        """A MessagePayload a client sent through `router`. Malformed ones are counted and
        dropped; nothing a client sends can stop the data plane."""
        try:
            payload = messages.Payload.decode(message.payload)
        except WireError:
            self.stats.drops[DROP_MALFORMED_PAYLOAD] += 1
            return
        log.debug(
            "payload received",
            extra=fields(
                **self._log_fields, router=router, protocol=payload.protocol,
                from_port=payload.from_port, to_port=payload.to_port, bytes=len(payload.data),
            ),
        )  # fmt: skip
        if payload.protocol == messages.PROTOCOL_STREAMING:
            self.streams.receive(router, payload)
        elif payload.protocol in (messages.PROTOCOL_DATAGRAM, messages.PROTOCOL_RAW):
            self.datagrams.receive(router, payload)
        else:
            self.stats.drops[DROP_UNKNOWN_PROTOCOL] += 1

    def move_clients(self, lost: Collection[str], survivors: Sequence[str]) -> int:
        """The routers in `lost` are gone and `survivors` hold a LeaseSet without them:
        answer every client of a lost router through a survivor (spread by the client's
        hash), so that router gives it a new end-to-end session and the current LeaseSet:
        with the streams' pending packets, or a ping for a client that has none.
        Returns how many clients (stream remotes and datagram clients) moved."""
        if not survivors:
            return 0
        choose = _spread_over(survivors)
        return self.streams.move_clients(lost, choose) + self.datagrams.move_clients(lost, choose)

    def remembered_clients(self) -> list[RememberedClient]:
        """The recent clients, of streams and of datagrams, worth keeping across a restart
        of the balancer: each once, most recently heard first (see `ClientRoutes`)."""
        now, wall_now = self._clock.monotonic(), self._clock.wall()
        latest: dict[bytes, RememberedClient] = {}
        for client in (
            *self.streams.endpoint.remembered_remotes(now, wall_now),
            *self.datagrams.remembered(),
        ):
            kept = latest.get(client.address.hash)
            if kept is None or client.last_heard_s > kept.last_heard_s:
                latest[client.address.hash] = client
        ordered = sorted(latest.values(), key=lambda client: client.last_heard_s, reverse=True)
        return ordered[:KEPT_ACROSS_RESTART]

    def restore_clients(self, clients: Collection[RememberedClient], serving: Sequence[str]) -> int:
        """Clients kept across a restart: their sessions went with every router's, so each
        is answered through one of `serving` (spread by its hash) and pinged from there
        once its old session can be replaced; the ping gives it that router's session and
        LeaseSet. Returns how many were restored."""
        if not serving:
            return 0
        return self.streams.restore_clients(clients, _spread_over(serving))

    def apply_spec(self, spec: MultihomedDestinationSpec) -> None:
        """New ports serve new streams and flows; those already open keep their backend
        (and their streaming configuration)."""
        ports = PortMap.of(spec.ports)
        self.streams.ports = ports
        self.datagrams.ports = ports
        self.streams.endpoint.config = stream_config_for(spec, self._stream_config)

    async def run(self) -> None:
        """Serve until cancelled."""
        await asyncio.gather(self.streams.run(), self.datagrams.run())

    async def shutdown(self) -> None:
        """Reset every stream, so clients learn at once rather than by timing out."""
        await self.streams.shutdown()

    def streams_by_router(self) -> dict[str, int]:
        return self.streams.streams_by_router()

    def nudges(self) -> Counter[str]:
        """Pings to clients moved off a lost router: sent, and answered by a pong."""
        return Counter(
            sent=self.streams.nudges_sent, answered=self.streams.endpoint.nudges_answered
        )

    def drops(self) -> Counter[str]:
        """Everything dropped, by reason: the data plane's and the streaming protocol's."""
        return self.stats.drops + self.streams.endpoint.drops

    def _resolve(self, backend: BackendSpec) -> tuple[str, int]:
        return backend_address(backend, self._namespace)


def _spread_over(routers: Sequence[str]) -> Callable[[bytes], str]:
    """A router of `routers` for each client, by its hash: the same one every time."""
    ordered = sorted(set(routers))

    def choose(client: bytes) -> str:
        return ordered[int.from_bytes(client[:4], "big") % len(ordered)]

    return choose
