"""Our server Endpoint against a model of an i2pd 2.45.1 client (tests/i2pdmodel.py), in
bytes: the conversation an HTTP client tunnel has with a multihomed server."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from i2p_multihome.streaming import (
    Endpoint,
    PeerClosed,
    StreamAccepted,
    StreamClosed,
    StreamConfig,
    StreamEvent,
)
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.streaming import CLOSE, StreamPacket
from i2pdmodel import I2pdClientStream
from seeded import seeded_random

SERVER = DestinationKeys.generate(seeded_random(b"server"))
CLIENT = DestinationKeys.generate(seeded_random(b"i2pd client"))


@dataclass
class Conversation:
    client: I2pdClientStream
    server: Endpoint
    events: list[StreamEvent] = field(default_factory=list)
    sent: list[StreamPacket] = field(default_factory=list)  # by our server
    ended_at: float = 0.0


def converse(response: bytes, *, lose_first_syn_reply: bool = False,
             client_closes_first: bool = False) -> Conversation:  # fmt: skip
    """The i2pd client sends a request; our server answers `response` and closes, or (with
    `client_closes_first`) closes 2 s after the client, which closes once it has it all."""
    rng = random.Random(0)
    talk = Conversation(
        I2pdClientStream(CLIENT, SERVER.destination, recv_id=0x2D2D2D2D),
        Endpoint(SERVER, StreamConfig(), random_bytes=seeded_random(b"ids")),
    )
    client, server = talk.client, talk.server
    client.send(b"GET / HTTP/1.1\r\nHost: x.b32.i2p\r\n\r\n")
    stream_id = None
    written = 0
    now = 0.0
    peer_closed_at: float | None = None
    for _ in range(5000):
        for packet in client.outbox:
            server.receive(packet, 0, 80, "router-a", now + rng.uniform(0.1, 0.5))
        client.outbox.clear()
        while (event := server.next_event()) is not None:
            talk.events.append(event)  # type: ignore[arg-type]
            if isinstance(event, StreamAccepted):
                stream_id = event.stream_id
            if isinstance(event, PeerClosed):
                peer_closed_at = now
        if stream_id is not None:
            server.read(stream_id)
            backend_done = peer_closed_at is not None and now >= peer_closed_at + 2.0
            if written < len(response):
                written += server.send(stream_id, response[written:])
            elif written == len(response) and (backend_done or not client_closes_first):
                server.close(stream_id)
                written += 1
        if client_closes_first and len(client.received) == len(response):
            client.close()
        for out in server.packets_to_send(now):
            talk.sent.append(out.packet)
            if lose_first_syn_reply and out.packet.is_syn and len(talk.sent) == 1:
                continue
            client.receive(out.payload.data, now)
        client.handle_timer(now)
        if any(isinstance(e, StreamClosed) for e in talk.events):
            talk.ended_at = now
            break
        deadline = server.timer_at()
        now = max(now + 0.05, min(deadline if deadline is not None else now + 1, now + 1))
        if deadline is not None and deadline <= now:
            server.handle_timer(now)
    return talk


@pytest.mark.parametrize("size", [0, 100, 5000, 200_000])
def test_an_i2pd_client_gets_the_response_and_both_close(size: int) -> None:
    response = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
    talk = converse(response)
    assert bytes(talk.client.received) == response
    assert talk.client.status == "terminated"  # it answered our CLOSE with its own and left
    kinds = [type(e) for e in talk.events]
    assert kinds[0] is StreamAccepted and PeerClosed in kinds and kinds[-1] is StreamClosed
    assert talk.server.counters() == {}


def test_a_lost_syn_reply_does_not_kill_the_i2pd_stream() -> None:
    """i2pd ends a stream whose SYN does not come within 200 ms of a later packet; we send
    nothing after our SYN until it is acked, so a lost SYN costs an RTO, not the stream."""
    talk = converse(b"x" * 50_000, lose_first_syn_reply=True)
    assert bytes(talk.client.received) == b"x" * 50_000
    assert StreamClosed in [type(e) for e in talk.events]


def test_an_i2pd_client_that_closes_first_does_not_leave_our_close_hanging() -> None:
    """i2pd forgets a stream once its own CLOSE is acked, so it never acks ours: after three
    sends of a bare CLOSE we finish cleanly instead of retrying for minutes into a RESET."""
    talk = converse(b"r" * 20_000, client_closes_first=True)
    assert bytes(talk.client.received) == b"r" * 20_000
    assert talk.client.status == "terminated"
    assert [type(e) for e in talk.events][-2:] == [PeerClosed, StreamClosed]
    assert len([p for p in talk.sent if p.has(CLOSE)]) == 3
    assert talk.ended_at < 60
    assert talk.server.stream_ids == []
