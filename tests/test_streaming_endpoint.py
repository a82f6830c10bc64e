"""The Endpoint: two of them (client and server, each with its own keys) talking through the
in-memory network of `streamnet` on a virtual clock. Transfers, half-close, resets, limits,
floods, choking, vanishing peers, pings, unknown streams, and what is counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.streaming import (
    PongReceived,
    StreamAccepted,
    StreamConfig,
    StreamReset,
)
from i2p_multihome.streaming.endpoint import (
    MAX_QUEUED_NUDGES,
    NUDGE_INTERVAL_S,
    NUDGES_PER_FLUSH,
)
from i2p_multihome.wire import streaming as sp
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.messages import PROTOCOL_STREAMING
from i2p_multihome.wire.streaming import StreamPacket
from seeded import seeded_random
from sigtypes import DsaSigner, EcdsaSigner
from streamnet import Host, Link, Network
from test_wire_fuzz import mutations

MIB = bytes(range(256)) * 4096


def finished(net: Network) -> bool:
    streams = [log for host in net.hosts.values() for log in host.streams.values()]
    return bool(streams) and all(log.finished is not None for log in streams)


def only_stream(host: Host) -> int:
    [stream_id] = host.streams
    return stream_id


def transfer(net: Network, request: bytes, response: bytes, *, limit: float = 3600.0
             ) -> tuple[Host, Host]:  # fmt: skip
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply = response
    client.connect(server, request)
    net.run(lambda: finished(net), limit=limit)
    return client, server


def assert_clean(host: Host) -> None:
    """Nothing left: no streams, no timers, no queued replies, no held packets."""
    assert host.endpoint.stream_ids == []
    assert host.endpoint.timer_at() is None
    assert host.endpoint.pending_replies == 0 and host.endpoint.early_packets == 0
    assert host.endpoint.active_streams == host.endpoint.half_open_streams == 0


@pytest.fixture
def net() -> Network:
    network = Network(seed=7, framed=True)
    network.host("server")
    network.host("client")
    return network


# --- transfers -------------------------------------------------------------------------------


def test_handshake_through_endpoints_reports_the_path_and_swaps_ports(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    stream_id = client.endpoint.connect(server.destination, via="r1", now=net.now,
                                        remote_port=80, local_port=5555)  # fmt: skip
    [syn] = client.endpoint.packets_to_send(net.now)
    assert syn.via == "r1" and syn.destination == server.destination
    assert syn.stream_id == stream_id
    assert (syn.payload.protocol, syn.payload.from_port, syn.payload.to_port) == (6, 5555, 80)
    server.endpoint.receive(syn.payload.data, 5555, 80, "router-a", net.now)
    [accepted] = [e for e in iter(server.endpoint.next_event, None)]
    assert isinstance(accepted, StreamAccepted)
    assert (accepted.via, accepted.local_port, accepted.remote_port) == ("router-a", 80, 5555)
    assert accepted.remote == client.destination
    assert accepted.remote_hash == client.destination.hash
    server.endpoint.send(accepted.stream_id, b"hello")
    [answer] = server.endpoint.packets_to_send(net.now)
    assert answer.via == "router-a" and answer.destination == client.destination
    assert answer.payload.protocol == PROTOCOL_STREAMING
    assert (answer.payload.from_port, answer.payload.to_port) == (80, 5555)
    assert answer.packet.is_syn and answer.packet.payload == b"hello"


def test_one_mib_each_way_through_gzip_framing(net: Network) -> None:
    client, server = transfer(net, MIB, MIB[::-1])
    assert bytes(server.streams[only_stream(server)].received) == MIB
    assert bytes(client.streams[only_stream(client)].received) == MIB[::-1]
    assert [log.finished for log in (*client.streams.values(), *server.streams.values())] == [
        "closed", "closed",
    ]  # fmt: skip
    net.run(limit=600)  # TIME-WAIT ends
    assert_clean(client)
    assert_clean(server)
    assert server.endpoint.counters() == client.endpoint.counters() == {}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_mib_each_way_with_loss_duplication_and_reordering(seed: int) -> None:
    net = Network(seed=seed, link=Link(loss=0.08, duplicate=0.05, delay=(0.1, 1.2)))
    net.host("server")
    net.host("client")
    client, server = transfer(net, MIB, MIB[:500_000])
    assert bytes(server.streams[only_stream(server)].received) == MIB
    assert bytes(client.streams[only_stream(client)].received) == MIB[:500_000]
    assert all(log.finished == "closed" for log in server.streams.values())
    assert all(log.finished == "closed" for log in client.streams.values())


def test_half_close_by_the_client_then_the_server_keeps_sending(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    server.reply = b"streamed after the client's EOF" * 3000
    stream = client.connect(server, b"request")
    net.run(lambda: bool(server.streams) and server.streams[only_stream(server)].peer_closed)
    server_stream = only_stream(server)
    assert server.streams[server_stream].received == b"request"
    net.run(lambda: len(client.streams[stream].received) == len(server.reply))
    assert client.streams[stream].finished is None  # the server has not closed yet
    server.endpoint.close(server_stream)
    net.run(lambda: finished(net))
    assert client.streams[stream].received == server.reply
    assert client.streams[stream].finished == server.streams[server_stream].finished == "closed"


def test_half_close_by_the_server_then_the_client_keeps_sending(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply = b"banner"
    stream = client.connect(server, b"", close=False)
    net.run(lambda: client.streams[stream].peer_closed)
    assert client.streams[stream].received == b"banner"
    upload = b"upload after the server's EOF" * 5000
    client.streams[stream].to_send = upload
    client.streams[stream].close_after_sending = True
    net.run(lambda: finished(net))
    assert server.streams[only_stream(server)].received == upload
    assert server.streams[only_stream(server)].finished == "closed"


def test_a_dsa_sha1_client_is_served() -> None:
    """i2pd's SAM makes TRANSIENT destinations DSA_SHA1 unless told otherwise."""
    net = Network(seed=3)
    server = net.host("server")
    client = net.host("client", signer=DsaSigner.generate(b"sam client"))
    assert client.destination.sig_type == 0
    client_out, server_out = transfer(net, b"x" * 10_000, b"y" * 10_000)
    assert server_out.streams[only_stream(server_out)].received == b"x" * 10_000
    assert client_out.streams[only_stream(client_out)].received == b"y" * 10_000
    assert server.endpoint.counters() == {}


