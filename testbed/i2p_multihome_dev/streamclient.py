"""Our own I2P streaming client, as a real client of a testnet router: a destination of its
own hosted on one router over I2CP (the product's balancer with that one router, so it has
tunnels and a LeaseSet like any client) and the product's streaming Endpoint on the client
side.

It does what no i2pd client can: half-close. An i2pd SAM or client-tunnel stream ends the
whole stream when its socket is shut down for writing, so the server side of a half-close
can only be exercised from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from i2p_multihome.balancer.engine import Balancer
from i2p_multihome.clock import SYSTEM_CLOCK, wait_event
from i2p_multihome.model.v1alpha1 import MultihomedDestinationManifest
from i2p_multihome.streaming import (
    DataReadable,
    Endpoint,
    PeerClosed,
    SendBufferFree,
    StreamClosed,
    StreamEstablished,
    StreamReset,
)
from i2p_multihome.wire import messages
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination
from i2p_multihome_dev.balancer_process import destination_manifest
from i2p_multihome_dev.observe import wait_client_published
from i2p_multihome_dev.testnet import Testnet

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
# The router publishes the client's LeaseSet only once its tunnels are built ("Can't publish
# LeaseSet. Destination is not ready"), then again with the balancer's next version (90 s).
PUBLISHED_TIMEOUT_S = 200.0


@dataclass
class StreamOutcome:
    """What one request saw."""

    received: bytes
    ending: str  # "closed" or "reset: <reason>"
    peer_closed: bool
    # When our side had half-closed and when the first byte of the answer came, from the
    # stream's start: an answer after the half-close shows the other direction stayed open.
    half_closed_s: float | None = None
    first_byte_s: float | None = None
    established: bool = False
    ended_s: float | None = None  # when a RESET ended it
    events: list[str] = field(default_factory=list)


class StreamClient:
    """`async with StreamClient(testnet, "r5") as client: await client.request(...)`."""

    def __init__(self, testnet: Testnet, router: str, name: str = "stream-client") -> None:
        document = destination_manifest(name, testnet, [router], inbound=2, length=1)
        spec = MultihomedDestinationManifest.model_validate(document).spec
        self.router = router
        self.testnet = testnet
        self.keys = DestinationKeys.generate()
        self.endpoint = Endpoint(self.keys)
        self._balancer = Balancer(name, spec, self.keys, on_payload=self._received)
        self._wake = asyncio.Event()
        self._events: dict[int, asyncio.Queue[object]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._tasks = [
            asyncio.create_task(self._balancer.run(), name="client-balancer"),
            asyncio.create_task(self._pump(), name="client-pump"),
        ]
        # The client's own LeaseSet on a floodfill, so that whichever router the server's
        # answer leaves can find it (and the client's tunnels carried the store).
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._balancer.snapshot().published:
            if time.monotonic() > deadline:
                await self.__aexit__(None, None, None)
                raise TimeoutError(f"the stream client on {self.router} published no LeaseSet")
            await asyncio.sleep(0.5)
        try:
            await wait_client_published(
                self.testnet, self.keys.destination.b32, PUBLISHED_TIMEOUT_S
            )
        except AssertionError:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._balancer.stop(destroy_sessions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _received(self, router: str, message: messages.MessagePayload) -> None:
        try:
            payload = messages.Payload.decode(message.payload)
        except WireError as exc:
            log.warning("stream client: undecodable payload", extra={"error": str(exc)})
            return
        if payload.protocol == messages.PROTOCOL_STREAMING:
            now = time.monotonic()
            self.endpoint.receive(payload.data, payload.from_port, payload.to_port, router, now)
            self._wake.set()

    async def _pump(self) -> None:
        while True:
            while (event := self.endpoint.next_event()) is not None:
                stream_id = getattr(event, "stream_id", None)
                if stream_id in self._events:
                    self._events[stream_id].put_nowait(event)
            for out in self.endpoint.packets_to_send(time.monotonic()):
                data = out.payload.encode(compresslevel=0)
                await self._balancer.send_payload(out.via, out.destination, data)
            timer = self.endpoint.timer_at()
            now = time.monotonic()
            if timer is not None and timer <= now:
                self.endpoint.handle_timer(now)
                continue
            await wait_event(self._wake, SYSTEM_CLOCK, None if timer is None else timer - now)
            self._wake.clear()

    async def request(
        self,
        server: Destination,
        request: bytes,
        *,
        port: int = 0,
        timeout_s: float = 120.0,
        close_after: asyncio.Event | None = None,
    ) -> StreamOutcome:
        """Open a stream to `server`, send `request`, half-close (CLOSE after the request,
        or once `close_after` is set), then read until the server closes or resets."""
        started = time.monotonic()
        stream = self.endpoint.connect(server, self.router, started, remote_port=port)
        events: asyncio.Queue[object] = asyncio.Queue()
        self._events[stream] = events
        outcome = StreamOutcome(b"", "", peer_closed=False)
        received = bytearray()
        unsent = request
        release = asyncio.ensure_future((close_after or asyncio.Event()).wait())
        if close_after is None:
            release.cancel()
        next_event: asyncio.Future[object] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if unsent:
                        unsent = unsent[self.endpoint.send(stream, unsent) :]
                        self._wake.set()
                    may_close = release.cancelled() or release.done()
                    if not unsent and may_close and outcome.half_closed_s is None:
                        self.endpoint.close(stream)
                        outcome.half_closed_s = time.monotonic() - started
                        self._wake.set()
                    if next_event is None:
                        next_event = asyncio.ensure_future(events.get())
                    waiting: set[asyncio.Future[Any]] = {next_event}
                    if not may_close:
                        waiting.add(release)
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if not next_event.done():
                        continue
                    event, next_event = next_event.result(), None
                    outcome.events.append(type(event).__name__)
                    match event:
                        case StreamEstablished():
                            outcome.established = True
                        case DataReadable():
                            data = self.endpoint.read(stream)
                            if data and outcome.first_byte_s is None:
                                outcome.first_byte_s = time.monotonic() - started
                            received += data
                            self._wake.set()
                        case PeerClosed():
                            received += self.endpoint.read(stream)
                            outcome.peer_closed = True
                        case StreamClosed():
                            outcome.ending = "closed"
                            break
                        case StreamReset(reason=reason):
                            outcome.ending = f"reset: {reason}"
                            outcome.ended_s = time.monotonic() - started
                            break
                        case SendBufferFree():
                            pass
        finally:
            del self._events[stream]
            release.cancel()
            if next_event is not None:
                next_event.cancel()
        outcome.received = bytes(received)
        return outcome
