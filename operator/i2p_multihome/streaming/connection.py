"""One I2P stream as a sans-I/O state machine (in the manner of h11 and aioquic).

The object never reads a clock and never does I/O. Inputs: `receive(packet, now)`,
`send(data)`, `close()`, `reset()`, `read(n)`, `handle_timer(now)`. Outputs:
`packets_to_send(now)` (signed where the protocol wants it), `next_event()`, `timer_at()`.
After any input, call `packets_to_send`; call `handle_timer` once `timer_at()` has passed.

Sequence numbers: our SYN is 0, every data, keepalive or CLOSE packet takes the next one;
plain acks carry 0 and are never acked. Acks are `ackThrough` plus NACKs for the gaps below
it. Retransmission: one RTO per stream (RFC 6298 estimator, doubling per timeout), fast
retransmit after two NACKs, give up with a RESET after `max_resends`. The receive buffer is
bounded: past it the peer is choked (delay option > 60000) until the application reads.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from i2p_multihome.streaming.config import IN_ORDER_RESERVE, StreamConfig
from i2p_multihome.streaming.events import (
    DataReadable,
    PeerClosed,
    SendBufferFree,
    StreamClosed,
    StreamClosedError,
    StreamEstablished,
    StreamEvent,
    StreamReset,
)
from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.streaming import (
    CLOSE,
    DELAY_CHOKE,
    ECHO,
    MAX_NACKS,
    MAX_STREAM_ID,
    NO_ACK,
    RESET,
    SIGNATURE_INCLUDED,
    SYNCHRONIZE,
    StreamPacket,
    nacks_from_hash,
)
from i2p_multihome.wire.structures import Destination


class LocalIdentity(Protocol):
    """Our side: its Destination and a signer for it (`DestinationKeys` is one)."""

    @property
    def destination(self) -> Destination: ...

    def sign(self, message: bytes) -> bytes: ...


class StreamState(enum.Enum):
    SYN_SENT = "syn-sent"  # client: our SYN is out, no SYN back yet
    SYN_RECEIVED = "syn-received"  # server: the peer's SYN is in, ours is not acked yet
    ESTABLISHED = "established"
    TIME_WAIT = "time-wait"  # finished; only re-acks a retransmitted CLOSE
    CLOSED = "closed"  # finished normally
    RESET = "reset"  # finished abnormally


FINISHED = frozenset({StreamState.CLOSED, StreamState.RESET})

# Sends of our bare CLOSE, after the peer's CLOSE, before we stop waiting for its ack.
CLOSE_SENDS_AFTER_PEER_CLOSED = 3

# Drop reasons `receive` returns (the endpoint counts them).
DROP_FINISHED = "stream_finished"
DROP_WRONG_STREAM_ID = "wrong_stream_id"
DROP_WRONG_DESTINATION = "wrong_destination"
DROP_BAD_SIGNATURE = "bad_signature"
DROP_UNSIGNED = "unsigned"
DROP_UNSUPPORTED_SIGNATURE = "unsupported_signature_type"
DROP_SYN_WITHOUT_FROM = "syn_without_from"
DROP_MALFORMED = "malformed"
DROP_OUT_OF_WINDOW = "out_of_window"
DROP_AFTER_CLOSE = "data_after_close"
DROP_BUFFER_FULL = "receive_buffer_full"
DROP_OVERSIZED = "oversized_packet"
DROP_ECHO = "echo_on_stream"


@dataclass
class _Sent:
    """A sequenced packet of ours the peer has not acked yet."""

    sequence: int
    payload: bytes
    flags: int  # SYNCHRONIZE and/or CLOSE
    last_sent: float
    sends: int = 0  # transmissions that count toward `max_resends`
    nacked: int = 0  # NACKs seen since it was last sent
    # Also sent as a choke probe or after an unchoke: those copies do not count toward the
    # resend limit, but an ack of it is no longer an unambiguous RTT sample.
    extra_copies: bool = False
    fast_resent: bool = False  # sent again because NACKs said it was lost


@dataclass
class _Held:
    """A received packet waiting for the gap before it to fill."""

    payload: bytes
    close: bool
    receive_stream_id: int


class Connection:
    """One stream, either role. Build it with `Connection.connect` or `Connection.accept`."""

    def __init__(
        self,
        config: StreamConfig,
        local: LocalIdentity,
        remote: Destination,
        receive_stream_id: int,
        *,
        is_client: bool,
        now: float,
        via: str = "",
        local_port: int = 0,
        remote_port: int = 0,
    ) -> None:
        if not 0 < receive_stream_id <= MAX_STREAM_ID:
            raise ValueError("a receive stream id is a non-zero 32-bit value")
        self.config = config
        self.local = local
        self.remote = remote
        self.receive_stream_id = receive_stream_id
        self.send_stream_id = 0  # the peer's id: learnt from its SYN
        self.is_client = is_client
        self.via = via
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = StreamState.SYN_SENT if is_client else StreamState.SYN_RECEIVED
        self._events: deque[StreamEvent] = deque()
        self._now = now
        self._created = now
        self._last_received = now

        # Sending.
        self._tx = bytearray()  # accepted from the application, not yet in a packet
        self._next_seq = 0
        self._unacked: dict[int, _Sent] = {}  # in sequence order
        self._unacked_bytes = 0
        # Sequences to send again at the next `packets_to_send`, and whether that copy
        # counts toward `max_resends` (timeouts and fast retransmits do; choke probes and the
        # resend after an unchoke do not: the peer is alive and asked us to wait).
        self._retransmit: dict[int, bool] = {}
        self._send_mtu = min(config.max_packet_size, config.default_peer_packet_size)
        self._cwnd = float(config.initial_window)
        self._ssthresh = float(config.max_window)
        self._recovery_seq = -1  # the window was cut for losses up to this sequence
        self._undo: tuple[float, float] | None = None  # window and threshold before the cut
        # How much later than its neighbours (in round trips) a NACKed packet may still
        # arrive: it grows each time a fast retransmit proves spurious.
        self._reorder = 0.25
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = config.initial_rto  # from the estimator; `_backoff` doubles it
        self._backoff = 0
        self._choked_by_peer = False
        self._persist_at: float | None = None
        # While the route to the peer is being moved (see `hold`), nothing of our own accord.
        self._held_until: float | None = None
        self._handshake_deadline = now + config.handshake_timeout
        self._persist_backoff = 0
        self._probes_unanswered = 0
        self._probe_new = False
        self._syn_due = is_client  # a server answers when the ack timer fires or data comes
        self._keepalive_at = now + config.keepalive_interval
        self._local_closed = False
        self._close_seq: int | None = None
        self._close_acked = False
        # Sends of our CLOSE before the peer's CLOSE arrived: only later sends count toward
        # giving up on its ack (before, its loss is just loss).
        self._close_sends_before_peer_closed = 0
        self._close_after_peer = False  # our CLOSE was first sent after the peer's arrived
        self._reset_packet: StreamPacket | None = None
        self._writer_blocked = False
        self._established_signalled = False

        # Receiving.
        self._rx_next = 0  # the next sequence to deliver
        self._rx_highest = -1  # the highest sequence received
        self._rx_ready = bytearray()
        self._rx_held: dict[int, _Held] = {}
        self._rx_held_bytes = 0
        self._peer_closed = False
        self._choking = False
        self._announce_unchoke = False
        self._readable_signalled = False
        self._ack_at: float | None = None
        self._ack_now = False
        self._time_wait_until: float | None = None

    # --- construction -------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        config: StreamConfig,
        local: LocalIdentity,
        remote: Destination,
        receive_stream_id: int,
        now: float,
        *,
        via: str = "",
        local_port: int = 0,
        remote_port: int = 0,
    ) -> Connection:
        """A client stream: its SYN goes out at the first `packets_to_send`."""
        return cls(
            config, local, remote, receive_stream_id, is_client=True, now=now, via=via,
            local_port=local_port, remote_port=remote_port,
        )  # fmt: skip

    @classmethod
    def accept(
        cls,
        config: StreamConfig,
        local: LocalIdentity,
        syn: StreamPacket,
        receive_stream_id: int,
        now: float,
        *,
        via: str = "",
        local_port: int = 0,
        remote_port: int = 0,
    ) -> Connection:
        """A server stream from a SYN whose signature the caller has verified against its
        FROM destination (and whose replay hash, if any, names us)."""
        if not syn.is_syn or syn.from_destination is None or syn.receive_stream_id == 0:
            raise ValueError("accept needs a SYN with FROM and the client's stream id")
        conn = cls(
            config, local, syn.from_destination, receive_stream_id, is_client=False, now=now,
            via=via, local_port=local_port, remote_port=remote_port,
        )  # fmt: skip
        conn.send_stream_id = syn.receive_stream_id
        conn._send_mtu = conn._negotiated_mtu(syn.max_packet_size)
        conn._process(syn, now)
        return conn

    # --- application side ---------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def half_open(self) -> bool:
        return self.state is StreamState.SYN_RECEIVED

    @property
    def peer_closed(self) -> bool:
        return self._peer_closed

    @property
    def readable_bytes(self) -> int:
        return len(self._rx_ready)

    @property
    def receive_buffered_bytes(self) -> int:
        """Everything held on the receiving side: ready plus out of order."""
        return len(self._rx_ready) + self._rx_held_bytes

    @property
    def send_buffered_bytes(self) -> int:
        """Everything held on the sending side: queued plus sent and not acked."""
        return len(self._tx) + self._unacked_bytes

    @property
    def send_buffer_free(self) -> int:
        return max(0, self.config.send_buffer_bytes - self.send_buffered_bytes)

    @property
    def window(self) -> int:
        return int(self._cwnd)

    @property
    def rto(self) -> float:
        return min(self.config.max_rto, self._rto * 2.0**self._backoff)

    @property
    def srtt(self) -> float | None:
        return self._srtt

    @property
    def choked_by_peer(self) -> bool:
        return self._choked_by_peer

    @property
    def choking_peer(self) -> bool:
        return self._choking

    @property
    def send_mtu(self) -> int:
        return self._send_mtu

    @property
    def in_flight(self) -> int:
        return len(self._unacked)

    def send(self, data: bytes) -> int:
        """Queue `data`; returns how much was accepted. Less than offered means the send
        buffer is full: stop reading the backend until `SendBufferFree`."""
        if self.finished or self._local_closed or self.state is StreamState.TIME_WAIT:
            raise StreamClosedError(f"stream {self.receive_stream_id} is closed for sending")
        accepted = min(len(data), self.send_buffer_free)
        if accepted < len(data):
            self._writer_blocked = True
        if accepted:
            self._tx += data[:accepted]
            self._syn_due = True
        return accepted

    def close(self) -> None:
        """The application has no more data (half-close): CLOSE follows the queued data."""
        if self.finished or self._local_closed:
            return
        self._local_closed = True
        self._syn_due = True

    def reset(self, reason: str = "reset by application") -> None:
        """End the stream now: a signed RESET goes to the peer, buffers are dropped."""
        if self.finished:
            return
        self._finish_reset(reason, by_peer=False, send_reset=True)

    def read(self, max_bytes: int = -1) -> bytes:
        """Data received in order, up to `max_bytes` (all when negative)."""
        if max_bytes < 0 or max_bytes >= len(self._rx_ready):
            data = bytes(self._rx_ready)
            self._rx_ready.clear()
        else:
            data = bytes(self._rx_ready[:max_bytes])
            del self._rx_ready[:max_bytes]
        if not self._rx_ready:
            self._readable_signalled = False
        roomy = self._receive_free() >= self.config.receive_buffer_bytes // 2
        # All that is still held waits behind a gap: only the peer's retransmissions can free
        # it (in-order packets always fit, IN_ORDER_RESERVE), and a choked peer sends none.
        stuck_on_gap = not self._rx_ready and bool(self._rx_held)
        if self._choking and (roomy or stuck_on_gap):
            # Tell the peer to resume.
            self._choking = False
            self._announce_unchoke = True
            self._request_ack(self._now, immediate=True)
        self._check_finished()
        return data

    def hold(self, until: float) -> None:
        """The route to the peer is being moved: until `until` (or `route_changed`), no
        retransmission, probe or keepalive; what goes out anyway is dropped on the way. A
        handshake under way gets its full time again after the hold."""
        self._held_until = until
        self._handshake_deadline = max(
            self._handshake_deadline, until + self.config.handshake_timeout
        )

    def route_changed(self, now: float) -> None:
        """Our packets now leave through another router, and what was in flight may have
        died with the old one: send the oldest unacked packet again at once (not counted
        toward `max_resends`: the route lost it), or an ack when nothing is in flight, so the
        new router opens its session with the peer now. The backoff timed the dead route."""
        self._advance(now)
        self._held_until = None
        if self.finished or self.state is StreamState.TIME_WAIT:
            return
        self._backoff = 0
        if self._unacked:
            self._retransmit.setdefault(next(iter(self._unacked)), False)
        elif self._can_ack():
            self._ack_now = True

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

    # --- network side -------------------------------------------------------------------

    def receive(self, packet: StreamPacket, now: float) -> str | None:
        """Take one packet addressed to this stream. Returns None when accepted, else why
        it was dropped."""
        self._advance(now)
        if self.finished:
            return DROP_FINISHED
        if packet.has(ECHO):
            return DROP_ECHO
        if packet.send_stream_id not in (0, self.receive_stream_id):
            return DROP_WRONG_STREAM_ID
        if packet.send_stream_id == 0 and self.is_client:
            return DROP_WRONG_STREAM_ID
        expected = self.send_stream_id
        # A RESET may carry 0 there: the peer refusing our SYN never chose an id.
        reset_without_id = packet.has(RESET) and packet.receive_stream_id == 0
        if expected and packet.receive_stream_id != expected and not reset_without_id:
            return DROP_WRONG_STREAM_ID
        if packet.from_destination is not None and packet.from_destination != self.remote:
            return DROP_WRONG_DESTINATION
        if packet.has(RESET):
            if self.state is StreamState.TIME_WAIT:
                return None  # finished already; its StreamClosed stands
            verdict = self._check_signature(packet)
            if verdict is None:
                self._finish_reset("reset by peer", by_peer=True, send_reset=False)
            return verdict
        if packet.has(SYNCHRONIZE | CLOSE) and not packet.has(SIGNATURE_INCLUDED):
            return DROP_UNSIGNED
        if packet.has(SIGNATURE_INCLUDED):
            verdict = self._check_signature(packet)
            if verdict is not None:
                return verdict
        if packet.is_syn and self.state is StreamState.SYN_SENT:
            if packet.from_destination is None:
                return DROP_SYN_WITHOUT_FROM
            if packet.receive_stream_id == 0 or packet.sequence != 0:
                return DROP_MALFORMED
            self.send_stream_id = packet.receive_stream_id
            self._send_mtu = self._negotiated_mtu(packet.max_packet_size)
            self._established()
            # Data held before the SYN came with whatever id its sender used: keep only
            # what names the stream the SYN announced.
            for seq, held in list(self._rx_held.items()):
                if held.receive_stream_id != self.send_stream_id:
                    self._drop_held(seq)
            self._rx_highest = max([self._rx_next - 1, *self._rx_held])
        elif packet.is_syn and not self.is_client and 0 in self._unacked:
            # The client sent its SYN again: ours was lost, and only a SYN tells it our id.
            self._retransmit.setdefault(0, False)
        return self._process(packet, now)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that has passed by `now`."""
        self._advance(now)
        if self.finished:
            return
        if self.state is StreamState.TIME_WAIT:
            if self._time_wait_until is not None and now >= self._time_wait_until:
                self.state = StreamState.CLOSED
            return
        handshaking = self.state in (StreamState.SYN_SENT, StreamState.SYN_RECEIVED)
        if handshaking and now >= self._handshake_deadline:
            self._finish_reset("handshake timeout", by_peer=False, send_reset=True)
            return
        if not self._both_closed() and now >= self._last_received + self.config.idle_timeout:
            self._finish_reset("idle timeout", by_peer=False, send_reset=True)
            return
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            self._request_ack(now, immediate=True)
        if self._held_until is not None and now < self._held_until:
            return
        if self._choked_by_peer:
            if self._persist_at is not None and now >= self._persist_at and self._has_data():
                self._persist(now)
        else:
            deadline = self._retransmit_deadline()
            if deadline is not None and now >= deadline:
                self._on_retransmit_timeout(now)
        if self._keepalive_deadline() is not None and now >= self._keepalive_at:
            self._keepalive_at = now + self.config.keepalive_interval
            self._probe_new = True  # an empty sequenced packet

    def timer_at(self) -> float | None:
        if self.finished:
            return None
        if self.state is StreamState.TIME_WAIT:
            return self._time_wait_until
        own = [self._keepalive_deadline()]  # what we send of our own accord
        if self._choked_by_peer:
            if self._has_data():
                own.append(self._persist_at)
        else:
            own.append(self._retransmit_deadline())
        if self._held_until is not None:
            own = [max(d, self._held_until) for d in own if d is not None]
        deadlines = [self._ack_at, *own]
        if self.state in (StreamState.SYN_SENT, StreamState.SYN_RECEIVED):
            deadlines.append(self._handshake_deadline)
        if not self._both_closed():
            deadlines.append(self._last_received + self.config.idle_timeout)
        return min((d for d in deadlines if d is not None), default=None)

    def packets_to_send(self, now: float) -> list[StreamPacket]:
        """Everything to send now: a RESET, retransmissions, new packets, an ack."""
        self._advance(now)
        if self._reset_packet is not None:
            packet, self._reset_packet = self._reset_packet, None
            return [packet]
        if self.finished:
            return []
        out: list[StreamPacket] = []
        if self.state is not StreamState.TIME_WAIT:
            for seq in sorted(self._retransmit):
                sent = self._unacked.get(seq)
                counted = self._retransmit[seq]
                if sent is not None and not (counted and self._choked_by_peer):
                    # While choked only probes go; the unchoke resends everything.
                    out.append(self._transmit(sent, now, counted=counted))
            self._retransmit.clear()
            self._send_new(now, out)
        if self._ack_now and self._can_ack():
            out.append(self._plain_ack())
        return out

    # --- receiving ----------------------------------------------------------------------

    def _process(self, packet: StreamPacket, now: float) -> str | None:
        """A packet that passed the identity checks: acks, choke state, then its data."""
        self._last_received = now
        self._keepalive_at = max(self._keepalive_at, now + self.config.keepalive_interval)
        self._probes_unanswered = 0
        # The choke state first: the NACKs of a choking ack are no reason to resend.
        choke = packet.choked
        if choke is not None:
            self._set_choked(choke, now)
        # A packet without our stream id was sent before its sender heard from us: its ack
        # fields mean nothing (Java ignores them in such a SYN too).
        acks_valid = not packet.has(NO_ACK) and packet.send_stream_id != 0
        if acks_valid and self.send_stream_id:
            self._process_ack(packet.ack_through, packet.nacks, now)
        if packet.sequence == 0 and not packet.is_syn:
            return None  # a plain ack
        return self._receive_data(packet, now)

    def _receive_data(self, packet: StreamPacket, now: float) -> str | None:
        seq = packet.sequence
        if self.state is StreamState.TIME_WAIT or seq < self._rx_next or seq in self._rx_held:
            # A retransmission: our ack was lost or is late; repeat it now.
            self._request_ack(now, immediate=True)
            return None
        if self._peer_closed:
            return DROP_AFTER_CLOSE
        if seq - self._rx_next > MAX_NACKS:
            # Beyond what our NACKs could describe: the sender runs a window over 255.
            return DROP_OUT_OF_WINDOW
        size = len(packet.payload)
        if size > self.config.receive_buffer_bytes - IN_ORDER_RESERVE:
            # Far past any size we or i2pd use: it could never be placed, so choking would
            # only stall the stream.
            return DROP_OVERSIZED
        limit = self.config.receive_buffer_bytes
        if seq != self._rx_next:
            limit -= IN_ORDER_RESERVE
        if self.receive_buffered_bytes + size > limit:
            self._choking = True
            self._announce_unchoke = False
            self._request_ack(now, immediate=True)
            return DROP_BUFFER_FULL
        if size:
            self._announce_unchoke = False
        self._rx_highest = max(self._rx_highest, seq)
        if seq != self._rx_next:
            self._rx_held[seq] = _Held(packet.payload, packet.has(CLOSE), packet.receive_stream_id)
            self._rx_held_bytes += size
            self._request_ack(now, immediate=True)  # NACK the gap at once
            return None
        self._deliver(packet.payload, packet.has(CLOSE))
        filled = False
        while not self._peer_closed and self._rx_next in self._rx_held:
            held = self._rx_held.pop(self._rx_next)
            self._rx_held_bytes -= len(held.payload)
            self._deliver(held.payload, held.close)
            filled = True
        # Ack at once when a gap remains or was just filled (RFC 5681 4.2: the sender is
        # recovering), when asked to, and for the peer's CLOSE.
        gap = filled or bool(self._rx_held)
        wants_now = packet.delay_requested_ms == 0 or self._peer_closed or gap
        self._request_ack(now, immediate=wants_now)
        self._check_finished()
        return None

    def _deliver(self, payload: bytes, close: bool) -> None:
        if payload:
            self._rx_ready += payload
            if not self._readable_signalled:
                self._readable_signalled = True
                self._events.append(DataReadable(self.receive_stream_id))
        self._rx_next += 1
        if close:
            self._peer_closed = True
            ours = self._unacked.get(self._close_seq) if self._close_seq is not None else None
            self._close_sends_before_peer_closed = ours.sends if ours is not None else 0
            self._events.append(PeerClosed(self.receive_stream_id))
            for seq in list(self._rx_held):
                self._drop_held(seq)  # nothing follows a CLOSE

    def _drop_held(self, seq: int) -> None:
        held = self._rx_held.pop(seq)
        self._rx_held_bytes -= len(held.payload)

    def _receive_free(self) -> int:
        return self.config.receive_buffer_bytes - self.receive_buffered_bytes

    def _request_ack(self, now: float, *, immediate: bool) -> None:
        if immediate:
            self._ack_at = None
            if self.is_client or self._next_seq > 0:
                self._ack_now = True
            else:
                self._syn_due = True  # a server's first answer is its SYN
            return
        deadline = now + self._ack_delay()
        if self._ack_at is None or deadline < self._ack_at:
            self._ack_at = deadline

    def _ack_delay(self) -> float:
        if self._srtt is None:
            return self.config.syn_answer_delay
        return min(self.config.ack_delay, max(self.config.min_ack_delay, self._srtt / 10))

    def _check_signature(self, packet: StreamPacket) -> str | None:
        try:
            return None if packet.verify(self.remote) else DROP_BAD_SIGNATURE
        except WireError:
            return DROP_UNSUPPORTED_SIGNATURE

    # --- acks, RTT, window ----------------------------------------------------------------

    def _process_ack(self, ack_through: int, nacks: tuple[int, ...], now: float) -> None:
        if ack_through >= self._next_seq:
            return  # acks what we never sent: i2pd ignores such an ack too
        nacked = {n for n in nacks if n <= ack_through}
        newly: list[_Sent] = []
        for seq in list(self._unacked):
            if seq > ack_through:
                break
            if seq in nacked:
                self._unacked[seq].nacked += 1
                continue
            sent = self._unacked.pop(seq)
            self._unacked_bytes -= len(sent.payload)
            self._retransmit.pop(seq, None)
            newly.append(sent)
        if newly:
            self._on_new_acks(newly, now)
        if not self._choked_by_peer:
            self._fast_retransmit(now)

    def _on_new_acks(self, newly: list[_Sent], now: float) -> None:
        # Karn's rule: only a packet sent once gives an unambiguous sample; the latest one
        # acked is the one this ack answers.
        clean = [s for s in newly if s.sends == 1 and not s.extra_copies]
        if clean:
            self._rtt_sample(max(0.0, now - clean[-1].last_sent))
        if self._srtt is not None and any(
            s.fast_resent and now - s.last_sent < self._srtt / 2 for s in newly
        ):
            # Acked sooner than the resent copy could have been: the original was only
            # late (reordered). Undo the cut and tolerate more reordering from now on.
            self._reorder = min(1.0, self._reorder * 2)
            if self._undo is not None:
                self._cwnd, self._ssthresh = self._undo
                self._undo = None
        self._backoff = 0
        for _ in newly:
            if self._cwnd < self._ssthresh:
                self._cwnd += 1  # slow start
            else:
                self._cwnd += 1 / self._cwnd  # about one packet per round trip
        self._cwnd = min(self._cwnd, float(self.config.max_window))
        for sent in newly:
            if sent.flags & SYNCHRONIZE and self.state is StreamState.SYN_RECEIVED:
                self._established()
            if sent.sequence == self._close_seq:
                self._close_acked = True
        if self._writer_blocked and self.send_buffered_bytes <= self.config.send_buffer_bytes // 2:
            self._writer_blocked = False
            self._events.append(SendBufferFree(self.receive_stream_id))
        self._check_finished()

    def _fast_retransmit(self, now: float) -> None:
        # A NACK may only mean the packet took a slower tunnel: call it lost once it is a
        # quarter of a round trip (more after spurious resends) later than the packets acked
        # around it (RACK, RFC 8985). This also keeps the acks of one gap from resending
        # the packet more than once per round trip.
        srtt = self._srtt
        allowance = (1 + self._reorder) * srtt if srtt is not None else self.rto
        for sent in self._unacked.values():
            if sent.nacked < self.config.fast_retransmit_nacks:
                continue
            if now - sent.last_sent < allowance:
                continue
            sent.nacked = 0
            sent.fast_resent = True
            self._retransmit[sent.sequence] = True
            self._cut_window(sent.sequence)

    def _cut_window(self, sequence: int) -> None:
        """Halve the window once per loss episode (as i2pd and Java do)."""
        if sequence <= self._recovery_seq:
            return
        self._undo = (self._cwnd, self._ssthresh)
        self._cwnd = max(float(self.config.min_window), self._cwnd / 2)
        self._ssthresh = max(float(self.config.min_window), self._cwnd)
        self._recovery_seq = self._next_seq - 1

    def _rtt_sample(self, sample: float) -> None:
        """RFC 6298 (the spec's recommended alpha, beta and K), with i2pd's 1.5 x RTT as a
        floor so a steady path with no variance is not retransmitted at exactly one RTT."""
        if self._srtt is None:
            self._srtt = sample
            self._rttvar = sample / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        rto = max(self._srtt + 4 * self._rttvar, 1.5 * self._srtt)
        self._rto = min(self.config.max_rto, max(self.config.min_rto, rto))

    def _set_choked(self, choked: bool, now: float) -> None:
        if choked == self._choked_by_peer:
            return
        self._choked_by_peer = choked
        if choked:
            self._persist_backoff = 0
            self._persist_at = now + self.rto
        else:
            self._persist_at = None
            # What the peer dropped while choking is still unacked: send it again now.
            for seq in self._unacked:
                self._retransmit.setdefault(seq, False)

    def _retransmit_deadline(self) -> float | None:
        if not self._unacked:
            return None
        return min(s.last_sent for s in self._unacked.values()) + self.rto

    def _on_retransmit_timeout(self, now: float) -> None:
        rto = self.rto
        due = [s for s in self._unacked.values() if now >= s.last_sent + rto]
        if self._peer_closed and [s.sequence for s in due] == [self._close_seq] == list(
            self._unacked
        ):
            last = due[0]
            sends_after = last.sends - self._close_sends_before_peer_closed
            if not last.payload and sends_after >= CLOSE_SENDS_AFTER_PEER_CLOSED:
                # The peer closed and has everything but our bare CLOSE: an i2pd peer
                # forgets the stream once its CLOSE is acked and never acks ours (Java gives
                # up on such a CLOSE after 3 sends too). Done, cleanly.
                self._unacked.clear()
                self._close_acked = True
                self._check_finished()
                return
        if any(s.sends > self.config.max_resends for s in due):
            self._finish_reset("retransmission limit", by_peer=False, send_reset=True)
            return
        for sent in due:
            self._retransmit[sent.sequence] = True
            sent.last_sent = now  # the deadline moves now, not when the copy goes out
            sent.fast_resent = False
        self._backoff += 1
        if due:
            self._cut_window(due[0].sequence)
            self._undo = None  # a timeout is not undone

    def _persist(self, now: float) -> None:
        """Choked: probe now and then in case the unchoke was lost (spec: persist timer)."""
        if self._probes_unanswered > self.config.max_resends:
            self._finish_reset("no answer while choked", by_peer=False, send_reset=True)
            return
        self._probes_unanswered += 1
        if self._unacked:
            self._retransmit.setdefault(next(iter(self._unacked)), False)
        elif self._tx:
            self._probe_new = True
        self._persist_backoff += 1
        delay = self._rto * 2.0**self._persist_backoff
        self._persist_at = now + min(self.config.max_rto, delay)

    def _has_data(self) -> bool:
        return bool(self._unacked or self._tx)

    def _keepalive_deadline(self) -> float | None:
        if (
            self.state is not StreamState.ESTABLISHED
            or self._unacked
            or self._local_closed
            or self._tx
        ):
            return None
        return self._keepalive_at

    # --- sending ------------------------------------------------------------------------

    def _negotiated_mtu(self, offered: int | None) -> int:
        if offered is None:
            offered = self.config.default_peer_packet_size
        return max(self.config.min_packet_size, min(offered, self.config.max_packet_size))

    def _send_new(self, now: float, out: list[StreamPacket]) -> None:
        if self._next_seq > MAX_STREAM_ID:
            self._finish_reset("sequence numbers exhausted", by_peer=False, send_reset=True)
            return
        if self._next_seq == 0:
            if not self._syn_due:
                return  # a server's SYN waits for the ack timer, data or close
            out.append(self._new_packet(SYNCHRONIZE, now, take_data=True))
        if self.state is StreamState.SYN_RECEIVED:
            # Nothing after our SYN until it is acked: an i2pd client that gets a later
            # packet first ends the stream unless the SYN follows within 200 ms
            # (Streaming.cpp SYN_TIMEOUT); i2pd servers hold back the same way (window 1).
            return
        while self._close_seq is None and len(self._unacked) < max(1, int(self._cwnd)):
            probe, self._probe_new = self._probe_new, False
            if self._tx and (not self._choked_by_peer or probe):
                out.append(self._new_packet(0, now, take_data=True))
            elif self._local_closed and not self._tx and not self._unacked:
                out.append(self._new_packet(0, now, take_data=False))  # a bare CLOSE
            elif probe and not self._tx:
                out.append(self._new_packet(0, now, take_data=False))  # a keepalive
            else:
                break
            if self._next_seq > MAX_STREAM_ID:
                break

    def _new_packet(self, flags: int, now: float, *, take_data: bool) -> StreamPacket:
        payload = b""
        if take_data:
            payload = bytes(self._tx[: self._send_mtu])
            del self._tx[: len(payload)]
        # CLOSE goes out alone, once everything sent before it is acked, as i2pd does: an
        # i2pd 2.45.1 client that gets CLOSE while its application still reads hands the
        # SAM or tunnel socket at most one more buffer and never its end (SAM.cpp 936-949).
        if self._local_closed and not self._tx and not self._unacked and not payload:
            flags |= CLOSE
            self._close_seq = self._next_seq
            self._close_after_peer = self._peer_closed
        sent = _Sent(self._next_seq, payload, flags, now)
        self._next_seq += 1
        self._unacked[sent.sequence] = sent
        self._unacked_bytes += len(payload)
        return self._transmit(sent, now, counted=True)

    def _transmit(self, sent: _Sent, now: float, *, counted: bool) -> StreamPacket:
        if counted:
            sent.sends += 1
        else:
            sent.extra_copies = True
        sent.last_sent = now
        sent.nacked = 0
        flags = sent.flags
        delay: int | None = None
        if sent.flags & CLOSE or len(self._unacked) >= int(self._cwnd):
            delay = 0  # the last packet a window allows, or CLOSE: ask for an ack at once
        return self._build(sent.sequence, flags, sent.payload, delay)

    def _plain_ack(self) -> StreamPacket:
        return self._build(0, 0, b"", None)

    def _build(self, sequence: int, flags: int, payload: bytes, delay: int | None) -> StreamPacket:
        """A packet carrying our current ack state; SYN, CLOSE and RESET come signed."""
        syn = bool(flags & SYNCHRONIZE)
        ack_through, nacks = self._ack_fields()
        carries_ack = ack_through >= 0
        if not carries_ack:
            flags |= NO_ACK
            ack_through = 0
        if syn and self.is_client and self.send_stream_id == 0:
            # Replay prevention: our SYN names its target (spec, Java 0.9.58, i2pd 2.47).
            nacks = nacks_from_hash(self.remote.hash)
        elif syn and nacks:
            # The spec wants no NACKs in a SYN reply (8 would read as a replay hash): ack
            # only what arrived in order.
            ack_through, nacks = self._rx_next - 1, ()
        if self._choking:
            delay = DELAY_CHOKE
        elif self._announce_unchoke:
            delay = 0
        signed = bool(flags & (SYNCHRONIZE | CLOSE | RESET))
        packet = StreamPacket.make(
            self.send_stream_id,
            self.receive_stream_id,
            sequence,
            ack_through=ack_through,
            nacks=nacks,
            resend_delay=min(0xFF, int(self.rto)),
            flags=flags | (SIGNATURE_INCLUDED if signed else 0),
            delay_requested_ms=delay,
            from_destination=self.local.destination if syn else None,
            max_packet_size=self.config.max_packet_size if syn else None,
            payload=payload,
        )
        if carries_ack and self._can_ack():
            self._ack_now = False
            self._ack_at = None
        if signed:
            packet = packet.signed(self.local.sign, self.local.destination.signature_len)
        return packet

    def _ack_fields(self) -> tuple[int, tuple[int, ...]]:
        """ackThrough and the NACKs below it; ackThrough -1 when nothing was received."""
        if self._rx_highest < 0:
            return -1, ()
        missing = tuple(
            seq for seq in range(self._rx_next, self._rx_highest) if seq not in self._rx_held
        )
        return self._rx_highest, missing

    def _can_ack(self) -> bool:
        return self._rx_highest >= 0 and self.send_stream_id != 0

    # --- endings ------------------------------------------------------------------------

    def _established(self) -> None:
        self.state = StreamState.ESTABLISHED
        if not self._established_signalled:
            self._established_signalled = True
            self._events.append(StreamEstablished(self.receive_stream_id))

    def _both_closed(self) -> bool:
        # Our CLOSE acked is not enough: a NACKed packet before it may still be missing.
        return self._peer_closed and self._close_acked and not self._unacked

    def _check_finished(self) -> None:
        if self.state not in (StreamState.ESTABLISHED, StreamState.SYN_RECEIVED):
            return
        if not self._both_closed() or self._rx_ready:
            return
        self._events.append(StreamClosed(self.receive_stream_id))
        self._release()
        if self._close_after_peer:
            # Our acked CLOSE acked theirs: the peer knows it is done.
            self.state = StreamState.CLOSED
        else:
            self.state = StreamState.TIME_WAIT
            self._time_wait_until = self._now + self.config.time_wait

    def _finish_reset(self, reason: str, *, by_peer: bool, send_reset: bool) -> None:
        # Before the peer's SYN we do not know its id: a RESET with sendStreamId 0 still
        # finds the stream at i2pd and at our Endpoint (by our id, as follow-ons do).
        if send_reset and not self.is_client and self._next_seq == 0:
            # Our SYN has not gone out: the RESET is our SYN. i2pd 2.45.1 takes a packet of
            # sequence 0 without SYN for a plain ack and ignores its RESET (Streaming.cpp
            # HandleNextPacket), so a refused client would wait for its timeout.
            self._reset_packet = self._build(0, SYNCHRONIZE | RESET, b"", None)
            self._next_seq = 1
        elif send_reset and (self.send_stream_id or self._next_seq > 0):
            self._reset_packet = self._build(self._next_seq, RESET, b"", None)
        self.state = StreamState.RESET
        self._events.append(StreamReset(self.receive_stream_id, reason, by_peer))
        self._release()
        self._rx_ready.clear()

    def _release(self) -> None:
        """Drop every buffer a finished stream no longer needs."""
        self._tx.clear()
        self._unacked.clear()
        self._unacked_bytes = 0
        self._retransmit.clear()
        self._rx_held.clear()
        self._rx_held_bytes = 0
        self._ack_at = None
        self._persist_at = None

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)

    def __repr__(self) -> str:
        return (
            f"Connection({self.receive_stream_id:08x}/{self.send_stream_id:08x} "
            f"{self.state.value} via={self.via!r})"
        )
