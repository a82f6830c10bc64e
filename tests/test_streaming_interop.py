"""Our server Endpoint against a model of an i2pd 2.45.1 client (tests/i2pdmodel.py), in
bytes: the conversation an HTTP client tunnel has with a multihomed server."""

from __future__ import annotations

import random

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
from i2pdmodel import I2pdClientStream
from seeded import seeded_random

SERVER = DestinationKeys.generate(seeded_random(b"server"))
CLIENT = DestinationKeys.generate(seeded_random(b"i2pd client"))


def converse(response: bytes, *, lose_first_syn_reply: bool = False, seed: int = 0
             ) -> tuple[I2pdClientStream, Endpoint, list[StreamEvent]]:  # fmt: skip
    """The i2pd client sends a request; our server answers `response` and closes."""
    rng = random.Random(seed)
    server = Endpoint(SERVER, StreamConfig(), random_bytes=seeded_random(b"ids"))
    client = I2pdClientStream(CLIENT, SERVER.destination, recv_id=0x2D2D2D2D)
    client.send(b"GET / HTTP/1.1\r\nHost: x.b32.i2p\r\n\r\n")
    events: list[StreamEvent] = []
    stream_id = None
    written = 0
    now = 0.0
    lost_syn_reply = False
    for _ in range(5000):
        for packet in client.outbox:
            server.receive(packet, 0, 80, "router-a", now + rng.uniform(0.1, 0.5))
        client.outbox.clear()
        while (event := server.next_event()) is not None:
            events.append(event)  # type: ignore[arg-type]
            if isinstance(event, StreamAccepted):
                stream_id = event.stream_id
        if stream_id is not None:
            server.read(stream_id)
            if written < len(response):
                written += server.send(stream_id, response[written:])
            elif written == len(response):
                server.close(stream_id)
                written += 1
        for out in server.packets_to_send(now):
            if lose_first_syn_reply and out.packet.is_syn and not lost_syn_reply:
                lost_syn_reply = True
                continue
            client.receive(out.payload.data, now)
        client.handle_timer(now)
        if client.status == "terminated" and any(isinstance(e, StreamClosed) for e in events):
            break
        deadline = server.timer_at()
        now = max(now + 0.05, min(deadline if deadline is not None else now + 1, now + 1))
        if deadline is not None and deadline <= now:
            server.handle_timer(now)
    return client, server, events


@pytest.mark.parametrize("size", [0, 100, 5000, 200_000])
def test_an_i2pd_client_gets_the_response_and_both_close(size: int) -> None:
    response = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
    client, server, events = converse(response)
    assert bytes(client.received) == response
    assert client.status == "terminated"  # it answered our CLOSE with its own and left
    kinds = [type(e) for e in events]
    assert kinds[0] is StreamAccepted and PeerClosed in kinds and kinds[-1] is StreamClosed
    assert server.counters() == {}


def test_a_lost_syn_reply_does_not_kill_the_i2pd_stream() -> None:
    """i2pd ends a stream whose SYN does not come within 200 ms of a later packet; we send
    nothing after our SYN until it is acked, so a lost SYN costs an RTO, not the stream."""
    client, _, events = converse(b"x" * 50_000, lose_first_syn_reply=True)
    assert bytes(client.received) == b"x" * 50_000
    assert StreamClosed in [type(e) for e in events]
