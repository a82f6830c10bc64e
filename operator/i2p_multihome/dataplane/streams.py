"""I2P streams to TCP backends: the asyncio side of `streaming.Endpoint`.

One Endpoint serves every stream of the destination, whichever router its packets arrive
through; each accepted stream becomes one TCP connection to its port's backend. Bytes move
only as fast as the slower side takes them: the backend's bytes are read only while the
stream's send buffer has room, and the stream's bytes are read only after the backend
writer has drained, so the Endpoint's receive buffer fills and chokes the client. Replies
leave through the router that delivered the stream's latest packet (the Endpoint records
it per stream): a browsing client's LeaseSet is usually unpublished, so only that router
can reach it, and a reply through another would open a competing end-to-end session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from i2p_multihome.clock import Clock, wait_event
from i2p_multihome.dataplane.ports import PortMap
from i2p_multihome.dataplane.stats import (
    DROP_NO_SESSION,
    RESET_BACKEND_FAILED,
    RESET_BACKEND_REFUSED,
    RESET_NO_PORT,
    RESET_SHUTDOWN,
    DataPlaneStats,
)
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import BackendSpec, PortProtocol, PortSpec
from i2p_multihome.streaming import (
    DataReadable,
    Endpoint,
    PeerClosed,
    SendBufferFree,
    StreamAccepted,
    StreamClosed,
    StreamClosedError,
    StreamConfig,
    StreamReset,
)
from i2p_multihome.streaming.connection import LocalIdentity
from i2p_multihome.streaming.routes import RememberedClient
from i2p_multihome.wire.messages import Payload
from i2p_multihome.wire.structures import Destination

log = logging.getLogger(__name__)

# Sends an encoded I2CP payload to a destination through the named router; False when that
# router has no session now.
Sender = Callable[[str, Destination, bytes], Awaitable[bool]]
BackendResolver = Callable[[BackendSpec], tuple[str, int]]

CHUNK = 64 * 1024  # the most moved between a backend socket and a stream at once
CONNECT_TIMEOUT_S = 10.0  # a backend that does not accept within this is refused


@dataclass
class _Stream:
    stream_id: int
    port: PortSpec
    readable: asyncio.Event = field(default_factory=asyncio.Event)
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    peer_closed: bool = False
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None


class StreamService:
    def __init__(
        self,
        local: LocalIdentity,
        ports: PortMap,
        resolve: BackendResolver,
        send: Sender,
        clock: Clock,
        stats: DataPlaneStats,
        config: StreamConfig | None = None,
        log_fields: Mapping[str, object] | None = None,
        on_change: Callable[[], None] = lambda: None,
        on_client: Callable[[str], None] = lambda router: None,
    ) -> None:
        self.endpoint = Endpoint(local, config)
        self._on_change = on_change  # a stream opened or ended: status should tell
        self._on_client = on_client  # a client opened a stream through this router
        self.ports = ports
        self._resolve = resolve
        self._send = send
        self._clock = clock
        self._stats = stats
        self._log_fields = dict(log_fields or {})
        self._streams: dict[int, _Stream] = {}
        self._wake = asyncio.Event()
        self.nudges_sent = 0  # handed to their router (see `Endpoint.nudge`)

    # --- what the I/O around it calls ------------------------------------------------------

    def receive(self, router: str, payload: Payload) -> None:
        """A streaming packet that arrived through `router`."""
        self.endpoint.receive(
            payload.data, payload.from_port, payload.to_port, router, self._clock.monotonic()
        )
        self._wake.set()

    def streams_by_router(self) -> dict[str, int]:
        """Active streams, by the router their latest packet came through."""
        counts: dict[str, int] = {}
        for stream_id in self._streams:
            via = self.endpoint.stream(stream_id).via
            counts[via] = counts.get(via, 0) + 1
        return counts

    def move_clients(self, lost: Collection[str], choose: Callable[[bytes], str]) -> int:
        """The routers in `lost` are gone: see `Endpoint.move_remotes`."""
        moved = self.endpoint.move_remotes(lost, choose, self._clock.monotonic())
        self._wake.set()
        return moved

    def restore_clients(
        self, clients: Collection[RememberedClient], choose: Callable[[bytes], str]
    ) -> int:
        """Clients kept across a restart: see `Endpoint.restore_remotes`."""
        restored = self.endpoint.restore_remotes(
            clients, choose, self._clock.monotonic(), self._clock.wall()
        )
        self._wake.set()
        return restored

    def nudge(self, client: Destination, router: str) -> None:
        """Ping `client` through `router`: see `Endpoint.nudge`."""
        self.endpoint.nudge(client, router, self._clock.monotonic())
        self._wake.set()

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    async def run(self) -> None:
        """Move packets and timers until cancelled."""
        try:
            while True:
                self._dispatch_events()
                await self._flush()
                timer_at = self.endpoint.timer_at()
                now = self._clock.monotonic()
                if timer_at is not None and timer_at <= now:
                    self.endpoint.handle_timer(now)
                    continue
                timeout = None if timer_at is None else timer_at - now
                await wait_event(self._wake, self._clock, timeout)
                self._wake.clear()
        finally:
            await self._abort_all()

    async def shutdown(self) -> None:
        """Reset every stream (clients learn at once) and send the RESETs."""
        for stream_id in list(self._streams):
            self._stats.resets[RESET_SHUTDOWN] += 1
            self.endpoint.reset(stream_id)
        self._dispatch_events()
        await self._flush()

    # --- the loop ------------------------------------------------------------------------

    def _dispatch_events(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            match event:
                case StreamAccepted():
                    self._accepted(event)
                case DataReadable(stream_id=stream_id):
                    if (stream := self._streams.get(stream_id)) is not None:
                        stream.readable.set()
                case SendBufferFree(stream_id=stream_id):
                    if (stream := self._streams.get(stream_id)) is not None:
                        stream.writable.set()
                case PeerClosed(stream_id=stream_id):
                    if (stream := self._streams.get(stream_id)) is not None:
                        stream.peer_closed = True
                        stream.readable.set()
                case StreamReset(stream_id=stream_id) | StreamClosed(stream_id=stream_id):
                    self._finished(stream_id, abort=isinstance(event, StreamReset))

    async def _flush(self) -> None:
        for out in self.endpoint.packets_to_send(self._clock.monotonic()):
            sent = await self._send(out.via, out.destination, out.payload.encode(compresslevel=0))
            if sent and out.nudge:
                self.nudges_sent += 1
            if not sent:
                # The stream's router is gone; the peer retransmits, perhaps through another.
                self._stats.drops[DROP_NO_SESSION] += 1

    def _accepted(self, event: StreamAccepted) -> None:
        port = self.ports.lookup(PortProtocol.STREAM, event.local_port)
        if port is None:
            self._stats.resets[RESET_NO_PORT] += 1
            log.info(
                "stream to a port nobody serves refused",
                extra=fields(**self._log_fields, i2p_port=event.local_port, router=event.via),
            )
            self.endpoint.reset(event.stream_id)
            return
        stream = _Stream(event.stream_id, port)
        self._streams[event.stream_id] = stream
        self._on_change()
        self._stats.streams_accepted[port.name] += 1
        self._on_client(event.via)
        stream.task = asyncio.create_task(
            self._serve(stream), name=f"stream-{event.stream_id}-{port.name}"
        )

    def _finished(self, stream_id: int, abort: bool) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._on_change()
        if stream.task is not None:
            stream.task.cancel()
        if stream.writer is not None:
            if abort:
                stream.writer.transport.abort()
            else:
                stream.writer.close()

    async def _abort_all(self) -> None:
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for stream_id in list(self._streams):
            self._finished(stream_id, abort=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one stream --------------------------------------------------------------------------

    async def _serve(self, stream: _Stream) -> None:
        host, port = self._resolve(stream.port.backend)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=CHUNK), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "backend refused a stream; resetting it",
                extra=fields(
                    **self._log_fields, port=stream.port.name, backend=f"{host}:{port}",
                    error=str(exc) or type(exc).__name__,
                ),
            )  # fmt: skip
            self._reset(stream, RESET_BACKEND_REFUSED)
            return
        stream.writer = writer
        try:
            await asyncio.gather(self._to_backend(stream, writer), self._to_client(stream, reader))
        except (OSError, StreamClosedError) as exc:
            if stream.stream_id in self._streams:
                log.info(
                    "backend connection failed; resetting the stream",
                    extra=fields(**self._log_fields, port=stream.port.name, error=repr(exc)),
                )
                self._reset(stream, RESET_BACKEND_FAILED)

    def _reset(self, stream: _Stream, reason: str) -> None:
        self._stats.resets[reason] += 1
        self.endpoint.reset(stream.stream_id)
        self._wake.set()

    def _router(self, stream: _Stream) -> str:
        try:
            return self.endpoint.stream(stream.stream_id).via
        except KeyError:
            return ""

    async def _to_backend(self, stream: _Stream, writer: asyncio.StreamWriter) -> None:
        """The client's bytes into the backend, only as fast as the backend drains them."""
        while True:
            await stream.readable.wait()
            stream.readable.clear()
            while data := self.endpoint.read(stream.stream_id, CHUNK):
                self._stats.bytes_in[(self._router(stream), stream.port.name)] += len(data)
                writer.write(data)
                await writer.drain()
                self._wake.set()  # what was read frees the receive window
            if stream.peer_closed:
                if writer.can_write_eof():
                    writer.write_eof()
                return

    async def _to_client(self, stream: _Stream, reader: asyncio.StreamReader) -> None:
        """The backend's bytes into the stream, only as fast as its send buffer takes them:
        at most one CHUNK read ahead waits here for room."""
        pending = b""
        while True:
            if not pending:
                pending = await reader.read(CHUNK)
                if not pending:
                    self.endpoint.close(stream.stream_id)
                    self._wake.set()
                    return
            stream.writable.clear()
            accepted = self.endpoint.send(stream.stream_id, pending)
            if accepted:
                self._stats.bytes_out[(self._router(stream), stream.port.name)] += accepted
                self._wake.set()
                pending = pending[accepted:]
            if pending:
                await stream.writable.wait()
