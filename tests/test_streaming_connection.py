"""One stream's state machine, driven packet by packet with explicit times: handshake fields,
acks and NACKs, ack timing, window, RTO, retransmission limits, choke, close and reset."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from i2p_multihome.streaming import (
    Connection,
    DataReadable,
    PeerClosed,
    SendBufferFree,
    StreamClosed,
    StreamClosedError,
    StreamConfig,
    StreamEstablished,
    StreamEvent,
    StreamReset,
    StreamState,
)
from i2p_multihome.streaming.connection import (
    DROP_BAD_SIGNATURE,
    DROP_BUFFER_FULL,
    DROP_UNSIGNED,
    DROP_WRONG_DESTINATION,
    DROP_WRONG_STREAM_ID,
)
from i2p_multihome.wire import streaming as sp
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.streaming import StreamPacket
from seeded import seeded_random

ALICE = DestinationKeys.generate(seeded_random(b"alice"))  # the client
BOB = DestinationKeys.generate(seeded_random(b"bob"))  # the server
MALLORY = DestinationKeys.generate(seeded_random(b"mallory"))
CONFIG = StreamConfig()
C_ID, S_ID = 0x0C0C0C0C, 0x05050505


def wire(packet: StreamPacket, sender: DestinationKeys) -> StreamPacket:
    """What the other side decodes: through bytes, so signatures are checked for real."""
    return StreamPacket.decode(packet.encode(), signer=sender.destination)


def events(conn: Connection) -> list[StreamEvent]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def deliver(packets: list[StreamPacket], sender: DestinationKeys, to: Connection,
            now: float) -> list[str | None]:  # fmt: skip
    return [to.receive(wire(p, sender), now) for p in packets]


def handshake(config: StreamConfig = CONFIG, request: bytes = b"") -> tuple[Connection, Connection]:
    """A client and a server stream at t=0 whose SYNs have crossed, both ESTABLISHED."""
    client = Connection.connect(config, ALICE, BOB.destination, C_ID, 0.0)
    client.send(request)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(config, BOB, wire(syn, ALICE), S_ID, 0.0)
    server.handle_timer(config.ack_delay)
    [answer] = server.packets_to_send(config.ack_delay)
    assert deliver([answer], BOB, client, 0.4) == [None]
    client.handle_timer(0.4 + config.ack_delay)
    acks = client.packets_to_send(0.4 + config.ack_delay)
    deliver(acks, ALICE, server, 0.8)
    assert client.state is server.state is StreamState.ESTABLISHED
    events(client)
    events(server)
    return client, server


def pump(a: Connection, a_keys: DestinationKeys, b: Connection, b_keys: DestinationKeys,
         now: float, *, rounds: int = 50, rtt: float = 0.0) -> float:  # fmt: skip
    """Exchange packets (running ack timers) until both are quiet; returns the time."""
    for _ in range(rounds):
        moved = False
        for src, keys, dst in ((a, a_keys, b), (b, b_keys, a)):
            for deadline in (src.timer_at(),):
                if deadline is not None and deadline <= now + 0.25:
                    now = max(now, deadline)
                    src.handle_timer(now)
            out = src.packets_to_send(now)
            if out:
                moved = True
                now += rtt / 2
                deliver(out, keys, dst, now)
        if not moved:
            return now
    return now


# --- handshake ----------------------------------------------------------------------------


def test_client_syn_carries_from_signature_max_size_replay_hash_and_no_ack() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    client.send(b"GET /")
    [syn] = client.packets_to_send(0.0)
    assert (syn.send_stream_id, syn.receive_stream_id, syn.sequence) == (0, C_ID, 0)
    assert syn.is_syn and syn.has(sp.NO_ACK) and syn.has(sp.SIGNATURE_INCLUDED)
    assert syn.from_destination == ALICE.destination and syn.max_packet_size == 1812
    assert syn.replay_hash == BOB.destination.hash
    assert syn.payload == b"GET /"
    assert wire(syn, ALICE).verify(ALICE.destination)
    assert client.state is StreamState.SYN_SENT


def test_server_answers_with_a_signed_syn_after_the_syn_answer_delay_or_at_once_with_data() -> None:
    # Not at once: the client's RTO comes from the RTT it measures on our SYN and i2pd has
    # no floor for it; the wait in that first sample keeps its resends, which pick another
    # lease and so another router, from firing on a tunnel's jitter and our own.
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    assert syn.payload == b""
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 10.0)
    assert server.state is StreamState.SYN_RECEIVED and server.half_open
    assert server.packets_to_send(10.0) == []  # waiting for data to ride along
    assert CONFIG.syn_answer_delay == 0.2
    assert server.timer_at() == pytest.approx(10.2)
    server.handle_timer(10.199)
    assert server.packets_to_send(10.199) == []
    server.handle_timer(10.2)
    [answer] = server.packets_to_send(10.2)
    assert (answer.send_stream_id, answer.receive_stream_id, answer.sequence) == (C_ID, S_ID, 0)
    assert answer.is_syn and not answer.has(sp.NO_ACK) and answer.ack_through == 0
    assert answer.from_destination == BOB.destination and answer.max_packet_size == 1812
    assert answer.nacks == ()  # the spec wants none in a SYN reply
    assert wire(answer, BOB).verify(BOB.destination)
    # With data the answer leaves at once and carries it.
    other = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID + 1, 10.0)
    other.send(b"HTTP/1.1 200 OK")
    [answer] = other.packets_to_send(10.0)
    assert answer.is_syn and answer.payload == b"HTTP/1.1 200 OK"


def test_handshake_events_and_states() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.1)
    server.handle_timer(0.35)
    deliver(server.packets_to_send(0.35), BOB, client, 0.5)
    assert events(client) == [StreamEstablished(C_ID)]
    assert client.send_stream_id == S_ID and client.state is StreamState.ESTABLISHED
    client.handle_timer(0.75)
    deliver(client.packets_to_send(0.75), ALICE, server, 0.9)  # the ack of the server's SYN
    assert events(server) == [StreamEstablished(S_ID)]
    assert not server.half_open


@pytest.mark.parametrize(
    ("offered", "expected"), [(1812, 1812), (1730, 1730), (4000, 1812), (100, 512), (None, 1730)]
)
def test_packet_size_is_the_smaller_offer_1730_when_none_and_never_below_512(
    offered: int | None, expected: int
) -> None:
    syn = StreamPacket.make(
        0, C_ID, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.NO_ACK,
        from_destination=ALICE.destination, max_packet_size=offered,
    ).signed(ALICE.sign, 64)  # fmt: skip
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    assert server.send_mtu == expected
    server.send(bytes(10_000))
    packets = server.packets_to_send(0.0)
    assert max(len(p.payload) for p in packets) == expected


def test_a_client_sends_1730_until_the_server_names_its_size() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    client.send(bytes(5000))
    packets = client.packets_to_send(0.0)
    assert [len(p.payload) for p in packets] == [1730, 1730, 1540]
    # Packets before the SYN answer carry no stream id of the peer and no ack.
    assert all(p.send_stream_id == 0 and p.has(sp.NO_ACK) for p in packets)


def test_a_retransmitted_syn_gets_our_syn_again_at_once() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    server.handle_timer(0.2)
    [first] = server.packets_to_send(0.2)  # lost
    assert server.receive(wire(syn, ALICE), 9.0) is None
    [again] = server.packets_to_send(9.0)
    assert again.is_syn and again.sequence == 0 and again.from_destination == BOB.destination
    assert first.is_syn


# --- data, acks, NACKs ----------------------------------------------------------------------


def test_in_order_data_is_acked_after_a_tenth_of_the_rtt_and_a_gap_is_nacked_at_once() -> None:
    client, server = handshake()
    assert server.srtt == pytest.approx(0.6)
    client.send(bytes(1812 * 4))
    p1, p2, p3, p4 = client.packets_to_send(1.0)
    assert [p.sequence for p in (p1, p2, p3, p4)] == [1, 2, 3, 4]
    deliver([p1], ALICE, server, 2.0)
    assert server.packets_to_send(2.0) == []
    assert server.timer_at() == pytest.approx(2.06)
    server.handle_timer(2.06)
    [ack] = server.packets_to_send(2.06)
    assert ack.is_plain_ack and ack.ack_through == 1 and ack.nacks == ()
    deliver([p4], ALICE, server, 3.0)  # p2 and p3 are missing
    [nack] = server.packets_to_send(3.0)
    assert (nack.ack_through, nack.nacks) == (4, (2, 3))
    deliver([p3], ALICE, server, 3.05)
    [nack] = server.packets_to_send(3.05)
    assert (nack.ack_through, nack.nacks) == (4, (2,))
    deliver([p2], ALICE, server, 3.1)
    [ack] = server.packets_to_send(3.1)  # the gap filled: acked at once
    assert (ack.ack_through, ack.nacks) == (4, ())
    assert server.read() == bytes(1812 * 4)
    assert [type(e) for e in events(server)] == [DataReadable]


@pytest.mark.parametrize(
    ("rtt", "delay"),
    [(None, 0.2), (5.0, 0.2), (0.05, 0.005), (0.001, 0.002)],
    ids=["no-sample-yet-as-a-syn", "capped", "tenth", "floor"],
)
def test_the_ack_delay_is_a_tenth_of_the_rtt_between_2_and_200_ms(
    rtt: float | None, delay: float
) -> None:
    # An i2pd client resends a packet after 1.5 RTT and moves to another random lease at
    # the second resend: an ack held longer sends it to a router without its session.
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    server.handle_timer(CONFIG.ack_delay)
    [answer] = server.packets_to_send(CONFIG.ack_delay)
    deliver([answer], BOB, client, CONFIG.ack_delay)
    client.send(b"GET /")
    [request] = client.packets_to_send(CONFIG.ack_delay)
    assert request.ack_through == 0
    now = CONFIG.ack_delay + (rtt if rtt is not None else 0.0)
    if rtt is None:
        request = replace(request, ack_through=0, flags=request.flags | sp.NO_ACK)
    deliver([request], ALICE, server, now)
    assert (server.srtt is None) == (rtt is None)
    assert server.packets_to_send(now) == []
    assert server.timer_at() == pytest.approx(now + delay)
    server.handle_timer(now + delay)
    [ack] = server.packets_to_send(now + delay)
    assert ack.is_plain_ack and ack.ack_through == 1


def test_duplicates_are_acked_at_once_and_delivered_once() -> None:
    client, server = handshake()
    client.send(b"abc")
    [p1] = client.packets_to_send(1.0)
    deliver([p1], ALICE, server, 2.0)
    deliver([p1], ALICE, server, 2.05)
    [ack] = server.packets_to_send(2.05)
    assert ack.ack_through == 1
    assert server.read() == b"abc" and server.read() == b""


def test_delay_zero_asks_for_an_immediate_ack() -> None:
    _, server = handshake()
    packet = StreamPacket.make(S_ID, C_ID, 1, ack_through=0, delay_requested_ms=0, payload=b"x")
    assert server.receive(wire(packet, ALICE), 2.0) is None
    [ack] = server.packets_to_send(2.0)
    assert ack.ack_through == 1


def test_acks_of_our_data_free_the_send_buffer_and_nacks_trigger_fast_retransmit() -> None:
    client, _ = handshake()
    config = client.config
    client.send(bytes(1812 * 5))
    _, p2, _, _, _ = client.packets_to_send(1.0)
    assert client.send_buffered_bytes == 1812 * 5 and client.in_flight == 5
    nack = StreamPacket(C_ID, S_ID, 0, 5, (2,))
    assert client.receive(wire(nack, BOB), 2.0) is None
    assert client.in_flight == 1 and client.send_buffered_bytes == 1812
    assert client.packets_to_send(2.0) == []  # one NACK is not enough
    assert client.receive(wire(nack, BOB), 2.1) is None
    [again] = client.packets_to_send(2.1)
    assert again.sequence == 2 and again.payload == p2.payload
    assert config.fast_retransmit_nacks == 2
    # Further NACKs within a round trip do not resend it again.
    client.receive(wire(nack, BOB), 2.2)
    client.receive(wire(nack, BOB), 2.3)
    assert client.packets_to_send(2.3) == []
    client.receive(wire(StreamPacket(C_ID, S_ID, 0, 5), BOB), 3.0)
    assert client.in_flight == 0 and client.send_buffered_bytes == 0


def test_an_ack_of_something_never_sent_is_ignored() -> None:
    client, _ = handshake()
    client.send(b"x")
    client.packets_to_send(1.0)
    assert client.receive(wire(StreamPacket(C_ID, S_ID, 0, 99), BOB), 2.0) is None
    assert client.in_flight == 1


# --- window and RTO -----------------------------------------------------------------------


def test_window_starts_at_6_grows_per_ack_and_halves_on_timeout() -> None:
    client, server = handshake()
    fresh = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    assert fresh.window == 6
    fresh.send(bytes(1812 * 100))
    assert len(fresh.packets_to_send(0.0)) == 6  # the SYN and 5 more
    # After the handshake the ack of the SYN grew the window by one (slow start).
    client.send(bytes(1812 * 100))
    first = client.packets_to_send(1.0)
    start = client.window
    assert start == 7 and len(first) == 7
    deliver(first, ALICE, server, 1.5)
    server.handle_timer(1.7)
    deliver(server.packets_to_send(1.7), BOB, client, 2.0)
    assert client.window == start + len(first)  # slow start: one per acked packet
    burst = client.packets_to_send(2.0)
    assert len(burst) == client.window
    # Nothing acked: after the RTO the window halves and the oldest packets go again.
    rto = client.rto
    client.handle_timer(2.0 + rto)
    assert client.window == (start + len(first)) // 2
    again = client.packets_to_send(2.0 + rto)
    assert [p.sequence for p in again] == [p.sequence for p in burst]


def test_initial_rto_is_9_s_then_follows_the_rtt_and_doubles_per_timeout() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    assert client.rto == 9.0
    [syn] = client.packets_to_send(0.0)
    assert syn.is_syn and client.timer_at() == 9.0
    client.handle_timer(9.0)
    [syn2] = client.packets_to_send(9.0)
    assert syn2.is_syn and client.rto == 18.0
    client.handle_timer(27.0)
    client.packets_to_send(27.0)
    assert client.rto == 36.0
    client.handle_timer(63.0)  # capped at 45 s from here; the handshake ends first
    assert client.finished
    assert events(client)[-1] == StreamReset(C_ID, "handshake timeout", False)


def test_rto_from_samples_is_bounded_by_1_and_45_seconds() -> None:
    client, server = handshake()
    assert client.srtt is not None
    assert CONFIG.min_rto <= client.rto <= CONFIG.max_rto
    # A very fast path: the floor holds.
    now = 1.0
    for _ in range(20):
        client.send(b"x")
        out = client.packets_to_send(now)
        deliver(out, ALICE, server, now + 0.01)
        server.handle_timer(now + 0.01 + CONFIG.ack_delay)
        deliver(server.packets_to_send(now + 0.02), BOB, client, now + 0.02)
        now += 1
    assert client.srtt is not None and client.srtt < 0.1
    assert client.rto == CONFIG.min_rto


def test_retransmission_gives_up_with_a_signed_reset_after_max_resends() -> None:
    config = StreamConfig(max_resends=3, idle_timeout=10_000, keepalive_interval=5_000)
    client, _ = handshake(config)
    client.send(b"data")
    [packet] = client.packets_to_send(1.0)
    sends = [1.0]
    while not client.finished:
        deadline = client.timer_at()
        assert deadline is not None
        client.handle_timer(deadline)
        out = client.packets_to_send(deadline)
        if out and out[0].sequence == packet.sequence and not out[0].has(sp.RESET):
            sends.append(deadline)
    assert len(sends) == 1 + config.max_resends
    [reset] = [e for e in events(client) if isinstance(e, StreamReset)]
    assert reset == StreamReset(C_ID, "retransmission limit", False)
    # Each wait is longer than the one before (the RTO doubles up to its bound).
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))


def test_reset_packet_is_signed_and_sequenced_after_our_data() -> None:
    client, server = handshake()
    client.send(b"abc")
    client.packets_to_send(1.0)
    client.reset()
    [reset] = client.packets_to_send(1.1)
    assert reset.has(sp.RESET) and reset.has(sp.SIGNATURE_INCLUDED)
    assert (reset.send_stream_id, reset.receive_stream_id, reset.sequence) == (S_ID, C_ID, 2)
    assert wire(reset, ALICE).verify(ALICE.destination)
    assert client.finished and client.packets_to_send(1.2) == []
    assert events(client) == [StreamReset(C_ID, "reset by application", False)]
    with pytest.raises(StreamClosedError):
        client.send(b"more")
    assert server.receive(wire(reset, ALICE), 1.5) is None
    assert events(server)[-1] == StreamReset(S_ID, "reset by peer", True)
    assert server.finished and server.receive_buffered_bytes == 0


def test_forged_or_unsigned_resets_and_closes_are_dropped() -> None:
    _, server = handshake()
    forged = StreamPacket.make(S_ID, C_ID, 1, flags=sp.RESET | sp.SIGNATURE_INCLUDED).signed(
        MALLORY.sign, 64
    )
    assert server.receive(wire(forged, MALLORY), 1.0) == DROP_BAD_SIGNATURE
    unsigned_close = StreamPacket(S_ID, C_ID, 1, flags=sp.CLOSE)
    assert server.receive(wire(unsigned_close, ALICE), 1.0) == DROP_UNSIGNED
    with_wrong_from = StreamPacket.make(
        S_ID, C_ID, 1, flags=sp.RESET | sp.SIGNATURE_INCLUDED, from_destination=MALLORY.destination
    ).signed(MALLORY.sign, 64)
    assert server.receive(wire(with_wrong_from, MALLORY), 1.0) == DROP_WRONG_DESTINATION
    wrong_id = StreamPacket(S_ID, C_ID + 1, 1, payload=b"x")
    assert server.receive(wire(wrong_id, ALICE), 1.0) == DROP_WRONG_STREAM_ID
    assert server.state is StreamState.ESTABLISHED and events(server) == []


# --- choke ------------------------------------------------------------------------------------


def test_a_full_receive_buffer_chokes_the_sender_and_reading_unchokes_it() -> None:
    config = StreamConfig(receive_buffer_bytes=16 * 1024 + 4096 * 0, max_window=64)
    client, server = handshake(config)
    client.send(bytes(64 * 1024))
    now = 1.0
    dropped: list[str | None] = []
    for _ in range(10):
        out = client.packets_to_send(now)
        dropped += deliver(out, ALICE, server, now + 0.1)
        server.handle_timer(now + 0.3)
        deliver(server.packets_to_send(now + 0.3), BOB, client, now + 0.4)
        now += 0.5
        assert server.receive_buffered_bytes <= config.receive_buffer_bytes
    assert DROP_BUFFER_FULL in dropped
    assert server.choking_peer and client.choked_by_peer
    assert client.packets_to_send(now) == []  # nothing new while choked
    readable = server.read()
    assert len(readable) <= config.receive_buffer_bytes
    [unchoke] = server.packets_to_send(now)
    assert unchoke.delay_requested_ms == 0 and not server.choking_peer
    deliver([unchoke], BOB, client, now + 0.1)
    assert not client.choked_by_peer
    assert client.packets_to_send(now + 0.1)  # sending again


def test_a_buffer_full_only_behind_a_gap_unchokes_once_the_ready_data_is_read() -> None:
    """The in-order packet is dropped while the application has not read (buffer full),
    later packets fill the rest out of order; once the application has read everything, the
    buffer is still nearly full, but only the peer's retransmission of the gap can free it:
    the receiver unchokes instead of waiting for the peer's next probe (seen as a 20 s
    stall of a 1 MiB transfer in tests/test_dataplane.py)."""
    config = StreamConfig(receive_buffer_bytes=8 * 1812 + 4096, initial_window=64, max_window=64)
    client, server = handshake(config)
    client.send(bytes(1812 * 40))
    packets = client.packets_to_send(1.0)
    # The first 10 packets fill the buffer in order, unread.
    assert deliver(packets[:10], ALICE, server, 1.1) == [None] * 10
    # The 11th is in order but there is no room: dropped, and the receiver chokes.
    assert deliver(packets[10:11], ALICE, server, 1.1) == [DROP_BUFFER_FULL]
    assert server.choking_peer
    server.read()  # the application reads what is ready ...
    # ... and the buffer is roomy again: unchoked as before.
    assert not server.choking_peer
    # Now out-of-order packets fill it behind the gap at 10 until the receiver chokes.
    drops = deliver(packets[11:], ALICE, server, 1.2)
    assert DROP_BUFFER_FULL in drops and server.choking_peer
    assert server.readable_bytes == 0 and server.receive_buffered_bytes > 0
    server.read()  # nothing to read, everything waits behind the gap
    assert not server.choking_peer
    [unchoke] = server.packets_to_send(1.3)
    assert unchoke.delay_requested_ms == 0


def test_a_choked_sender_probes_and_gives_up_only_if_the_peer_stays_silent() -> None:
    config = StreamConfig(max_resends=2, idle_timeout=10_000, keepalive_interval=5_000)
    client, _ = handshake(config)
    choke = StreamPacket.make(C_ID, S_ID, 0, ack_through=0, delay_requested_ms=61000)
    client.receive(wire(choke, BOB), 1.0)
    client.send(b"queued")
    assert client.choked_by_peer and client.packets_to_send(1.0) == []
    probes = 0
    now = 1.0
    while not client.finished:
        deadline = client.timer_at()
        assert deadline is not None
        now = deadline
        client.handle_timer(now)
        for packet in client.packets_to_send(now):
            if packet.payload == b"queued":
                probes += 1
                if probes == 2:  # the peer answers this probe, still choked
                    client.receive(wire(choke, BOB), now + 0.5)
    assert probes == 2 + config.max_resends + 1
    assert events(client)[-1] == StreamReset(C_ID, "no answer while choked", False)


# --- close -------------------------------------------------------------------------------------


def test_half_close_by_the_client_then_the_server() -> None:
    client, server = handshake()
    client.send(b"request")
    client.close()
    now = pump(client, ALICE, server, BOB, 1.0)
    assert server.read() == b"request"
    assert [type(e) for e in events(server)] == [DataReadable, PeerClosed]
    assert server.peer_closed and not client.finished and not server.finished
    # The server still sends after the client's EOF.
    server.send(b"response" * 1000)
    now = pump(client, ALICE, server, BOB, now)
    assert client.read() == b"response" * 1000
    server.close()
    now = pump(client, ALICE, server, BOB, now)
    assert [type(e) for e in events(client)] == [DataReadable, PeerClosed, StreamClosed]
    assert StreamClosed(S_ID) in events(server)
    # The server closed last, its CLOSE acked the client's: no TIME-WAIT needed.
    assert server.state is StreamState.CLOSED
    # The client closed first: it lingers to re-ack a retransmitted CLOSE.
    assert client.state is StreamState.TIME_WAIT
    assert client.timer_at() == pytest.approx(now + CONFIG.time_wait, abs=1.0)


def test_close_goes_alone_once_everything_before_it_is_acked() -> None:
    """As i2pd sends it: an i2pd 2.45.1 client given CLOSE while its application still
    reads passes on at most one more buffer (SAM.cpp 936-949), so CLOSE waits for the acks."""
    client, server = handshake()
    client.send(bytes(1812 * 3))
    client.close()
    packets = client.packets_to_send(1.0)
    assert [p.sequence for p in packets] == [1, 2, 3]
    assert not any(p.has(sp.CLOSE) for p in packets)
    # The peer NACKs packet 2: no CLOSE while anything before it is unacked.
    deliver([StreamPacket(C_ID, S_ID, 0, 3, (2,))], BOB, client, 1.1)
    assert not any(p.has(sp.CLOSE) for p in client.packets_to_send(1.1))
    deliver([StreamPacket(C_ID, S_ID, 0, 3, ())], BOB, client, 1.2)
    [close] = client.packets_to_send(1.2)
    assert close.has(sp.CLOSE) and close.has(sp.SIGNATURE_INCLUDED)
    assert close.sequence == 4 and close.payload == b"" and close.delay_requested_ms == 0
    assert not client.finished
    deliver([close], ALICE, server, 1.3)
    server.close()
    pump(client, ALICE, server, BOB, 1.4)
    assert StreamClosed(C_ID) in events(client)


def test_the_peers_close_is_acked_at_once() -> None:
    client, server = handshake()
    server.close()
    [close] = server.packets_to_send(1.0)
    deliver([close], BOB, client, 1.1)
    [ack] = client.packets_to_send(1.1)
    assert ack.ack_through == close.sequence
    assert PeerClosed(C_ID) in events(client)


def test_unread_data_keeps_a_closed_stream_open_until_read() -> None:
    client, server = handshake()
    client.send(b"last words")
    client.close()
    server.close()
    pump(client, ALICE, server, BOB, 1.0)
    assert StreamClosed(S_ID) not in events(server)
    assert server.read() == b"last words"
    assert StreamClosed(S_ID) in events(server)


def test_send_after_close_and_on_a_full_buffer() -> None:
    config = StreamConfig(send_buffer_bytes=4000)
    client, _ = handshake(config)
    assert client.send(bytes(10_000)) == 4000
    assert client.send(b"x") == 0
    client.close()
    with pytest.raises(StreamClosedError):
        client.send(b"x")


def test_send_buffer_free_is_raised_once_half_the_buffer_is_free() -> None:
    config = StreamConfig(send_buffer_bytes=8000)
    client, server = handshake(config)
    assert client.send(bytes(10_000)) == 8000
    pump(client, ALICE, server, BOB, 1.0)
    assert events(client) == [SendBufferFree(C_ID)]
    assert client.send_buffer_free == 8000


# --- timeouts ------------------------------------------------------------------------------


def test_a_half_open_stream_ends_after_the_handshake_timeout() -> None:
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    now = 0.0
    while not server.finished:
        deadline = server.timer_at()
        assert deadline is not None and deadline >= now
        now = deadline
        server.handle_timer(now)
        server.packets_to_send(now)
    assert now == CONFIG.handshake_timeout
    assert events(server)[-1] == StreamReset(S_ID, "handshake timeout", False)
    assert server.timer_at() is None


def test_an_idle_stream_sends_keepalives_and_a_silent_peer_ends_it() -> None:
    client, server = handshake()
    # A live peer acks the keepalive: nothing ends.
    deadline = client.timer_at()
    assert deadline is not None
    assert deadline == pytest.approx(0.4 + CONFIG.keepalive_interval)  # last heard at 0.4
    client.handle_timer(deadline)
    [keepalive] = client.packets_to_send(deadline)
    assert keepalive.sequence > 0 and keepalive.payload == b"" and not keepalive.is_plain_ack
    deliver([keepalive], ALICE, server, deadline + 0.5)
    server.handle_timer(deadline + 0.7)
    deliver(server.packets_to_send(deadline + 0.7), BOB, client, deadline + 1.0)
    assert client.in_flight == 0
    # Now the peer vanishes: the stream ends by the idle timeout at the latest.
    last_heard = deadline + 1.0
    now = last_heard
    while not client.finished:
        deadline = client.timer_at()
        assert deadline is not None and deadline > now - 1e-9
        now = deadline
        client.handle_timer(now)
        client.packets_to_send(now)
    assert now <= last_heard + CONFIG.idle_timeout
    reset = events(client)[-1]
    assert isinstance(reset, StreamReset) and not reset.by_peer
    assert client.send_buffered_bytes == 0 and client.receive_buffered_bytes == 0
    assert client.timer_at() is None


def test_time_wait_reacks_a_retransmitted_close_then_ends() -> None:
    client, server = handshake()
    client.close()
    now = pump(client, ALICE, server, BOB, 1.0)
    server.close()
    [close] = server.packets_to_send(now)
    deliver([close], BOB, client, now + 0.1)
    client.packets_to_send(now + 0.1)  # the ack, lost
    assert client.state is StreamState.TIME_WAIT
    assert client.receive(wire(close, BOB), now + 5) is None
    [ack] = client.packets_to_send(now + 5)
    assert ack.is_plain_ack and ack.ack_through == close.sequence
    assert StreamClosed(C_ID) in events(client)  # raised when TIME-WAIT began
    deadline = client.timer_at()
    assert deadline is not None
    client.handle_timer(deadline)
    assert client.finished and client.timer_at() is None
    assert events(client) == []  # ending TIME-WAIT is no news


def test_a_server_sends_nothing_after_its_syn_until_the_syn_is_acked() -> None:
    """i2pd clients end a stream whose SYN comes more than 200 ms after a later packet."""
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    server.send(bytes(20_000))
    [answer] = server.packets_to_send(0.0)
    assert answer.is_syn and len(answer.payload) == 1812
    assert server.packets_to_send(0.5) == []
    deliver([answer], BOB, client, 1.0)
    client.handle_timer(1.2)
    deliver(client.packets_to_send(1.2), ALICE, server, 1.5)
    assert len(server.packets_to_send(1.5)) > 1


def test_a_nack_is_reordering_until_a_quarter_round_trip_late_and_a_spurious_resend_is_undone(
) -> None:  # fmt: skip
    client, _ = handshake()
    assert client.srtt == pytest.approx(0.4)  # our SYN at 0.0, its answer at 0.4
    client.send(bytes(1812 * 4))
    client.packets_to_send(1.0)
    nack = wire(StreamPacket(C_ID, S_ID, 0, 4, (2,)), BOB)
    client.receive(nack, 1.40)
    client.receive(nack, 1.45)  # NACKed twice, but only 0.45 s old: < 1.25 x 0.4
    assert client.packets_to_send(1.45) == []
    window = client.window
    client.receive(nack, 1.6)
    [again] = client.packets_to_send(1.6)
    assert again.sequence == 2 and client.window == window // 2
    # The original arrives right after: acked 50 ms after the resend, it was never lost.
    client.receive(wire(StreamPacket(C_ID, S_ID, 0, 4), BOB), 1.65)
    assert client.window >= window


def test_a_server_reset_before_its_syn_is_its_syn() -> None:
    """A refusal before our SYN went out (the backend refused at once) is SYN|RESET at
    sequence 0: i2pd 2.45.1 reads a sequence-0 packet without SYN as a plain ack and would
    ignore the RESET, leaving the client to time out."""
    client = Connection.connect(CONFIG, ALICE, BOB.destination, C_ID, 0.0)
    [syn] = client.packets_to_send(0.0)
    server = Connection.accept(CONFIG, BOB, wire(syn, ALICE), S_ID, 0.0)
    server.reset("backend refused")
    [refusal] = server.packets_to_send(0.01)
    assert refusal.has(sp.SYNCHRONIZE) and refusal.has(sp.RESET)
    assert refusal.sequence == 0 and refusal.has(sp.SIGNATURE_INCLUDED)
    assert refusal.from_destination == BOB.destination
    assert wire(refusal, BOB).verify(BOB.destination)
    deliver([refusal], BOB, client, 0.2)
    assert client.finished
    [reset] = [e for e in events(client) if isinstance(e, StreamReset)]
    assert reset.by_peer
