"""The data plane end to end on one machine: a hosted destination on two fake routers
(real I2CP bytes), a remote client built from the streaming Endpoint (client role) whose
packets the fake routers deliver as MessagePayload, and real TCP and UDP backends on
loopback. The real routers come in e2e/test_dataplane.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from fakerouter import FakeRouter, eventually, make_leases
from i2p_multihome.balancer.engine import Timing
from i2p_multihome.clock import SYSTEM_CLOCK, wait_event
from i2p_multihome.dataplane.datagrams import DatagramService
from i2p_multihome.dataplane.ports import PortMap
from i2p_multihome.dataplane.service import AFFINITY_SYN_ANSWER_DELAY, stream_config_for
from i2p_multihome.dataplane.stats import DataPlaneStats
from i2p_multihome.hosting import HostedDestination
from i2p_multihome.model.v1alpha1 import (
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
    PortSpec,
)
from i2p_multihome.streaming import (
    DataReadable,
    Endpoint,
    PeerClosed,
    StreamClosed,
    StreamClosedError,
    StreamConfig,
    StreamEstablished,
    StreamReset,
)
from i2p_multihome.wire import messages
from i2p_multihome.wire.datagrams import RepliableDatagram
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import LEASESET2_FLAG_UNPUBLISHED
from virtualclock import ManualClock, settle

MIB = 1024 * 1024
BODY = os.urandom(MIB)


class StatusList:
    def __init__(self) -> None:
        self.written: list[MultihomedDestinationStatus] = []

    async def write(self, status: MultihomedDestinationStatus) -> None:
        self.written.append(status)


class RemoteClient:
    """A client destination somewhere in I2P, reaching ours through one of the routers:
    its packets are delivered by that fake router, our replies come back from whichever
    router we send them through (recorded per router)."""

    def __init__(self, server: DestinationKeys, routers: dict[str, FakeRouter]) -> None:
        self.keys = DestinationKeys.generate()
        self.server = server
        self.routers = routers
        self.endpoint = Endpoint(self.keys)
        self.replies_via: dict[str, int] = dict.fromkeys(routers, 0)
        self.datagrams: list[tuple[str, bytes]] = []
        self.events: dict[int, list[object]] = {}  # each stream's events, in order
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        for name, router in routers.items():
            router.send_listeners.append(lambda m, n=name: self._from_destination(n, m))

    def _from_destination(
        self, router: str, message: messages.SendMessage | messages.SendMessageExpires
    ) -> None:
        if message.destination != self.keys.destination:
            return
        self.replies_via[router] += 1
        payload = messages.Payload.decode(message.payload)
        if payload.protocol == messages.PROTOCOL_STREAMING:
            self.endpoint.receive(payload.data, payload.from_port, payload.to_port, router, now())
        else:
            self.datagrams.append((router, payload.data))
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        while True:
            while (event := self.endpoint.next_event()) is not None:
                sid = getattr(event, "stream_id", None)
                if sid is not None:
                    self.events.setdefault(sid, []).append(event)
            for out in self.endpoint.packets_to_send(now()):
                await self.routers[out.via].deliver(out.payload.encode())
            timer = self.endpoint.timer_at()
            if timer is not None and timer <= now():
                self.endpoint.handle_timer(now())
                continue
            await wait_event(self._wake, SYSTEM_CLOCK, None if timer is None else timer - now())
            self._wake.clear()

    def kick(self) -> None:
        self._wake.set()

    async def handshake_s(self, via: str, port: int = 80) -> float:
        """Open a stream through `via` with a bare SYN; the seconds until the server's SYN
        came back. The stream is then reset."""
        started = now()
        stream = self.endpoint.connect(self.server.destination, via, started, remote_port=port)
        self.kick()

        def established() -> bool:
            return any(isinstance(e, StreamEstablished) for e in self.events.get(stream, []))

        await eventually(established, 5.0, "the server's SYN")
        took = now() - started
        self.endpoint.reset(stream)
        self.kick()
        return took

    async def request(self, via: str, request: bytes, port: int = 80) -> tuple[bytes, str]:
        """Open a stream through `via`, send `request` (as fast as the send buffer takes
        it), half-close, read to the end; the bytes and how the stream ended ("closed" or
        the reset reason)."""
        stream = self.endpoint.connect(self.server.destination, via, now(), remote_port=port)
        unsent = request
        received = bytearray()
        deadline = time.monotonic() + 20.0
        while True:
            if unsent:
                with contextlib.suppress(StreamClosedError):
                    unsent = unsent[self.endpoint.send(stream, unsent) :]
                    if not unsent:
                        self.endpoint.close(stream)
                self.kick()
            waiting = self.events.setdefault(stream, [])
            if not waiting:
                if time.monotonic() > deadline:
                    raise AssertionError("stream did not end within 20 s")
                await asyncio.sleep(0.005)
                continue
            event = waiting.pop(0)
            match event:
                case DataReadable(stream_id=sid) if sid == stream:
                    received += self.endpoint.read(stream)
                    self.kick()
                case StreamReset(stream_id=sid, reason=reason) if sid == stream:
                    return bytes(received), reason
                case StreamClosed(stream_id=sid) if sid == stream:
                    return bytes(received), "closed"
                case PeerClosed() | StreamEstablished():
                    received += self.endpoint.read(stream)


def now() -> float:
    return time.monotonic()


async def http_like_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request to EOF, answers with its SHA-256 and, for GET, the 1 MiB body."""
    request = await reader.read()
    digest = hashlib.sha256(request).hexdigest().encode()
    writer.write(digest + b"\n")
    if request.startswith(b"GET"):
        writer.write(BODY)
    await writer.drain()
    writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo:" + data, addr)


