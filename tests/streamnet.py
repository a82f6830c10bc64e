"""An in-memory I2P for streaming tests: Endpoints exchange packets through a network that
drops, duplicates, delays and so reorders them from a seeded RNG, on a virtual clock that
jumps from one deadline to the next. Applications on top read, write and close like an I/O
layer would, and check the buffer bounds after every step."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from i2p_multihome.streaming import (
    DataReadable,
    Endpoint,
    Event,
    LocalIdentity,
    Outgoing,
    PeerClosed,
    PongReceived,
    SendBufferFree,
    StreamAccepted,
    StreamClosed,
    StreamConfig,
    StreamEstablished,
    StreamReset,
)
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.messages import PROTOCOL_STREAMING, Payload
from i2p_multihome.wire.streaming import StreamPacket
from i2p_multihome.wire.structures import Destination
from seeded import seeded_random


@dataclass
class Link:
    """How the network treats packets: probabilities and a delay range in seconds."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.3, 0.3)
    # Drop every packet for which this returns True (after the random loss).
    blackhole: Callable[[StreamPacket], bool] | None = None


@dataclass
class StreamLog:
    """What an application saw on one stream."""

    received: bytearray = field(default_factory=bytearray)
    to_send: bytes = b""
    sent: int = 0
    close_after_sending: bool = True
    closed_sent: bool = False
    peer_closed: bool = False
    established: bool = False
    finished: str | None = None  # "closed" or "reset: <reason>"
    read_enabled: bool = True
    reply_after_eof: bool = False  # request/response: write only once the peer closed


