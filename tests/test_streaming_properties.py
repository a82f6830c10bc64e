"""Properties of the whole protocol under an adversarial network: whatever the loss,
duplication and reordering (below a sane bound) and whatever the buffer sizes, every byte
arrives exactly once and in order in both directions, both sides close, no buffer exceeds
its bound at any step, and the virtual clock always moves forward to a finish."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.streaming import StreamConfig
from streamnet import Host, Link, Network


@dataclass(frozen=True)
class Scenario:
    seed: int
    loss: float
    duplicate: float
    delay: tuple[float, float]
    request: int
    response: int
    request_response: bool  # the server answers only after the client's EOF
    config: StreamConfig


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    low = draw(st.floats(0.01, 1.0))
    max_packet_size = draw(st.sampled_from([512, 1024, 1730, 1812]))
    config = StreamConfig(
        max_packet_size=max_packet_size,
        send_buffer_bytes=draw(st.sampled_from([2048, 8192, 65536, 256 * 1024])),
        receive_buffer_bytes=draw(st.sampled_from([16384, 32768, 128 * 1812])),
        initial_window=draw(st.integers(1, 6)),
        max_window=draw(st.sampled_from([6, 32, 128])),
        ack_delay=draw(st.sampled_from([0.0, 0.2, 0.75])),
        # Loss may hit the SYN and its answer several times in a row; the bound here keeps
        # the chance of a legitimate give-up out of the property.
        handshake_timeout=400.0,
    )
    # Hypothesis leans to small and boundary values: draw from buckets so that large
    # transfers over bad links are as likely as the edge cases.
    size = st.one_of(st.integers(0, 3000), st.integers(20_000, 150_000))
    return Scenario(
        seed=draw(st.integers(0, 2**32)),
        loss=draw(st.sampled_from([0.0, 0.02, 0.05, 0.1, 0.15])),
        duplicate=draw(st.sampled_from([0.0, 0.03, 0.1])),
        delay=(low, low + draw(st.sampled_from([0.0, 0.3, 1.0, 2.0]))),
        request=draw(size),
        response=draw(size),
        request_response=draw(st.booleans()),
        config=config,
    )


def data(size: int, salt: int) -> bytes:
    pattern = bytes((i * 7 + salt) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def run(scenario: Scenario) -> tuple[Network, Host, Host, int]:
    net = Network(
        scenario.seed,
        Link(loss=scenario.loss, duplicate=scenario.duplicate, delay=scenario.delay),
    )
    server = net.host("server", scenario.config)
    client = net.host("client", scenario.config)
    server.reply = data(scenario.response, 1)
    server.reply_after_eof = scenario.request_response
    stream = client.connect(server, data(scenario.request, 2))
    net.run(
        lambda: (
            bool(server.streams)
            and all(log.finished for h in (server, client) for log in h.streams.values())
        ),
        limit=7200,
    )
    return net, server, client, stream


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_every_byte_once_in_order_both_ways_and_both_close(scenario: Scenario) -> None:
    net, server, client, stream = run(scenario)
    [server_log] = server.streams.values()
    client_log = client.streams[stream]
    assert bytes(server_log.received) == data(scenario.request, 2)
    assert bytes(client_log.received) == data(scenario.response, 1)
    assert server_log.finished == client_log.finished == "closed"
    # Afterwards everything winds down (TIME-WAIT included) and nothing is left.
    net.run(limit=600)
    for host in (server, client):
        assert host.endpoint.stream_ids == []
        assert host.endpoint.timer_at() is None
    assert net.idle()


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(1, 40))
def test_a_peer_that_vanishes_mid_stream_is_cleaned_up(scenario: Scenario, after: int) -> None:
    """Cut the network for good after some steps: both sides end on their own within the
    timeouts and keep no stream, whatever state they were in."""
    net = Network(scenario.seed, Link(loss=scenario.loss, delay=scenario.delay))
    server = net.host("server", scenario.config)
    client = net.host("client", scenario.config)
    server.reply = data(scenario.response, 1)
    client.connect(server, data(scenario.request, 2))
    for _ in range(after):
        net.step()
    net.link.blackhole = lambda packet: True
    start = net.now
    net.run(limit=3600)
    config = scenario.config
    bound = max(config.idle_timeout, config.handshake_timeout) + config.time_wait + 1
    assert net.now - start <= bound
    for host in (server, client):
        assert host.endpoint.stream_ids == []
        assert host.endpoint.active_streams == 0