@pytest.fixture
async def world(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Two fake routers hosting one destination; with the indirect parameter True, under
    client affinity: r1 publishes only, r2 serves."""
    affinity = bool(getattr(request, "param", False))
    tcp = await asyncio.start_server(http_like_backend, "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpEcho, local_addr=("127.0.0.1", 0)
    )
    udp_port = udp.get_extra_info("sockname")[1]
    routers = {
        name: await FakeRouter(name, leases=make_leases(name, 2)).start() for name in ("r1", "r2")
    }
    keys = DestinationKeys.generate()
    spec = MultihomedDestinationSpec.model_validate(
        {
            "routers": [{"name": n, "i2cp": {"host": "127.0.0.1", "port": r.port},
                         "publish": not affinity or n == "r1"}
                        for n, r in routers.items()],
            "leaseSet": {"clientAffinity": affinity},
            "ports": [
                {"name": "http", "port": 80, "backend": {"host": "127.0.0.1", "port": tcp_port}},
                {"name": "down", "port": 81, "backend": {"host": "127.0.0.1", "port": 9}},
                {"name": "echo", "port": 53, "protocol": "Datagram",
                 "backend": {"host": "127.0.0.1", "port": udp_port}},
            ],
        }
    )  # fmt: skip
    sink = StatusList()
    hosted = HostedDestination(
        "dest",
        spec,
        keys,
        sink,
        timing=Timing(ramp_first_s=3600, heartbeat_s=30, affinity_renew_s=0.2),
    )
    hosted.start()
    client = RemoteClient(keys, routers)
    await client.start()
    await eventually(
        lambda: all(r.last_lease_set is not None for r in routers.values()), 5.0, "sessions"
    )
    yield {"hosted": hosted, "client": client, "routers": routers, "keys": keys, "sink": sink}
    await client.close()
    await hosted.stop(destroy_sessions=True)
    for router in routers.values():
        await router.close()
    tcp.close()
    udp.close()


async def test_a_stream_reaches_the_backend_and_1_mib_comes_back(world: dict[str, Any]) -> None:
    client: RemoteClient = world["client"]
    data, ending = await client.request("r1", b"GET /big")
    assert ending == "closed"
    digest, body = data.split(b"\n", 1)
    assert digest == hashlib.sha256(b"GET /big").hexdigest().encode()
    assert hashlib.sha256(body).digest() == hashlib.sha256(BODY).digest()
    hosted: HostedDestination = world["hosted"]
    assert hosted.dataplane.stats.bytes_out[("r1", "http")] == len(data)
    assert hosted.dataplane.stats.bytes_in[("r1", "http")] == len(b"GET /big")


async def test_an_upload_reaches_the_backend_intact(world: dict[str, Any]) -> None:
    upload = os.urandom(MIB)
    data, ending = await world["client"].request("r2", b"PUT " + upload)
    assert ending == "closed"
    assert data == hashlib.sha256(b"PUT " + upload).hexdigest().encode() + b"\n"


async def test_replies_leave_through_the_router_the_stream_came_through(
    world: dict[str, Any],
) -> None:
    client: RemoteClient = world["client"]
    await client.request("r2", b"HEAD /")
    assert client.replies_via["r2"] > 0
    assert client.replies_via["r1"] == 0


async def test_a_refused_backend_resets_the_stream_promptly(world: dict[str, Any]) -> None:
    started = time.monotonic()
    data, ending = await world["client"].request("r1", b"GET /", port=81)
    assert ending != "closed" and data == b""
    assert time.monotonic() - started < 5.0
    assert world["hosted"].dataplane.stats.resets["backend_refused"] == 1


async def test_a_port_nobody_serves_is_reset(world: dict[str, Any]) -> None:
    data, ending = await world["client"].request("r1", b"GET /", port=8080)
    assert ending != "closed" and data == b""
    assert world["hosted"].dataplane.stats.resets["no_port"] == 1


async def test_concurrent_streams_all_complete_and_nothing_is_left_behind(
    world: dict[str, Any],
) -> None:
    client: RemoteClient = world["client"]
    results = await asyncio.gather(
        *(client.request("r1" if i % 2 else "r2", f"HEAD {i}".encode()) for i in range(20))
    )
    assert all(ending == "closed" for _, ending in results)
    hosted: HostedDestination = world["hosted"]
    await eventually(lambda: hosted.dataplane.streams.active_streams == 0, 5.0, "streams gone")
    assert hosted.dataplane.streams.endpoint.active_streams == 0


async def test_status_counts_streams_by_router(world: dict[str, Any]) -> None:
    client: RemoteClient = world["client"]
    hosted: HostedDestination = world["hosted"]
    # A stream that stays open: its request is sent but the stream is not half-closed.
    stream = client.endpoint.connect(world["keys"].destination, "r2", now(), remote_port=80)
    client.endpoint.send(stream, b"GET")
    client.kick()
    await eventually(lambda: hosted.snapshot().streams == {"r2": 1}, 5.0, "one stream on r2")
    assert await hosted.report()
    status = world["sink"].written[-1]
    assert status.streams == 1
    assert {r.name: r.streams for r in status.routers} == {"r1": 0, "r2": 1}
    assert status.to_json_dict()["streams"] == 1


async def test_datagrams_are_echoed_through_the_router_they_came_through(
    world: dict[str, Any],
) -> None:
    client: RemoteClient = world["client"]
    routers: dict[str, FakeRouter] = world["routers"]
    # Replies follow the client's latest datagram: five through r1, then five through r2.
    for i in range(10):
        datagram = RepliableDatagram.build(client.keys, f"ping {i}".encode()).encode()
        payload = messages.Payload(datagram, messages.PROTOCOL_DATAGRAM, 7000, 53)
        await routers["r1" if i < 5 else "r2"].deliver(payload.encode())
        if i == 4:
            await eventually(lambda: len(client.datagrams) == 5, 5.0, "5 echoes")
    await eventually(lambda: len(client.datagrams) == 10, 5.0, "10 echoes")
    echoed = {}
    for router, data in client.datagrams:
        reply = RepliableDatagram.decode_verified(data)
        assert reply.source == world["keys"].destination
        echoed[reply.payload] = router
    assert echoed == {f"echo:ping {i}".encode(): "r1" if i < 5 else "r2" for i in range(10)}
    stats = world["hosted"].dataplane.stats
    assert stats.datagrams_in["echo"] == stats.datagrams_out["echo"] == 10
    assert world["hosted"].dataplane.datagrams.flows == 1


async def test_clients_of_a_lost_router_move_to_a_survivor_which_answers_them(
    world: dict[str, Any],
) -> None:
    client: RemoteClient = world["client"]
    routers: dict[str, FakeRouter] = world["routers"]
    hosted: HostedDestination = world["hosted"]
    datagrams = hosted.dataplane.datagrams

    async def ping(via: str, text: bytes) -> None:
        datagram = RepliableDatagram.build(client.keys, text).encode()
        await routers[via].deliver(
            messages.Payload(datagram, messages.PROTOCOL_DATAGRAM, 7000, 53).encode()
        )

    await ping("r1", b"one")
    await eventually(lambda: len(client.datagrams) == 1, 5.0, "the echo through r1")
    await routers["r1"].close()
    # The failover LeaseSet goes to r2, and the client with it, held: its session at r1
    # is seconds old, so a session from r2 would be refused for 2 minutes yet.
    await eventually(
        lambda: datagrams.routes() == {client.keys.destination.hash: "r2"}, 5.0, "the move"
    )
    assert datagrams.held(client.keys.destination.hash)
    # The client reaches r2 on its own (a new session there): answered through r2 at once.
    await ping("r2", b"two")
    await eventually(lambda: len(client.datagrams) == 2, 5.0, "the echo through r2")
    assert client.datagrams[1][0] == "r2"
    assert not datagrams.held(client.keys.destination.hash)


@pytest.mark.parametrize("world", [True], indirect=True, ids=["affinity"])
async def test_a_new_client_renews_its_serving_routers_own_leaseset(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under client affinity a router's reply bundles its own LeaseSet only once that
    changes (i2pd), so a client's first stream or flow through a serving router has the
    balancer sign that router's LeaseSet afresh."""
    client: RemoteClient = world["client"]
    hosted: HostedDestination = world["hosted"]
    r2: FakeRouter = world["routers"]["r2"]
    renewals: list[str] = []
    renew = hosted.balancer.renew_affinity
    monkeypatch.setattr(
        hosted.balancer, "renew_affinity", lambda router: (renewals.append(router), renew(router))
    )
    await eventually(
        lambda: (
            r2.last_lease_set is not None
            and r2.last_lease_set.lease_set.flags == LEASESET2_FLAG_UNPUBLISHED
        ),
        5.0,
        "r2's own LeaseSet",
    )
    handed = len(r2.lease_sets)
    _, ending = await client.request("r2", b"HEAD /")
    assert ending == "closed"
    assert renewals == ["r2"]
    await eventually(lambda: len(r2.lease_sets) > handed, 5.0, "r2's LeaseSet renewed")
    assert r2.lease_sets[-1].lease_set.flags == LEASESET2_FLAG_UNPUBLISHED
    datagram = RepliableDatagram.build(client.keys, b"ping").encode()
    payload = messages.Payload(datagram, messages.PROTOCOL_DATAGRAM, 7000, 53)
    await r2.deliver(payload.encode())
    await eventually(lambda: len(client.datagrams) == 1, 5.0, "the echo")
    assert renewals == ["r2", "r2"]  # a new flow; the rate limit holds the renewal back


@pytest.mark.parametrize("world", [False, True], indirect=True, ids=["merged", "affinity"])
async def test_a_bare_syn_waits_less_under_client_affinity(world: dict[str, Any]) -> None:
    """A client's stray resend reaches another router's lease in a merged LeaseSet, but
    the same router's under affinity: the SYN answer's wait (a floor: timers never fire
    early) is shorter there. The wait follows the spec when it changes."""
    client: RemoteClient = world["client"]
    hosted: HostedDestination = world["hosted"]
    spec = hosted.balancer.spec
    affinity = spec.lease_set.client_affinity
    took = await client.handshake_s("r2")
    assert took >= (AFFINITY_SYN_ANSWER_DELAY if affinity else StreamConfig().syn_answer_delay)
    if affinity:
        assert took < StreamConfig().syn_answer_delay
    flipped = spec.model_copy(
        update={"lease_set": spec.lease_set.model_copy(update={"client_affinity": False})}
    )
    hosted.dataplane.apply_spec(flipped)
    assert hosted.dataplane.streams.endpoint.config == StreamConfig()


def test_the_stream_config_follows_client_affinity() -> None:
    base = StreamConfig(ack_delay=0.3, syn_answer_delay=0.3)
    plain = MultihomedDestinationSpec.model_validate(
        {"routers": [{"name": "r1", "i2cp": {"host": "h", "port": 1}}]}
    )
    assert stream_config_for(plain, base) is base
    serving = plain.model_copy(
        update={"lease_set": plain.lease_set.model_copy(update={"client_affinity": True})}
    )
    assert stream_config_for(serving, base) == replace(
        base, syn_answer_delay=AFFINITY_SYN_ANSWER_DELAY
    )
    quick = StreamConfig(syn_answer_delay=0.01)
    assert stream_config_for(serving, quick).syn_answer_delay == 0.01  # never longer


async def test_garbage_from_clients_is_counted_and_dropped(world: dict[str, Any]) -> None:
    routers: dict[str, FakeRouter] = world["routers"]
    client: RemoteClient = world["client"]
    await routers["r1"].deliver(b"not gzip at all")
    await routers["r1"].deliver(messages.Payload(b"\x00" * 10, 6, 1, 80).encode())
    forged = RepliableDatagram(client.keys.destination, b"\x00" * 64, b"hi").encode()
    await routers["r1"].deliver(messages.Payload(forged, 17, 1, 53).encode())
    await routers["r1"].deliver(messages.Payload(b"raw", 18, 1, 53).encode())
    hosted: HostedDestination = world["hosted"]
    await eventually(lambda: sum(hosted.dataplane.drops().values()) >= 4, 5.0, "4 drops")
    drops = hosted.dataplane.drops()
    assert drops["malformed_payload"] == 1
    assert drops["malformed"] == 1
    assert drops["bad_datagram"] == 1
    assert drops["raw_datagram"] == 1
    # ... and the destination still serves.
    _, ending = await client.request("r1", b"HEAD /")
    assert ending == "closed"


async def test_a_datagram_client_of_a_lost_router_is_pinged_through_its_new_one_when_due() -> None:
    # A client that only sends gets no reply to carry a new session: it would go on sending
    # to the lost router's leases. Its flow idles out (120 s) as its hold ends (125 s): it is
    # remembered, hold and all.
    clock = ManualClock()
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpEcho, local_addr=("127.0.0.1", 0)
    )
    udp_port = udp.get_extra_info("sockname")[1]
    ports = PortMap.of([
        PortSpec.model_validate({"name": "echo", "port": 53, "protocol": "Datagram",
                                 "backend": {"host": "127.0.0.1", "port": udp_port}}),
    ])  # fmt: skip
    nudged: list[tuple[object, str]] = []

    async def send(via: str, destination: object, payload: bytes) -> bool:
        return True

    service = DatagramService(
        DestinationKeys.generate(), ports, lambda b: (b.host, b.port), send, clock,
        DataPlaneStats(), nudge=lambda client, router: nudged.append((client, router)),
    )  # fmt: skip
    task = asyncio.create_task(service.run())
    client = DestinationKeys.generate()
    service.receive("r1", messages.Payload(
        RepliableDatagram.build(client, b"one").encode(), messages.PROTOCOL_DATAGRAM, 7000, 53,
    ))  # fmt: skip
    await settle()
    await clock.advance(10.0)
    assert service.move_clients({"r1"}, lambda c: "r2") == 1
    await clock.advance(114.0)  # 124 s after its first datagram: its session is too young
    assert nudged == []
    await clock.advance(2.0)
    assert nudged == [(client.destination, "r2")] and service.flows == 0
    await clock.advance(600.0)
    assert len(nudged) == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    udp.close()