class Host:
    """An Endpoint with an application that logs every stream."""

    def __init__(self, name: str, net: Network, config: StreamConfig, seed: bytes,
                 signer: LocalIdentity | None = None) -> None:  # fmt: skip
        self.name = name
        self.net = net
        self.keys = signer or DestinationKeys.generate(seeded_random(b"keys " + seed))
        self.endpoint = Endpoint(self.keys, config, random_bytes=seeded_random(b"ids " + seed))
        self.streams: dict[int, StreamLog] = {}
        self.events: list[Event] = []
        self.pongs: list[PongReceived] = []
        # What a server writes on every accepted stream.
        self.reply: bytes = b""
        self.reply_close = True
        self.reply_after_eof = False
        self.read_enabled = True

    @property
    def destination(self) -> Destination:
        return self.endpoint.local.destination

    def connect(self, other: Host, data: bytes, *, close: bool = True) -> int:
        stream_id = self.endpoint.connect(other.destination, via=other.name, now=self.net.now)
        self.streams[stream_id] = StreamLog(to_send=data, close_after_sending=close)
        self.pump_app()
        return stream_id

    def handle_events(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.events.append(event)
            match event:
                case StreamAccepted(stream_id=sid):
                    self.streams[sid] = StreamLog(
                        to_send=self.reply,
                        close_after_sending=self.reply_close,
                        read_enabled=self.read_enabled,
                        reply_after_eof=self.reply_after_eof,
                    )
                case StreamEstablished(stream_id=sid):
                    self.streams[sid].established = True
                case DataReadable() | SendBufferFree():
                    pass
                case PeerClosed(stream_id=sid):
                    self.streams[sid].peer_closed = True
                case StreamClosed(stream_id=sid):
                    self._finish(sid, "closed")
                case StreamReset(stream_id=sid, reason=reason):
                    self._finish(sid, f"reset: {reason}")
                case PongReceived():
                    self.pongs.append(event)

    def _finish(self, stream_id: int, how: str) -> None:
        log = self.streams[stream_id]
        assert log.finished is None, f"{self.name} stream {stream_id}: second ending {how}"
        log.finished = how

    def pump_app(self) -> None:
        """The application: read what is readable, write what fits, close when done."""
        self.handle_events()
        for sid, log in self.streams.items():
            if log.finished is not None:
                continue
            if log.read_enabled:
                log.received += self.endpoint.read(sid)
            if log.reply_after_eof and not log.peer_closed:
                continue
            if log.sent < len(log.to_send):
                log.sent += self.endpoint.send(sid, log.to_send[log.sent : log.sent + 65536])
            if log.sent == len(log.to_send) and log.close_after_sending and not log.closed_sent:
                log.closed_sent = True
                self.endpoint.close(sid)
        self.handle_events()

    def check_bounds(self) -> None:
        config = self.endpoint.config
        for sid in self.endpoint.stream_ids:
            conn = self.endpoint.stream(sid)
            assert conn.receive_buffered_bytes <= config.receive_buffer_bytes
            assert conn.send_buffered_bytes <= config.send_buffer_bytes
            assert conn.in_flight <= config.max_window
        assert self.endpoint.active_streams <= config.max_streams
        assert self.endpoint.half_open_streams <= config.max_half_open
        assert self.endpoint.early_packets <= config.early_packets


class Network:
    def __init__(self, seed: int = 0, link: Link | None = None, *, framed: bool = False) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.link = link or Link()
        self.framed = framed  # go through the gzip I2CP payload framing too
        self.hosts: dict[str, Host] = {}
        self._by_hash: dict[bytes, Host] = {}
        self._queue: list[tuple[float, int, str, bytes, int, int, str]] = []
        self._order = itertools.count()
        self.sent: list[tuple[str, Outgoing]] = []  # every packet any host sent
        self.delivered = 0

    def host(self, name: str, config: StreamConfig | None = None,
             signer: LocalIdentity | None = None) -> Host:  # fmt: skip
        host = Host(name, self, config or StreamConfig(), name.encode(), signer)
        self.hosts[name] = host
        self._by_hash[host.destination.hash] = host
        return host

    def inject(self, to: Host, data: bytes, *, via: str = "router", ports: tuple[int, int] = (0, 0),
               at: float | None = None) -> None:  # fmt: skip
        """Put raw packet bytes on the wire towards `to`."""
        arrival = self.now if at is None else at
        if self.framed:
            data = Payload(data, PROTOCOL_STREAMING, *ports).encode()
        heapq.heappush(self._queue, (arrival, next(self._order), to.name, data, *ports, via))

    def flush(self) -> None:
        """Every host sends what it has."""
        for host in self.hosts.values():
            host.pump_app()
            for out in host.endpoint.packets_to_send(self.now):
                self.sent.append((host.name, out))
                self._transmit(host, out)
            host.check_bounds()

    def _transmit(self, source: Host, out: Outgoing) -> None:
        assert out.payload.protocol == PROTOCOL_STREAMING
        target = self._by_hash.get(out.destination.hash)
        if target is None:
            return
        link = self.link
        copies = 1
        if self.rng.random() < link.loss:
            copies = 0
        elif self.rng.random() < link.duplicate:
            copies = 2
        if link.blackhole is not None and link.blackhole(out.packet):
            copies = 0
        data = out.payload.encode() if self.framed else out.payload.data
        for _ in range(copies):
            arrival = self.now + self.rng.uniform(*link.delay)
            heapq.heappush(
                self._queue,
                (arrival, next(self._order), target.name, data, out.payload.from_port,
                 out.payload.to_port, source.name),
            )  # fmt: skip

    def next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        for host in self.hosts.values():
            deadline = host.endpoint.timer_at()
            if deadline is not None:
                times.append(deadline)
        return min(times, default=None)

    def step(self) -> bool:
        """Advance to the next arrival or deadline and process it. False when idle."""
        self.flush()
        when = self.next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        while self._queue and self._queue[0][0] <= self.now:
            _, _, name, data, from_port, to_port, via = heapq.heappop(self._queue)
            host = self.hosts[name]
            if self.framed:
                payload = Payload.decode(data)
                assert payload.protocol == PROTOCOL_STREAMING
                data, from_port, to_port = payload.data, payload.from_port, payload.to_port
            # The receiver sees ports from its own side: the sender's from is its to.
            host.endpoint.receive(data, from_port, to_port, via, self.now)
            self.delivered += 1
        for host in self.hosts.values():
            deadline = host.endpoint.timer_at()
            if deadline is not None and deadline <= self.now:
                host.endpoint.handle_timer(self.now)
                after = host.endpoint.timer_at()
                # Progress: handling the timers moves every deadline past now.
                assert after is None or after > self.now, f"{host.name}: timer stuck"
        self.flush()
        return True

    def run(self, until: Callable[[], bool] | None = None, *, limit: float = 3600.0,
            max_steps: int = 200_000) -> None:  # fmt: skip
        """Step until `until()` holds or nothing is left to do; fail past `limit` virtual
        seconds or `max_steps` steps (a livelock)."""
        start = self.now
        for _ in range(max_steps):
            if until is not None and until():
                return
            if not self.step():
                return
            assert self.now - start <= limit, f"virtual time ran past {limit} s"
        raise AssertionError(f"no progress after {max_steps} steps")

    def idle(self) -> bool:
        return not self._queue and all(h.endpoint.timer_at() is None for h in self.hosts.values())