@pytest.mark.parametrize("sig_type", [1, 2, 3])
def test_ecdsa_clients_are_served(sig_type: int) -> None:
    net = Network(seed=4)
    server = net.host("server")
    net.host("client", signer=EcdsaSigner.generate(sig_type, b"ec client"))
    transfer(net, b"ping" * 100, b"pong" * 100)
    assert server.streams[only_stream(server)].received == b"ping" * 100


# --- resets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("established", [True, False])
def test_reset_by_the_application_reaches_the_peer_signed(net: Network, established: bool
                                                         ) -> None:  # fmt: skip
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    stream = client.connect(server, b"hello", close=False)
    net.run(lambda: bool(server.streams) and bool(server.streams[only_stream(server)].received))
    if established:
        net.run(lambda: client.streams[stream].established)
    else:
        # Reset before the server's SYN reached us: our RESET carries sendStreamId 0.
        assert not client.streams[stream].established
    server_stream = only_stream(server)
    client.endpoint.reset(stream)
    net.run(lambda: server.streams[server_stream].finished is not None)
    assert server.streams[server_stream].finished == "reset: reset by peer"
    assert client.streams[stream].finished == "reset: reset by application"
    net.run(limit=60)
    assert_clean(server)
    assert_clean(client)


def test_a_forged_reset_is_ignored_and_counted(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    stream = client.connect(server, b"hello", close=False)
    net.run(lambda: bool(server.streams) and bool(server.streams[only_stream(server)].received))
    server_stream = only_stream(server)
    mallory = DestinationKeys.generate(seeded_random(b"mallory"))
    forged = StreamPacket.make(
        server_stream, stream, 2, flags=sp.RESET | sp.SIGNATURE_INCLUDED
    ).signed(mallory.sign, 64)
    net.inject(server, forged.encode())
    unsigned = StreamPacket(server_stream, stream, 2, flags=sp.RESET)
    net.inject(server, unsigned.encode())
    net.step()
    assert server.endpoint.counters() == {"bad_signature": 2}
    assert server.streams[server_stream].finished is None
    # The stream still works.
    client.streams[stream].to_send = b"hello" + b"still here"  # `sent` counts from the start
    client.streams[stream].close_after_sending = True
    net.run(lambda: server.streams[server_stream].peer_closed)
    assert server.streams[server_stream].received == b"hellostill here"


# --- what a server refuses ------------------------------------------------------------------


def client_syn(keys: DestinationKeys, target: bytes, stream_id: int = 0x1234,
               signer: DestinationKeys | None = None) -> bytes:  # fmt: skip
    packet = StreamPacket.make(
        0, stream_id, 0, nacks=sp.nacks_from_hash(target),
        flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.NO_ACK,
        from_destination=keys.destination, max_packet_size=1812, payload=b"GET /",
    )  # fmt: skip
    return packet.signed((signer or keys).sign, 64).encode()


def test_bad_syns_are_dropped_and_counted(net: Network) -> None:
    server = net.hosts["server"]
    alice = DestinationKeys.generate(seeded_random(b"alice"))
    mallory = DestinationKeys.generate(seeded_random(b"mallory"))
    target = server.destination.hash
    net.inject(server, client_syn(alice, target, signer=mallory))  # forged signature
    net.inject(server, client_syn(alice, bytes(32)))  # meant for another destination
    unsigned = StreamPacket.make(0, 9, 0, flags=sp.SYNCHRONIZE, from_destination=alice.destination)
    net.inject(server, unsigned.encode())
    no_from = StreamPacket.make(0, 9, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED)
    net.inject(server, no_from.signed(alice.sign, 64).encode())
    net.inject(server, client_syn(alice, target, stream_id=0))  # no stream id
    net.inject(server, b"\x00" * 10)  # malformed
    net.step()
    assert server.endpoint.counters() == {
        "bad_signature": 1,
        "replay_hash_mismatch": 1,
        "unsigned": 1,
        "syn_without_from": 1,
        "malformed": 2,
    }
    assert server.endpoint.stream_ids == [] and server.events == []
    assert not [out for name, out in net.sent if name == "server"]  # nothing answered


def test_a_syn_without_replay_hash_is_accepted_as_i2pd_2_45_sends_it(net: Network) -> None:
    server = net.hosts["server"]
    alice = DestinationKeys.generate(seeded_random(b"alice"))
    packet = StreamPacket.make(
        0, 0x77, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED | sp.NO_ACK,
        from_destination=alice.destination, max_packet_size=1812,
    ).signed(alice.sign, 64)  # fmt: skip
    net.inject(server, packet.encode())
    net.step()
    assert [type(e) for e in server.events] == [StreamAccepted]


def test_stream_limits_answer_with_a_signed_reset_and_count() -> None:
    config = StreamConfig(max_streams=3, max_streams_per_remote=2)
    net = Network(seed=5)
    server = net.host("server", config)
    server.reply_close = False
    alice, bob = net.host("alice"), net.host("bob")
    for host in (alice, alice, alice):
        host.connect(server, b"hi", close=False)
    net.run(lambda: all(log.finished or log.established for log in alice.streams.values()),
            limit=60)  # fmt: skip
    assert server.endpoint.counters() == {"per_remote_limit": 1}
    assert sorted(log.finished or "" for log in alice.streams.values()) == [
        "", "", "reset: reset by peer",
    ]  # fmt: skip
    bob.connect(server, b"hi", close=False)
    bob.connect(server, b"hi", close=False)
    net.run(lambda: all(log.finished or log.established for log in bob.streams.values()),
            limit=60)  # fmt: skip
    assert server.endpoint.counters() == {"per_remote_limit": 1, "stream_limit": 1}
    assert server.endpoint.active_streams == 3
    refusals = [out.packet for name, out in net.sent if name == "server" and out.stream_id is None]
    assert len(refusals) == 2
    assert all(p.has(sp.RESET) and p.has(sp.SIGNATURE_INCLUDED) for p in refusals)
    assert all(p.verify(server.destination) for p in refusals)


def test_a_syn_flood_is_bounded_by_the_half_open_limit_and_the_rate() -> None:
    config = StreamConfig(max_half_open=8, new_stream_burst=20, new_stream_rate=5.0)
    net = Network(seed=6)
    server = net.host("server", config)
    target = server.destination.hash
    floods = [DestinationKeys.generate(seeded_random(b"flood %d" % i)) for i in range(40)]
    for i, keys in enumerate(floods):
        net.inject(server, client_syn(keys, target, stream_id=i + 1))
    net.step()
    counters = server.endpoint.counters()
    assert server.endpoint.half_open_streams == 8 == server.endpoint.active_streams
    assert counters == {"half_open_limit": 12, "rate_limited": 20}
    # A flood of bad signatures costs at most the rate in verifications.
    mallory = DestinationKeys.generate(seeded_random(b"mallory"))
    for i in range(100):
        net.inject(server, client_syn(floods[i % 40], target, stream_id=1000 + i, signer=mallory))
    net.step()
    assert server.endpoint.counters()["rate_limited"] == 20 + 100
    # The half-open streams time out; nothing stays.
    net.run(limit=config.handshake_timeout + 5)
    assert server.endpoint.active_streams == 0
    assert [e.reason for e in server.events if isinstance(e, StreamReset)] == [
        "handshake timeout"
    ] * 8
    assert_clean(server)


def test_unknown_streams_are_dropped_silently_and_counted(net: Network) -> None:
    server = net.hosts["server"]
    net.inject(server, StreamPacket(0xDEAD, 0xBEEF, 3, 1, payload=b"x").encode())
    net.inject(server, StreamPacket(0xDEAD, 0xBEEF, 0, 1, flags=sp.RESET).encode())
    close = StreamPacket.make(0xDEAD, 0xBEEF, 4, flags=sp.CLOSE | sp.SIGNATURE_INCLUDED)
    net.inject(server, close.signed(server.keys.sign, 64).encode())
    net.step()
    assert server.endpoint.counters() == {"unknown_stream": 3}
    assert not net.sent


# --- early packets ---------------------------------------------------------------------------


def test_packets_before_the_syn_are_held_then_delivered_in_order(net: Network) -> None:
    """Java clients send up to their window before our SYN reaches them; the network can
    deliver those before their SYN."""
    server, client = net.hosts["server"], net.hosts["client"]
    stream = client.endpoint.connect(server.destination, via="server", now=net.now)
    client.endpoint.send(stream, b"A" * 1730 * 3)
    syn, *early = client.endpoint.packets_to_send(net.now)
    assert len(early) == 2 and all(o.packet.send_stream_id == 0 for o in early)
    for out in reversed(early):
        server.endpoint.receive(out.payload.data, 0, 0, "r", net.now)
    assert server.endpoint.early_packets == 2 and server.endpoint.stream_ids == []
    server.endpoint.receive(syn.payload.data, 0, 0, "r", net.now + 1)
    [accepted] = [e for e in iter(server.endpoint.next_event, None) if
                  isinstance(e, StreamAccepted)]  # fmt: skip
    assert server.endpoint.read(accepted.stream_id) == b"A" * 1730 * 3
    assert server.endpoint.early_packets == 0


def test_early_packets_are_bounded_and_expire() -> None:
    config = StreamConfig(early_packets=4, early_packet_lifetime=10.0)
    net = Network(seed=8)
    server = net.host("server", config)
    for their_id in range(1, 8):
        net.inject(server, StreamPacket(0, their_id, 1, payload=b"early").encode())
    net.step()
    assert server.endpoint.early_packets == 4
    assert server.endpoint.counters() == {"early_buffer_full": 3}
    net.run(limit=20)
    assert server.endpoint.counters()["early_packet_expired"] == 4
    assert_clean(server)


# --- choke ---------------------------------------------------------------------------------


def test_a_reader_that_stops_chokes_the_sender_and_memory_stays_bounded() -> None:
    config = StreamConfig(receive_buffer_bytes=64 * 1024)
    net = Network(seed=9, link=Link(delay=(0.05, 0.3)))
    server = net.host("server", config)
    client = net.host("client")
    server.read_enabled = False
    stream = client.connect(server, MIB)
    net.run(lambda: client.endpoint.stream(stream).choked_by_peer, limit=600)
    server_stream = only_stream(server)
    held = server.endpoint.stream(server_stream).receive_buffered_bytes
    assert 0 < held <= config.receive_buffer_bytes
    # Nothing moves while the reader sleeps, however long: only the sender's occasional
    # probes, never a storm of resends against the choke.
    before = len(net.sent)
    net.run(lambda: net.now > 1000 + 300, limit=400)
    probes = [out for name, out in net.sent[before:] if name == "client" and out.packet.payload]
    assert len(probes) <= 20
    assert server.endpoint.stream(server_stream).receive_buffered_bytes <= 64 * 1024
    assert client.streams[stream].finished is None
    server.streams[server_stream].read_enabled = True
    net.run(lambda: finished(net), limit=3600)
    assert server.streams[server_stream].received == MIB
    assert server.streams[server_stream].finished == "closed"


# --- vanishing peers, giving up ----------------------------------------------------------------


def test_a_vanished_client_leaves_nothing_behind(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    server.reply = b"x" * 50_000
    client.connect(server, b"GET /", close=False)
    net.run(lambda: bool(server.streams) and server.streams[only_stream(server)].established)
    assert server.streams[only_stream(server)].sent > 0
    # The client's router dies: nothing reaches it or comes from it any more.
    net.link.blackhole = lambda packet: True
    start = net.now
    net.run(lambda: server.streams[only_stream(server)].finished is not None, limit=400)
    assert net.now - start <= server.endpoint.config.idle_timeout
    assert server.streams[only_stream(server)].finished in (
        "reset: retransmission limit", "reset: idle timeout",
    )  # fmt: skip
    assert_clean(server)


def test_retransmission_gives_up_after_max_resends() -> None:
    config = StreamConfig(max_resends=4)
    net = Network(seed=10)
    server = net.host("server")
    client = net.host("client", config)
    stream = client.connect(server, b"", close=False)
    net.run(lambda: client.streams[stream].established)
    # From now on the client's data never arrives; the server's acks would.
    net.link.blackhole = lambda packet: packet.sequence > 0 and bool(packet.payload)
    client.streams[stream].to_send = b"lost" * 100
    net.run(lambda: client.streams[stream].finished is not None, limit=600)
    assert client.streams[stream].finished == "reset: retransmission limit"
    data = [out.packet for name, out in net.sent if name == "client" and out.packet.payload
            and out.packet.sequence == 1]  # fmt: skip
    assert len(data) == 1 + config.max_resends


def test_a_close_lost_before_the_peer_closed_is_sent_until_acked() -> None:
    """We close first and our CLOSE is lost three times; the peer's own CLOSE then arrives
    without acking ours. Giving up now would leave the peer waiting into an idle-timeout
    RESET: only sends after the peer's CLOSE count toward giving up."""
    net = Network(seed=11)
    server = net.host("server")
    client = net.host("client")
    server.reply_after_eof = False
    server.reply_close = False
    stream = client.connect(server, b"request")
    client_closes: list[float] = []

    def lose_first_three_client_closes(packet: StreamPacket) -> bool:
        if packet.flags & sp.CLOSE and packet.receive_stream_id == stream:
            client_closes.append(net.now)
            return len(client_closes) <= 3
        return False

    net.link.blackhole = lose_first_three_client_closes
    net.run(lambda: len(client_closes) >= 3, limit=300)
    [server_stream] = server.streams
    server.endpoint.close(server_stream)
    server.streams[server_stream].closed_sent = True
    net.run(lambda: all(log.finished for h in (server, client) for log in h.streams.values()),
            limit=300)  # fmt: skip
    assert client.streams[stream].finished == server.streams[server_stream].finished == "closed"
    assert len(client_closes) >= 4


# --- via ------------------------------------------------------------------------------------


def test_replies_follow_the_router_the_latest_packet_came_through(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    stream = client.connect(server, b"one", close=False)
    net.run(lambda: bool(server.streams) and bool(server.streams[only_stream(server)].received))
    server_stream = only_stream(server)
    assert server.endpoint.stream(server_stream).via == "client"
    client.endpoint.send(stream, b"two")
    [out] = client.endpoint.packets_to_send(net.now)
    server.endpoint.receive(out.payload.data, 0, 0, "router-b", net.now + 0.5)
    server.endpoint.send(server_stream, b"reply")
    replies = server.endpoint.packets_to_send(net.now + 0.5)
    assert replies and {r.via for r in replies} == {"router-b"}


def test_every_stream_of_a_client_answers_through_its_latest_router(net: Network) -> None:
    """The client's end-to-end session lives in one router: a packet of any of its streams
    through router-b moves all its streams' answers there, and another client is untouched."""
    server, client, other = net.hosts["server"], net.hosts["client"], net.host("other")
    server.reply_close = False
    first = client.connect(server, b"one", close=False)
    client.connect(server, b"two", close=False)
    other.connect(server, b"three", close=False)
    net.run(lambda: len(server.streams) == 3 and all(s.received for s in server.streams.values()))
    client.endpoint.send(first, b"more")
    [out] = client.endpoint.packets_to_send(net.now)
    server.endpoint.receive(out.payload.data, 0, 0, "router-b", net.now + 0.5)
    for sid in server.streams:
        server.endpoint.send(sid, b"reply")
    replies = server.endpoint.packets_to_send(net.now + 0.5)
    by_client = {(r.destination.hash, r.via) for r in replies}
    assert by_client == {(client.destination.hash, "router-b"), (other.destination.hash, "other")}
    # A verified SYN refused over the per-client limit moves the client's route too.
    assert server.endpoint.config.max_streams_per_remote == 32
    for _ in range(31):
        client.connect(server, b"", close=False)
    syns = [out.payload.data for out in client.endpoint.packets_to_send(net.now)]
    for data in syns[:-1]:
        server.endpoint.receive(data, 0, 0, "router-c", net.now + 1)
    server.endpoint.receive(syns[-1], 0, 0, "router-d", net.now + 1)
    sent = server.endpoint.packets_to_send(net.now + 1)
    [refusal] = [r for r in sent if r.packet.has(sp.RESET)]
    assert refusal.via == "router-d"
    assert server.endpoint.routes()[client.destination.hash] == "router-d"


def test_a_client_route_is_forgotten_with_its_last_stream(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    client.connect(server, b"one")
    net.run(lambda: bool(server.streams) and server.streams[only_stream(server)].finished)
    net.run(limit=600)
    assert server.endpoint.stream_ids == []
    assert server.endpoint.routes() == {}


# --- moving off a lost router -----------------------------------------------------------------


def lost_reply(net: Network, *, established: bool = True) -> tuple[Host, Host, int, float]:
    """The client's stream is open (`established`: both ways, else our SYN is still to go)
    and the server's reply is in flight through the client's router ("client"), which dies
    with it. Returns server, client, the server's stream and when the route was first heard."""
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply_close = False
    server.reply = b"hello, " if established else b""
    client.connect(server, b"one", close=False)
    net.run(lambda: bool(server.streams) and bool(server.streams[only_stream(server)].received))
    heard_at = net.now  # the server heard the client's SYN at most this late
    sid = only_stream(server)
    if established:
        net.run(
            lambda: server.streams[sid].established and not server.endpoint.stream(sid).in_flight
        )
    server.endpoint.send(sid, b"reply")
    lost = server.endpoint.packets_to_send(net.now)
    assert lost and {out.via for out in lost} == {"client"}
    return server, client, sid, heard_at


@pytest.mark.parametrize("established", [True, False])
def test_a_young_session_is_held_until_it_can_be_replaced_then_everything_goes_at_once(
    net: Network, established: bool
) -> None:
    server, client, sid, heard_at = lost_reply(net, established=established)
    other = net.host("other")
    other.connect(server, b"two", close=False)
    net.run(lambda: len(server.streams) == 2)
    moved_at = net.now + 1
    moved = server.endpoint.move_remotes({"client"}, lambda remote: "router-b", moved_at)
    assert moved == 1
    routes = server.endpoint.routes()
    assert routes[client.destination.hash] == "router-b"
    assert routes[other.destination.hash] == "other"  # not on the lost router: untouched
    assert server.endpoint.stream(sid).via == "router-b"
    # Until the client's session at the dead router is 2 minutes old, a new router's session
    # would be refused: nothing is sent, the connection's own resends included.
    release = heard_at + 125.0
    now = moved_at
    server.endpoint.send(sid, b" and more")  # the backend goes on writing meanwhile
    assert [o for o in server.endpoint.packets_to_send(now) if o.stream_id == sid] == []
    # Established, new data goes out and is dropped on the way; otherwise it waits for
    # our SYN to be acked.
    assert (server.endpoint.drops["held_while_client_moves"] >= 1) is established
    while (deadline := server.endpoint.timer_at()) is not None and deadline < release:
        now = deadline
        server.endpoint.handle_timer(now)
        assert [o for o in server.endpoint.packets_to_send(now) if o.stream_id == sid] == []
    assert server.endpoint.timer_at() is not None
    now = max(now, release)
    server.endpoint.handle_timer(now)
    resent = [o for o in server.endpoint.packets_to_send(now) if o.stream_id == sid]
    assert resent and {o.via for o in resent} == {"router-b"}
    assert resent[0].packet.payload == b"reply"
    # The stream is whole: the client gets the reply through the new router.
    net.now = now
    for out in resent:
        client.endpoint.receive(out.payload.data, 0, 0, out.via, now)
    expected = (b"hello, " if established else b"") + b"reply and more"
    net.run(lambda: bytes(client.streams[only_stream(client)].received) == expected)


def test_an_old_session_moves_at_once(net: Network) -> None:
    server, _, sid, heard_at = lost_reply(net)
    later = heard_at + 200.0
    assert server.endpoint.move_remotes({"client"}, lambda remote: "router-b", later) == 1
    resent = server.endpoint.packets_to_send(later)
    assert [(o.via, o.packet.payload) for o in resent if o.stream_id == sid] == [
        ("router-b", b"reply")
    ]
    # Not counted as a resend: the route lost it, not the peer.
    assert server.endpoint.stream(sid).rto < 45.0


def test_a_held_client_heard_through_a_working_router_is_answered_there_at_once(
    net: Network,
) -> None:
    server, client, sid, _ = lost_reply(net)
    now = net.now + 1
    server.endpoint.move_remotes({"client"}, lambda remote: "router-b", now)
    assert [o for o in server.endpoint.packets_to_send(now) if o.stream_id == sid] == []
    # The client started a session with router-c (say, a new stream): answer through it.
    client.endpoint.send(only_stream(client), b"more")
    for out in client.endpoint.packets_to_send(now):
        server.endpoint.receive(out.payload.data, 0, 0, "router-c", now + 0.5)
    sent = [o for o in server.endpoint.packets_to_send(now + 0.5) if o.stream_id == sid]
    assert sent and {o.via for o in sent} == {"router-c"}
    assert b"reply" in [o.packet.payload for o in sent]


def test_moving_clients_of_a_router_that_served_nobody_changes_nothing(net: Network) -> None:
    server, _, sid, _ = lost_reply(net)
    assert server.endpoint.move_remotes({"router-x"}, lambda remote: "router-b", net.now) == 0
    assert server.endpoint.stream(sid).via == "client"


def test_a_client_whose_streams_ended_is_pinged_through_its_new_router(net: Network) -> None:
    # Its session with the lost router outlives its streams, and it would go on sending to
    # that router's leases: the ping is the new router's message that moves it.
    server, client = net.hosts["server"], net.hosts["client"]
    client.connect(server, b"one")
    net.run(lambda: bool(server.streams) and server.streams[only_stream(server)].finished)
    heard_at = net.now
    net.run(limit=600)
    assert server.endpoint.stream_ids == [] and server.endpoint.routes() == {}
    moved_at = heard_at + 30.0
    assert server.endpoint.move_remotes({"client"}, lambda remote: "router-b", moved_at) == 1
    assert server.endpoint.packets_to_send(moved_at) == []  # held: its session is young
    release = server.endpoint.timer_at()  # 125 s after the client's SYN
    assert release is not None and moved_at < release <= heard_at + 125.0
    server.endpoint.handle_timer(release)
    assert server.endpoint.timer_at() == release  # the ping is due
    [ping] = server.endpoint.packets_to_send(release)
    assert (ping.via, ping.destination) == ("router-b", client.destination)
    assert ping.nudge and ping.packet.has(sp.ECHO) and ping.packet.verify(server.destination)
    assert server.endpoint.timer_at() is None
    net.now = release
    client.endpoint.receive(ping.payload.data, 0, 0, "router-b", release)
    [pong] = client.endpoint.packets_to_send(release)
    server.endpoint.receive(pong.payload.data, 0, 0, "router-b", release + 1)
    assert server.endpoint.nudges_answered == 1
    assert not server.endpoint.drops


def test_nudges_leave_paced_bounded_and_once_per_client(net: Network) -> None:
    server = net.hosts["server"]
    endpoint = server.endpoint
    remotes = [DestinationKeys.generate().destination for _ in range(2 * NUDGES_PER_FLUSH + 5)]
    for remote in remotes + remotes[:3]:  # the last 3 again: already waiting
        endpoint.nudge(remote, "router-b", 0.0)
    assert endpoint.timer_at() == 0.0
    first = endpoint.packets_to_send(0.0)
    assert len(first) == NUDGES_PER_FLUSH and all(out.nudge for out in first)
    assert endpoint.timer_at() == NUDGE_INTERVAL_S  # the next batch, not at once
    assert endpoint.packets_to_send(0.1) == []
    rest = endpoint.packets_to_send(NUDGE_INTERVAL_S)
    rest += endpoint.packets_to_send(2 * NUDGE_INTERVAL_S)
    assert len(first) + len(rest) == len(remotes) and endpoint.timer_at() is None
    assert len({out.destination.hash for out in first + rest}) == len(remotes)
    endpoint.nudge(remotes[0], "router-b", 1.0)  # sent before: may be nudged again
    assert endpoint.timer_at() == 1.0
    crowd = [DestinationKeys.generate().destination for _ in range(MAX_QUEUED_NUDGES + 5)]
    for remote in crowd:
        endpoint.nudge(remote, "router-b", 1.0)
    assert endpoint.drops["nudge_queue_full"] == 6


# --- pings -----------------------------------------------------------------------------------


def test_ping_is_answered_with_a_pong_echoing_up_to_32_bytes(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    ping_id = client.endpoint.ping(server.destination, "server", net.now, payload=b"p" * 40)
    net.run(lambda: bool(client.pongs), limit=10)
    assert client.pongs == [PongReceived(ping_id, b"p" * 32)]
    pongs = [out.packet for name, out in net.sent if name == "server"]
    assert len(pongs) == 1 and pongs[0].flags == sp.ECHO
    assert (pongs[0].send_stream_id, pongs[0].receive_stream_id) == (0, ping_id)
    # A pong nobody asked for is counted, not reported.
    net.inject(client, StreamPacket(0, 0x999, 0, flags=sp.ECHO).encode())
    net.step()
    assert client.endpoint.counters() == {"unexpected_pong": 1}


def test_a_forged_ping_is_not_answered(net: Network) -> None:
    server = net.hosts["server"]
    alice = DestinationKeys.generate(seeded_random(b"alice"))
    mallory = DestinationKeys.generate(seeded_random(b"mallory"))
    ping = StreamPacket.make(5, 0, 0, flags=sp.ECHO | sp.SIGNATURE_INCLUDED,
                             from_destination=alice.destination)  # fmt: skip
    net.inject(server, ping.signed(mallory.sign, 64).encode())
    net.inject(server, StreamPacket(5, 0, 0, flags=sp.ECHO).encode())
    net.step()
    assert server.endpoint.counters() == {"bad_signature": 1, "unsigned": 1}
    assert not net.sent


# --- bounds -----------------------------------------------------------------------------------


def test_events_stay_bounded_when_the_application_reads_without_popping_them(
    net: Network,
) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    stream = client.endpoint.connect(server.destination, via="server", now=net.now)
    [syn] = client.endpoint.packets_to_send(net.now)
    server.endpoint.receive(syn.payload.data, 0, 0, "r", net.now)
    [accepted] = [e for e in iter(server.endpoint.next_event, None)]
    assert isinstance(accepted, StreamAccepted)
    now = net.now
    for i in range(200):
        now += 1
        client.endpoint.send(stream, b"chunk %d" % i)
        for out in client.endpoint.packets_to_send(now):
            server.endpoint.receive(out.payload.data, 0, 0, "r", now)
        assert server.endpoint.read(accepted.stream_id).startswith(b"chunk")
        for out in server.endpoint.packets_to_send(now):
            client.endpoint.receive(out.payload.data, 0, 0, "r", now)
    queued = list(iter(server.endpoint.next_event, None))
    assert len(queued) <= 3  # one DataReadable, one StreamEstablished at most


def test_a_late_copy_of_the_syn_during_time_wait_opens_nothing(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    server.reply = b"bye"  # the server closes first, so it lingers in TIME-WAIT
    stream = client.connect(server, b"", close=False)
    net.run(lambda: client.streams[stream].peer_closed)
    client.endpoint.close(stream)
    net.run(lambda: finished(net))
    server_stream = only_stream(server)
    assert server.endpoint.stream(server_stream).state.value == "time-wait"
    [syn] = [out for name, out in net.sent if name == "client" and out.packet.is_syn]
    net.inject(server, syn.payload.data)
    net.step()
    assert sum(isinstance(e, StreamAccepted) for e in server.events) == 1
    assert server.endpoint.counters() == {}
    [ack] = [out.packet for name, out in net.sent[-1:] if name == "server"]
    assert ack.is_plain_ack and ack.send_stream_id == stream


def test_oversized_packets_are_dropped_without_choking() -> None:
    config = StreamConfig(receive_buffer_bytes=16 * 1024)
    net = Network(seed=11)
    server = net.host("server", config)
    client = net.host("client")
    server.reply_close = False
    stream = client.connect(server, b"hi", close=False)
    net.run(lambda: client.streams[stream].established)
    server_stream = only_stream(server)
    huge = StreamPacket(server_stream, stream, 50, 0, payload=bytes(16 * 1024))
    net.inject(server, huge.encode())
    alice = DestinationKeys.generate(seeded_random(b"alice"))
    big_syn = StreamPacket.make(
        0, 9, 0, flags=sp.SYNCHRONIZE | sp.SIGNATURE_INCLUDED,
        from_destination=alice.destination, payload=bytes(13 * 1024),
    ).signed(alice.sign, 64)  # fmt: skip
    net.inject(server, big_syn.encode())
    net.step()
    assert server.endpoint.counters() == {"oversized_packet": 2}
    assert not server.endpoint.stream(server_stream).choking_peer


# --- fuzzing the whole endpoint ---------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_whatever_arrives_the_endpoint_only_counts_drops(data: st.DataObject) -> None:
    """Random bytes and mutations of real packets (for a live stream, a SYN, a ping) never
    raise, and never push a stream past its bounds."""
    net = Network(seed=12)
    server = net.host("server", StreamConfig(max_half_open=4, new_stream_burst=8))
    client = net.host("client")
    server.reply_close = False
    stream = client.connect(server, b"hello", close=False)
    net.run(lambda: client.streams[stream].established)
    client.endpoint.send(stream, b"more data" * 50)
    client.endpoint.close(stream)
    client.endpoint.ping(server.destination, "server", net.now, b"ping")
    samples = [out.payload.data for _, out in net.sent]
    samples += [out.payload.data for out in client.endpoint.packets_to_send(net.now)]
    for _ in range(data.draw(st.integers(1, 8))):
        if data.draw(st.booleans()):
            packet = data.draw(mutations(data.draw(st.sampled_from(samples))))
        else:
            packet = data.draw(st.binary(max_size=300))
        server.endpoint.receive(packet, 0, 0, "fuzz", net.now)
        server.endpoint.handle_timer(net.now)
        server.endpoint.packets_to_send(net.now)
        server.check_bounds()
    for log in server.streams.values():
        log.close_after_sending = True  # the server's application is done too
    net.run(limit=3600)  # whatever happened, everything winds down
    assert server.endpoint.stream_ids == []


def test_backpressure_helpers_report_what_send_and_read_would_move(net: Network) -> None:
    server, client = net.hosts["server"], net.hosts["client"]
    config = client.endpoint.config
    stream = client.endpoint.connect(server.destination, via="server", now=net.now)
    assert client.endpoint.send_buffer_free(stream) == config.send_buffer_bytes
    assert client.endpoint.send(stream, bytes(1000)) == 1000
    assert client.endpoint.send_buffer_free(stream) == config.send_buffer_bytes - 1000
    [syn] = client.endpoint.packets_to_send(net.now)
    server.endpoint.receive(syn.payload.data, 0, 0, "r", net.now)
    [accepted] = [e for e in iter(server.endpoint.next_event, None)
                  if isinstance(e, StreamAccepted)]  # fmt: skip
    assert server.endpoint.readable_bytes(accepted.stream_id) == 1000
    assert len(server.endpoint.read(accepted.stream_id, 300)) == 300
    assert server.endpoint.readable_bytes(accepted.stream_id) == 700
    assert server.endpoint.send_buffer_free(0x1234) == server.endpoint.readable_bytes(0x1234) == 0
