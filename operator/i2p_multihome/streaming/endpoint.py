"""Every stream of one local Destination, sans-I/O: decode, verify, demultiplex, limit.

Inputs: `receive(data, from_port, to_port, via, now)` with the inflated data of an I2CP
payload of protocol 6, and `via` naming the router it came through; `handle_timer(now)`;
`connect`, `ping`, `nudge`, and the per-stream `send`/`read`/`close`/`reset`. Outputs:
`packets_to_send(now)` as `Outgoing` values (the router to send through, the remote
Destination, and the `Payload` with protocol 6 and the ports swapped), `next_event()` and
`timer_at()`.

Packets for streams we do not know are dropped, as i2pd and Java do (Java: "don't bother
sending reset"); pings are answered. Drops are counted by reason in `drops`.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from i2p_multihome.streaming.config import IN_ORDER_RESERVE, StreamConfig
from i2p_multihome.streaming.connection import (
    DROP_BAD_SIGNATURE,
    DROP_MALFORMED,
    DROP_OVERSIZED,
    DROP_SYN_WITHOUT_FROM,
    DROP_UNSIGNED,
    DROP_UNSUPPORTED_SIGNATURE,
    Connection,
    LocalIdentity,
    StreamState,
)
from i2p_multihome.streaming.events import (
    DataReadable,
    Event,
    PongReceived,
    SendBufferFree,
    StreamAccepted,
    StreamClosedError,
)
from i2p_multihome.streaming.routes import ClientRoutes, RememberedClient
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.messages import PROTOCOL_STREAMING, Payload
from i2p_multihome.wire.streaming import (
    ECHO,
    NO_ACK,
    RESET,
    SIGNATURE_INCLUDED,
    SYNCHRONIZE,
    StreamPacket,
    peek_send_stream_id,
)
from i2p_multihome.wire.structures import Destination

DROP_UNKNOWN_STREAM = "unknown_stream"
DROP_REPLAY_HASH = "replay_hash_mismatch"
DROP_RATE_LIMITED = "rate_limited"
DROP_HALF_OPEN_LIMIT = "half_open_limit"
DROP_STREAM_LIMIT = "stream_limit"
DROP_PER_REMOTE_LIMIT = "per_remote_limit"
DROP_EARLY_FULL = "early_buffer_full"
DROP_EARLY_EXPIRED = "early_packet_expired"
DROP_AMBIGUOUS = "ambiguous_stream"
DROP_PINGS_DISABLED = "pings_disabled"
DROP_UNEXPECTED_PONG = "unexpected_pong"
DROP_REPLY_QUEUE_FULL = "reply_queue_full"
# Our packets to a remote moved off a lost router, before its hold ends (resent after it).
DROP_HELD_FOR_MOVE = "held_while_client_moves"
# A moved client to ping, when more than MAX_QUEUED_NUDGES wait (or its address is unknown).
DROP_NUDGE_QUEUE_FULL = "nudge_queue_full"
DROP_NUDGE_NO_ADDRESS = "nudge_without_address"

# Refusals and pongs waiting for `packets_to_send`; each answers one received packet.
MAX_QUEUED_REPLIES = 256
# Moved clients waiting for their ping, and their pace: a router's loss can release
# thousands of remembered clients at once, and each ping costs the new router a LeaseSet
# lookup, so at most NUDGES_PER_FLUSH leave every NUDGE_INTERVAL_S (128 a second); the
# replies queue stays free for pongs and refusals.
MAX_QUEUED_NUDGES = 4096
NUDGES_PER_FLUSH = 32
NUDGE_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Outgoing:
    """One packet to send: through router `via`, to `destination`, as `payload`."""

    via: str
    destination: Destination = field(repr=False)
    payload: Payload = field(repr=False)
    stream_id: int | None  # our stream id; None for pings, pongs and refusals
    packet: StreamPacket
    nudge: bool = False  # a ping to a client moved off a lost router (see `Endpoint.nudge`)


@dataclass
class _Early:
    """Packets of a stream whose SYN has not arrived (sendStreamId 0, no FROM)."""

    expires: float
    packets: list[tuple[StreamPacket, str]]


class Endpoint:
    def __init__(
        self,
        local: LocalIdentity,
        config: StreamConfig | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.local = local
        self.config = config or StreamConfig()
        self._random = random_bytes
        self._streams: dict[int, Connection] = {}
        # Counted against the limits: not finished, not lingering in TIME_WAIT.
        self._active: set[int] = set()
        self._half_open: set[int] = set()
        self._per_remote: Counter[bytes] = Counter()
        # The router each remote's latest accepted packet came through, while it has active
        # streams (and remembered a while after). Every stream of a remote answers through
        # it: the client's end-to-end session lives in that router, and an answer through
        # another router would reach the client as a competing new session, which it drops
        # (i2pd and Java keep a session from the same static key for 2 minutes) or, later,
        # lets replace the first. When that router is lost, `move_remotes` gives the remote
        # another (see routes.py).
        self._routes = ClientRoutes()
        self._by_syn: dict[tuple[bytes, int], int] = {}  # (remote hash, its id) -> ours
        self._by_peer_id: dict[int, set[int]] = {}  # inbound streams: its id -> ours
        self._time_wait: dict[int, None] = {}  # insertion-ordered: oldest first
        # Bounded: per stream at most one of each kind is queued (the repeatable kinds are
        # coalesced below), plus one pong per pending ping.
        self._events: deque[Event] = deque()
        self._queued: set[DataReadable | SendBufferFree] = set()
        self._replies: deque[Outgoing] = deque()
        self._dirty: set[int] = set()
        self._deadline: dict[int, float] = {}
        self._timers: list[tuple[float, int]] = []  # heap; stale entries skipped
        self._early: dict[int, _Early] = {}
        self._early_count = 0
        self._pings: dict[int, float] = {}  # ping id -> expiry
        self._nudges: deque[tuple[Destination, str]] = deque()  # (client, through which router)
        self._nudging: set[bytes] = set()  # the clients in `_nudges`
        self._nudge_ids: dict[int, None] = {}  # nudges' ping ids, oldest first, bounded
        self._nudges_due_at: float | None = None
        self.nudges_answered = 0
        self._tokens = float(self.config.new_stream_burst)
        self._tokens_at: float | None = None
        self.drops: Counter[str] = Counter()

    # --- introspection ------------------------------------------------------------------

    @property
    def stream_ids(self) -> list[int]:
        return list(self._streams)

    def routes(self) -> dict[bytes, str]:
        """The router each remote with active streams is answered through, by its hash."""
        return self._routes.routes()

    def stream(self, stream_id: int) -> Connection:
        """The connection, for inspection; drive it through the Endpoint's methods."""
        return self._streams[stream_id]

    @property
    def active_streams(self) -> int:
        return len(self._active)

    @property
    def half_open_streams(self) -> int:
        return len(self._half_open)

    @property
    def early_packets(self) -> int:
        return self._early_count

    @property
    def pending_replies(self) -> int:
        return len(self._replies)

    def counters(self) -> Mapping[str, int]:
        return dict(self.drops)

    # --- inputs -------------------------------------------------------------------------

    def receive(self, data: bytes, from_port: int, to_port: int, via: str, now: float) -> None:
        """One streaming packet (the inflated I2CP payload data) that came through `via`."""
        try:
            send_id = peek_send_stream_id(data)
            conn = self._streams.get(send_id) if send_id else None
            packet = StreamPacket.decode(data, signer=conn.remote if conn else None)
        except WireError:
            self.drops[DROP_MALFORMED] += 1
            return
        if packet.has(ECHO):
            self._on_echo(packet, from_port, to_port, via, now)
        elif conn is not None:
            self._deliver(conn, packet, via, now)
        elif send_id != 0:
            self.drops[DROP_UNKNOWN_STREAM] += 1
        elif packet.is_syn:
            self._on_syn(packet, from_port, to_port, via, now)
        else:
            self._on_early(packet, via, now)

    def connect(
        self,
        remote: Destination,
        via: str,
        now: float,
        *,
        remote_port: int = 0,
        local_port: int = 0,
    ) -> int:
        """Open a stream to `remote`; returns its id. Its SYN leaves at `packets_to_send`."""
        if len(self._active) >= self.config.max_streams:
            raise StreamClosedError("stream limit reached")
        stream_id = self._new_id()
        conn = Connection.connect(
            self.config, self.local, remote, stream_id, now, via=via,
            local_port=local_port, remote_port=remote_port,
        )  # fmt: skip
        self._add(conn, now)
        return stream_id

    def ping(
        self,
        remote: Destination,
        via: str,
        now: float,
        payload: bytes = b"",
        *,
        remote_port: int = 0,
        local_port: int = 0,
    ) -> int:
        """Send a signed ping; `PongReceived` with the returned id answers it."""
        self._expire_pings(now)
        if len(self._pings) >= self.config.max_pending_pings:
            oldest = min(self._pings, key=self._pings.__getitem__)
            del self._pings[oldest]
        ping_id = self._new_id(self._pings, self._nudge_ids)
        self._pings[ping_id] = now + self.config.ping_timeout
        self._reply(self._ping_packet(ping_id, remote, via, payload, local_port, remote_port))
        return ping_id

    def nudge(self, remote: Destination, via: str, now: float) -> None:
        """Ping `remote` through `via` (soon, paced), for no answer of ours: the message
        itself is what counts, a new end-to-end session from `via` carrying its LeaseSet,
        for a client moved there that has nothing else coming (see routes.py). A client
        already waiting for one is not queued twice (streams and datagrams both know some
        clients). The packet is an `Outgoing` with `nudge` set; its pong, if any, is counted
        in `nudges_answered`."""
        if remote.hash in self._nudging:
            return
        if len(self._nudges) >= MAX_QUEUED_NUDGES:
            self.drops[DROP_NUDGE_QUEUE_FULL] += 1
            return
        self._nudges.append((remote, via))
        self._nudging.add(remote.hash)
        if self._nudges_due_at is None:
            self._nudges_due_at = now

    def send(self, stream_id: int, data: bytes) -> int:
        """Queue data on a stream; returns how much was accepted (see `Connection.send`)."""
        conn = self._streams.get(stream_id)
        if conn is None:
            raise StreamClosedError(f"no stream {stream_id}")
        try:
            return conn.send(data)
        finally:
            self._touch(conn)

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        """In-order data of a stream; b"" when there is none or the stream is gone."""
        conn = self._streams.get(stream_id)
        if conn is None:
            return b""
        data = conn.read(max_bytes)
        self._touch(conn)
        return data

    def send_buffer_free(self, stream_id: int) -> int:
        """How much `send` would accept now: read at most this from the backend."""
        conn = self._streams.get(stream_id)
        return 0 if conn is None or conn.finished else conn.send_buffer_free

    def readable_bytes(self, stream_id: int) -> int:
        """In-order data waiting for `read` (after a partial read, no new DataReadable comes
        until it is all read)."""
        conn = self._streams.get(stream_id)
        return 0 if conn is None else conn.readable_bytes

    def close(self, stream_id: int) -> None:
        """Half-close: no more data from us. A no-op for a stream that is gone."""
        conn = self._streams.get(stream_id)
        if conn is not None:
            conn.close()
            self._touch(conn)

    def reset(self, stream_id: int) -> None:
        """Abort a stream with a signed RESET. A no-op for a stream that is gone."""
        conn = self._streams.get(stream_id)
        if conn is not None:
            conn.reset()
            self._touch(conn)

    def move_remotes(
        self, lost: Collection[str], choose: Callable[[bytes], str], now: float
    ) -> int:
        """The routers in `lost` are gone: answer each of their remotes through
        `choose(remote)`, once its session there can have replaced the old one (see
        routes.py); its streams then resend at once. Returns how many remotes moved."""
        moved = set(self._routes.move(lost, choose, now))
        for conn in self._streams.values():
            if conn.via in lost:
                conn.via = self._routes.via(conn.remote.hash) or choose(conn.remote.hash)
            if conn.remote.hash in moved and (until := self._routes.held_until(conn.remote.hash)):
                conn.hold(until)
                self._touch(conn, dirty=False)
        self._release_due(now)
        return len(moved)

    def remembered_remotes(self, now: float, wall_now: float) -> list[RememberedClient]:
        """The remotes worth keeping across a restart (see `ClientRoutes.remembered`)."""
        return self._routes.remembered(now, wall_now)

    def restore_remotes(
        self,
        clients: Collection[RememberedClient],
        choose: Callable[[bytes], str],
        now: float,
        wall_now: float,
    ) -> int:
        """Remotes kept across a restart, whose sessions went with it: each is answered
        through `choose(remote)` and pinged once its old session can be replaced, like a
        remote moved off a lost router. Returns how many were restored."""
        restored = self._routes.restore(clients, choose, now, wall_now)
        self._release_due(now)
        return len(restored)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline passed by `now`: each stream at most once per call."""
        self._expire_early(now)
        self._expire_pings(now)
        self._release_due(now)
        handled: set[int] = set()
        while self._timers and self._timers[0][0] <= now:
            deadline, stream_id = heapq.heappop(self._timers)
            conn = self._streams.get(stream_id)
            if conn is None or self._deadline.get(stream_id) != deadline:
                continue  # stale: the stream moved its deadline or is gone
            if stream_id in handled:
                continue
            handled.add(stream_id)
            # Forget the deadline first so `_touch` schedules whatever comes next.
            del self._deadline[stream_id]
            conn.handle_timer(now)
            self._touch(conn)

    # --- outputs ------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        if not self._events:
            return None
        event = self._events.popleft()
        if isinstance(event, DataReadable | SendBufferFree):
            self._queued.discard(event)
        return event

    def packets_to_send(self, now: float) -> list[Outgoing]:
        out = []
        if self._nudges_due_at is not None and self._nudges_due_at <= now:
            out = [self._nudge_packet(*self._nudges.popleft()) for _ in range(min(
                NUDGES_PER_FLUSH, len(self._nudges)))]  # fmt: skip
            self._nudges_due_at = now + NUDGE_INTERVAL_S if self._nudges else None
        out += self._replies
        self._replies.clear()
        dirty, self._dirty = self._dirty, set()
        for stream_id in sorted(dirty):
            conn = self._streams.get(stream_id)
            if conn is None:
                continue
            packets = conn.packets_to_send(now)
            if self._routes.held(conn.remote.hash, now):
                # The connection resends them when the hold ends (see `_resend_to`).
                self.drops[DROP_HELD_FOR_MOVE] += len(packets)
                packets = []
            for packet in packets:
                payload = self._payload(packet, conn.local_port, conn.remote_port)
                via = self._routes.via(conn.remote.hash) or conn.via
                out.append(Outgoing(via, conn.remote, payload, stream_id, packet))
            self._touch(conn, dirty=False)
        return out

    def timer_at(self) -> float | None:
        while self._timers:
            deadline, stream_id = self._timers[0]
            if self._deadline.get(stream_id) == deadline and stream_id in self._streams:
                break
            heapq.heappop(self._timers)
        candidates = [self._timers[0][0]] if self._timers else []
        candidates += [early.expires for early in self._early.values()]
        candidates += list(self._pings.values())
        if self._nudges_due_at is not None:
            candidates.append(self._nudges_due_at)  # `packets_to_send` takes the next batch
        if (release := self._routes.next_release()) is not None:
            candidates.append(release)
        return min(candidates, default=None)

    # --- inbound dispatch ---------------------------------------------------------------

    def _deliver(self, conn: Connection, packet: StreamPacket, via: str, now: float) -> None:
        reason = conn.receive(packet, now)
        if reason is None:
            conn.via = via
            self._heard(conn.remote, via, now)
        else:
            self.drops[reason] += 1
        self._touch(conn)

    def _on_syn(
        self, packet: StreamPacket, from_port: int, to_port: int, via: str, now: float
    ) -> None:
        source = packet.from_destination
        if source is None:
            self.drops[DROP_SYN_WITHOUT_FROM] += 1
            return
        if not packet.has(SIGNATURE_INCLUDED):
            self.drops[DROP_UNSIGNED] += 1
            return
        if packet.receive_stream_id == 0 or packet.sequence != 0:
            self.drops[DROP_MALFORMED] += 1
            return
        if len(packet.payload) > self.config.receive_buffer_bytes - IN_ORDER_RESERVE:
            self.drops[DROP_OVERSIZED] += 1
            return
        existing = self._by_syn.get((source.hash, packet.receive_stream_id))
        if existing is not None:
            self._deliver(self._streams[existing], packet, via, now)  # a retransmitted SYN
            return
        replay = packet.replay_hash
        if replay is not None and replay != self.local.destination.hash:
            # Someone replays a SYN that was meant for another destination.
            self.drops[DROP_REPLAY_HASH] += 1
            return
        # Cheap limits first: none of this costs a signature check.
        if not self._take_token(now):
            self.drops[DROP_RATE_LIMITED] += 1
            return
        if len(self._half_open) >= self.config.max_half_open:
            self.drops[DROP_HALF_OPEN_LIMIT] += 1
            return
        if not self._authentic(packet, source):
            return
        if len(self._active) >= self.config.max_streams:
            self._refuse(packet, source, from_port, to_port, via, DROP_STREAM_LIMIT, now)
            return
        if self._per_remote[source.hash] >= self.config.max_streams_per_remote:
            self._refuse(packet, source, from_port, to_port, via, DROP_PER_REMOTE_LIMIT, now)
            return
        stream_id = self._new_id()
        conn = Connection.accept(
            self.config, self.local, packet, stream_id, now, via=via, local_port=to_port,
            remote_port=from_port,
        )  # fmt: skip
        self._events.append(StreamAccepted(stream_id, source, via, to_port, from_port))
        self._add(conn, now)
        self._heard(source, via, now)
        early = self._early.pop(packet.receive_stream_id, None)
        if early is not None:
            self._early_count -= len(early.packets)
            for held, held_via in early.packets:
                if conn.finished:
                    break
                self._deliver(conn, held, held_via, now)

    def _on_early(self, packet: StreamPacket, via: str, now: float) -> None:
        """A packet without our stream id and without SYN: the client has not heard our SYN
        yet. Deliver it if its stream exists, else hold it briefly for the SYN."""
        owners = self._by_peer_id.get(packet.receive_stream_id, set())
        if len(owners) == 1:
            self._deliver(self._streams[next(iter(owners))], packet, via, now)
            return
        if owners:
            self.drops[DROP_AMBIGUOUS] += 1
            return
        if packet.receive_stream_id == 0 or packet.has(RESET):
            self.drops[DROP_UNKNOWN_STREAM] += 1
            return
        if self._early_count >= self.config.early_packets:
            self.drops[DROP_EARLY_FULL] += 1
            return
        early = self._early.setdefault(
            packet.receive_stream_id, _Early(now + self.config.early_packet_lifetime, [])
        )
        early.packets.append((packet, via))
        self._early_count += 1

    def _on_echo(
        self, packet: StreamPacket, from_port: int, to_port: int, via: str, now: float
    ) -> None:
        if packet.send_stream_id == 0:
            if packet.receive_stream_id in self._nudge_ids:
                del self._nudge_ids[packet.receive_stream_id]
                self.nudges_answered += 1
                return
            if self._pings.pop(packet.receive_stream_id, None) is None:
                self.drops[DROP_UNEXPECTED_PONG] += 1
                return
            self._events.append(PongReceived(packet.receive_stream_id, packet.payload))
            return
        source = packet.from_destination
        if not self.config.answer_pings:
            self.drops[DROP_PINGS_DISABLED] += 1
            return
        if source is None or not packet.has(SIGNATURE_INCLUDED):
            self.drops[DROP_UNSIGNED] += 1
            return
        if not self._take_token(now):
            self.drops[DROP_RATE_LIMITED] += 1
            return
        if not self._authentic(packet, source):
            return
        # i2pd's pong: all header fields zero but receiveStreamId, the ping's sendStreamId.
        pong = StreamPacket(
            0, packet.send_stream_id, 0, flags=ECHO,
            payload=packet.payload[: self.config.max_ping_payload],
        )  # fmt: skip
        self._heard(source, via, now)
        self._reply(Outgoing(via, source, self._payload(pong, to_port, from_port), None, pong))

    def _refuse(
        self,
        syn: StreamPacket,
        source: Destination,
        from_port: int,
        to_port: int,
        via: str,
        reason: str,
        now: float,
    ) -> None:
        """Answer a verified SYN over a limit with a signed RESET, as Java does (its
        limitAction "reset"), so the client fails now instead of retrying for minutes. The
        RESET is a SYN reply too (with FROM, under an id of its own): i2pd 2.45.1 reads a
        sequence-0 packet without SYN as a plain ack and would ignore the RESET."""
        self.drops[reason] += 1
        reset = StreamPacket.make(
            syn.receive_stream_id,
            self._new_id(),
            0,
            flags=SYNCHRONIZE | RESET | NO_ACK | SIGNATURE_INCLUDED,
            from_destination=self.local.destination,
        ).signed(self.local.sign, self.local.destination.signature_len)
        self._heard(source, via, now)
        self._reply(Outgoing(via, source, self._payload(reset, to_port, from_port), None, reset))

    # --- bookkeeping --------------------------------------------------------------------

    def _heard(self, remote: Destination, via: str, now: float) -> None:
        """An accepted or authenticated packet from `remote` came through `via`."""
        client = remote.hash
        # Only remotes with streams are routed (and forgotten when the last one ends).
        if client in self._per_remote and self._routes.heard(client, via, now, remote):
            self._resend_to(client, now)  # it reached a working router before its hold ended

    def _release_due(self, now: float) -> None:
        """Moved remotes whose hold ends: streams that have something to send (data or an
        ack) send it at once through the new router; a remote without streams is pinged,
        or nothing at all would tell it where to go."""
        for remote in self._routes.release_due(now):
            if remote in self._per_remote:
                self._resend_to(remote, now)
                continue
            address, via = self._routes.address(remote), self._routes.route_of(remote)
            if address is None or via is None:
                self.drops[DROP_NUDGE_NO_ADDRESS] += 1
            else:
                self.nudge(address, via, now)

    def _nudge_packet(self, remote: Destination, via: str) -> Outgoing:
        self._nudging.discard(remote.hash)
        ping_id = self._new_id(self._nudge_ids, self._pings)
        self._nudge_ids[ping_id] = None
        if len(self._nudge_ids) > MAX_QUEUED_NUDGES:
            del self._nudge_ids[next(iter(self._nudge_ids))]
        return dataclasses.replace(self._ping_packet(ping_id, remote, via, b"", 0, 0), nudge=True)

    def _ping_packet(
        self,
        ping_id: int,
        remote: Destination,
        via: str,
        payload: bytes,
        local_port: int,
        remote_port: int,
    ) -> Outgoing:
        packet = StreamPacket.make(
            ping_id, 0, 0, flags=ECHO | SIGNATURE_INCLUDED, from_destination=self.local.destination,
            payload=payload,
        ).signed(self.local.sign, self.local.destination.signature_len)  # fmt: skip
        return Outgoing(via, remote, self._payload(packet, local_port, remote_port), None, packet)

    def _resend_to(self, remote: bytes, now: float) -> None:
        """Its route changed: every stream of `remote` sends what is pending at once."""
        for conn in [c for c in self._streams.values() if c.remote.hash == remote]:
            conn.route_changed(now)
            self._touch(conn)

    def _add(self, conn: Connection, now: float) -> None:
        stream_id = conn.receive_stream_id
        self._streams[stream_id] = conn
        self._active.add(stream_id)
        self._per_remote[conn.remote.hash] += 1
        # A stream we open hears nothing yet: it must not end a moved remote's hold.
        if not conn.is_client and self._routes.via(conn.remote.hash) is None:
            self._routes.heard(conn.remote.hash, conn.via, now, conn.remote)
        if not conn.is_client:
            self._by_syn[(conn.remote.hash, conn.send_stream_id)] = stream_id
            self._by_peer_id.setdefault(conn.send_stream_id, set()).add(stream_id)
        self._touch(conn)

    def _touch(self, conn: Connection, *, dirty: bool = True) -> None:
        """After any input to `conn`: collect its events, update the limits it counts
        toward, reschedule its timer, and forget it once finished and flushed."""
        stream_id = conn.receive_stream_id
        while (event := conn.next_event()) is not None:
            if isinstance(event, DataReadable | SendBufferFree):
                if event in self._queued:
                    continue  # the application has not seen the last one yet
                self._queued.add(event)
            self._events.append(event)
        if conn.half_open:
            self._half_open.add(stream_id)
        else:
            self._half_open.discard(stream_id)
        if stream_id in self._active and conn.state in (StreamState.TIME_WAIT, *_FINISHED):
            self._unaccount(conn)
            if conn.state is StreamState.TIME_WAIT:
                self._time_wait[stream_id] = None
                if len(self._time_wait) > self.config.max_time_wait:
                    oldest = next(iter(self._time_wait))
                    self._forget(self._streams[oldest])
        if conn.finished and not dirty:
            self._forget(conn)
            return
        if dirty:
            self._dirty.add(stream_id)
        deadline = conn.timer_at()
        if deadline is None:
            self._deadline.pop(stream_id, None)
        elif self._deadline.get(stream_id) != deadline:
            self._deadline[stream_id] = deadline
            heapq.heappush(self._timers, (deadline, stream_id))
            if len(self._timers) > 4 * len(self._streams) + 64:
                self._compact_timers()

    def _unaccount(self, conn: Connection) -> None:
        stream_id = conn.receive_stream_id
        self._active.discard(stream_id)
        self._half_open.discard(stream_id)
        remote = conn.remote.hash
        self._per_remote[remote] -= 1
        if self._per_remote[remote] <= 0:
            del self._per_remote[remote]
            self._routes.forget(remote)

    def _forget(self, conn: Connection) -> None:
        stream_id = conn.receive_stream_id
        if stream_id in self._active:
            self._unaccount(conn)
        # Kept through TIME-WAIT: a late copy of the SYN or of an early packet still finds
        # the stream (and is acked) instead of opening a new one.
        if not conn.is_client:
            self._by_syn.pop((conn.remote.hash, conn.send_stream_id), None)
            owners = self._by_peer_id.get(conn.send_stream_id)
            if owners is not None:
                owners.discard(stream_id)
                if not owners:
                    del self._by_peer_id[conn.send_stream_id]
        self._streams.pop(stream_id, None)
        self._time_wait.pop(stream_id, None)
        self._deadline.pop(stream_id, None)
        self._dirty.discard(stream_id)

    def _compact_timers(self) -> None:
        self._timers = [(d, s) for s, d in self._deadline.items() if s in self._streams]
        heapq.heapify(self._timers)

    def _new_id(self, *taken: Mapping[int, object]) -> int:
        """A random non-zero 32-bit id that no stream (or ping) of ours uses."""
        while True:
            candidate = int.from_bytes(self._random(4), "big")
            if (
                candidate
                and candidate not in self._streams
                and not any(candidate in ids for ids in taken)
            ):
                return candidate

    def _authentic(self, packet: StreamPacket, source: Destination) -> bool:
        """Whether `packet` is signed by `source`; a failure is counted as a drop."""
        try:
            authentic = packet.verify(source)
        except WireError:
            self.drops[DROP_UNSUPPORTED_SIGNATURE] += 1
            return False
        if not authentic:
            self.drops[DROP_BAD_SIGNATURE] += 1
        return authentic

    def _take_token(self, now: float) -> bool:
        if self._tokens_at is not None:
            refill = max(0.0, now - self._tokens_at) * self.config.new_stream_rate
            self._tokens = min(float(self.config.new_stream_burst), self._tokens + refill)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _reply(self, outgoing: Outgoing) -> None:
        if len(self._replies) >= MAX_QUEUED_REPLIES:
            self.drops[DROP_REPLY_QUEUE_FULL] += 1
            return
        self._replies.append(outgoing)

    def _expire_early(self, now: float) -> None:
        for their_id in [k for k, early in self._early.items() if now >= early.expires]:
            early = self._early.pop(their_id)
            self._early_count -= len(early.packets)
            self.drops[DROP_EARLY_EXPIRED] += len(early.packets)

    def _expire_pings(self, now: float) -> None:
        for ping_id in [k for k, expires in self._pings.items() if now >= expires]:
            del self._pings[ping_id]

    @staticmethod
    def _payload(packet: StreamPacket, local_port: int, remote_port: int) -> Payload:
        return Payload(packet.encode(), PROTOCOL_STREAMING, local_port, remote_port)


_FINISHED = (StreamState.CLOSED, StreamState.RESET)
