"""The test bed's I2P clients and single-homed services on real i2pd routers: SAM streams and
datagrams, i2pd client and server tunnels, and the backends behind them.

These are the baselines the product's data-plane tests compare against: one destination on
one router, reached from another. Each test prints its measurements as `MEASURED` lines
(`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator

import pytest

from e2e.fixtures_testnet import remove_every_tunnel, rerun_after_router_crash
from e2e.measured import report
from i2p_multihome_dev.backends import (
    FILE_PATH,
    ONE_MIB,
    UPLOAD_PATH,
    HttpBackend,
    UdpEchoBackend,
    deterministic_bytes,
)
from i2p_multihome_dev.clients import (
    DatagramEcho,
    datagram_round,
    http_via_sam,
    http_via_tunnel,
)
from i2p_multihome_dev.observe import floodfill_views, published_session, serving
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.sam import (
    DatagramSession,
    SamError,
    datagram_session,
    naming_lookup,
    stream_session,
)
from i2p_multihome_dev.testnet import Testnet

SERVER, CLIENT, TUNNEL_CLIENT, UDP_SERVER = "r1", "r2", "r3", "r4"
PUBLISH_TIMEOUT_S = 120.0
CLIENT_TUNNEL_PORT = 8080
# Datagrams to a SAM echo: sent 20 a second. To the udpserver tunnel they are spaced so
# that every answer goes back repliable (see UdpEchoBackend).
DATAGRAMS = 100
UDP_TUNNEL_DATAGRAMS = 40
UDP_TUNNEL_INTERVAL_S = 0.35
UDP_ECHO_DELAY_S = 0.15
# On a quiet testnet a working path delivers nearly every datagram.
MIN_DELIVERED = 0.9


def served(testnet: Testnet, b32: str) -> bool | NotYet:
    views = floodfill_views(testnet, b32)
    now = time.time()
    if any(serving(view, now) for view in views.values()):
        return True
    return NotYet(f"no floodfill serves {b32}: {sorted(n for n, v in views.items() if v)} hold it")


async def wait_served(testnet: Testnet, b32: str) -> float:
    """Block (in a thread) until a floodfill serves `b32`; the seconds it took."""
    started = time.monotonic()
    await asyncio.to_thread(
        wait_until,
        f"a floodfill to serve {b32}",
        PUBLISH_TIMEOUT_S,
        lambda: served(testnet, b32),
        interval=0.5,
    )
    return time.monotonic() - started


@pytest.fixture
def tunnels(testnet: Testnet) -> Iterator[Testnet]:
    """The testnet, with every tunnel the test added removed afterwards."""
    yield testnet
    remove_every_tunnel(testnet)
    assert not any(testnet.tunnels(r.name) for r in testnet.routers)


@pytest.fixture
def backend(testnet: Testnet) -> Iterator[HttpBackend]:
    with HttpBackend(testnet.bridge_address) as http:
        yield http


@rerun_after_router_crash
async def test_sam_stream_carries_a_mebibyte_each_way(testnet: Testnet) -> None:
    """STREAM ACCEPT on one router, STREAM CONNECT from another, 1 MiB each way at once."""
    server, client = await asyncio.gather(
        stream_session(testnet.router(SERVER).sam), stream_session(testnet.router(CLIENT).sam)
    )
    try:
        published_s = await wait_served(testnet, server.b32)
        started = time.monotonic()
        found = await client.lookup(server.b32)
        lookup_s = time.monotonic() - started
        assert found.b32 == server.b32
        assert found.raw == server.destination.raw

        accepting = asyncio.create_task(server.accept(timeout_s=120))
        started = time.monotonic()
        reader, writer = await client.connect(server.b32)
        incoming = await accepting
        connect_s = time.monotonic() - started
        assert incoming.peer.b32 == client.b32

        up, down = deterministic_bytes(ONE_MIB, b"up"), deterministic_bytes(ONE_MIB, b"down")

        async def send(target: asyncio.StreamWriter, data: bytes) -> None:
            target.write(data)
            await target.drain()

        started = time.monotonic()
        _, _, got_up, got_down = await asyncio.wait_for(
            asyncio.gather(
                send(writer, up),
                send(incoming.writer, down),
                incoming.reader.readexactly(len(up)),
                reader.readexactly(len(down)),
            ),
            180,
        )
        both_ways_s = time.monotonic() - started
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        writer.close()
        incoming.writer.close()
        report(
            "sam-stream",
            session_create_s=max(server.created_s, client.created_s),
            publish_s=published_s,
            first_lookup_s=lookup_s,
            connect_accept_s=connect_s,
            mib_each_way_s=both_ways_s,
        )
    finally:
        await asyncio.gather(server.close(), client.close())


@rerun_after_router_crash
async def test_sam_forward_serves_http_to_a_sam_client(
    testnet: Testnet, backend: HttpBackend
) -> None:
    """STREAM FORWARD (SILENT) hands each stream to the HTTP backend; a SAM client on another
    router downloads and uploads 1 MiB."""
    server, client = await asyncio.gather(
        stream_session(testnet.router(SERVER).sam), stream_session(testnet.router(CLIENT).sam)
    )
    try:
        # i2pd forwards to the address the FORWARD came from: ours on the bridge.
        assert server.local_address == testnet.bridge_address == backend.address[0]
        forwarding = await server.forward(backend.address[1], silent=True)
        try:
            await wait_served(testnet, server.b32)
            got = await http_via_sam(client, server.b32, FILE_PATH)
            assert got.status == 200
            assert hashlib.sha256(got.body).hexdigest() == backend.content_sha256
            upload = deterministic_bytes(ONE_MIB, b"upload")
            posted = await http_via_sam(client, server.b32, UPLOAD_PATH, "POST", upload)
            assert posted.status == 200
            assert posted.body.decode().strip() == hashlib.sha256(upload).hexdigest()
            assert backend.uploads == [hashlib.sha256(upload).hexdigest()]
            report(
                "sam-forward-http",
                get_first_byte_s=got.first_byte_s,
                get_mib_s=got.total_s,
                post_mib_s=posted.total_s,
            )
        finally:
            await forwarding.close()
    finally:
        await asyncio.gather(server.close(), client.close())


@rerun_after_router_crash
async def test_server_tunnel_serves_http_to_sam_and_client_tunnel(
    tunnels: Testnet, backend: HttpBackend
) -> None:
    """An i2pd server tunnel in front of the backend, fetched by a SAM client on a second
    router and through an i2pd client tunnel on a third."""
    testnet = tunnels
    started = time.monotonic()
    b32 = await asyncio.to_thread(testnet.add_server_tunnel, SERVER, "web", *backend.address)
    added_s = time.monotonic() - started
    assert testnet.tunnels(SERVER) == ["web"]
    published_s = await wait_served(testnet, b32)

    client = await stream_session(testnet.router(CLIENT).sam)
    try:
        started = time.monotonic()
        found = await client.lookup(b32)
        lookup_s = time.monotonic() - started
        assert found.b32 == b32
        via_sam = await http_via_sam(client, b32, FILE_PATH)
        assert via_sam.status == 200
        assert hashlib.sha256(via_sam.body).hexdigest() == backend.content_sha256
        upload = deterministic_bytes(ONE_MIB, b"upload via server tunnel")
        posted = await http_via_sam(client, b32, UPLOAD_PATH, "POST", upload)
        assert posted.body.decode().strip() == hashlib.sha256(upload).hexdigest()
    finally:
        await client.close()

    started = time.monotonic()
    address = await asyncio.to_thread(
        testnet.add_client_tunnel, TUNNEL_CLIENT, "web-client", b32, CLIENT_TUNNEL_PORT
    )
    client_tunnel_s = time.monotonic() - started
    assert address == (testnet.router(TUNNEL_CLIENT).address, CLIENT_TUNNEL_PORT)
    first = await http_via_tunnel(address, FILE_PATH)
    again = await http_via_tunnel(address, FILE_PATH)
    for response in (first, again):
        assert response.status == 200
        assert hashlib.sha256(response.body).hexdigest() == backend.content_sha256
    assert backend.served == 4
    report(
        "server-tunnel-http",
        tunnel_ready_s=added_s,
        publish_s=published_s,
        sam_first_lookup_s=lookup_s,
        sam_get_first_byte_s=via_sam.first_byte_s,
        sam_get_mib_s=via_sam.total_s,
        sam_post_mib_s=posted.total_s,
        client_tunnel_ready_s=client_tunnel_s,
        tunnel_get_first_byte_s=first.first_byte_s,
        tunnel_get_mib_s=first.total_s,
        tunnel_again_first_byte_s=again.first_byte_s,
        tunnel_again_mib_s=again.total_s,
    )


@rerun_after_router_crash
async def test_sam_datagrams_reach_an_echo_and_come_back(testnet: Testnet) -> None:
    """Repliable datagrams from one router's SAM session to another's, echoed back."""
    sessions = await asyncio.gather(
        datagram_session(testnet.router(SERVER).sam), datagram_session(testnet.router(CLIENT).sam)
    )
    server: DatagramSession
    client: DatagramSession
    server, client = sessions
    echo = DatagramEcho(server)
    try:
        assert server.udp_address[0] == testnet.bridge_address
        await wait_served(testnet, server.b32)
        started = time.monotonic()
        target = await client.lookup(server.b32)
        lookup_s = time.monotonic() - started
        result = await datagram_round(client, target, count=DATAGRAMS)
        assert result.strangers == 0
        assert echo.senders <= {client.b32}
        report(
            "sam-datagrams",
            first_lookup_s=lookup_s,
            sent=result.sent,
            arrived=echo.received,
            echoed=result.echoed,
            median_round_trip_s=result.median_round_trip_s,
            max_round_trip_s=max(result.round_trips_s, default=None),
            dropped_locally=server.dropped + client.dropped,
        )
        assert echo.received >= MIN_DELIVERED * DATAGRAMS
        assert result.echoed >= MIN_DELIVERED * DATAGRAMS
    finally:
        await echo.close()
        await asyncio.gather(server.close(), client.close())


@rerun_after_router_crash
async def test_udp_server_tunnel_echoes_sam_datagrams(tunnels: Testnet) -> None:
    """An i2pd udpserver tunnel (added by restarting its router) in front of a UDP echo,
    reached by repliable datagrams from a SAM session on another router."""
    testnet = tunnels
    with UdpEchoBackend(testnet.bridge_address, reply_delay=UDP_ECHO_DELAY_S) as echo:
        started = time.monotonic()
        b32 = await asyncio.to_thread(
            testnet.add_udp_server_tunnel, UDP_SERVER, "echo", *echo.address
        )
        added_s = time.monotonic() - started
        await wait_served(testnet, b32)
        # The echo answers from another router, which may have to look the client up.
        client = await published_session(
            testnet, lambda: datagram_session(testnet.router(CLIENT).sam)
        )
        try:
            target = await client.lookup(b32)
            result = await datagram_round(
                client, target, count=UDP_TUNNEL_DATAGRAMS, interval_s=UDP_TUNNEL_INTERVAL_S
            )
        finally:
            await client.close()
        report(
            "udp-server-tunnel",
            tunnel_ready_s=added_s,
            sent=result.sent,
            backend_received=echo.received,
            echoed=result.echoed,
            median_round_trip_s=result.median_round_trip_s,
        )
        assert result.strangers == 0
        assert echo.received >= MIN_DELIVERED * UDP_TUNNEL_DATAGRAMS
        assert result.echoed >= MIN_DELIVERED * UDP_TUNNEL_DATAGRAMS


@rerun_after_router_crash
async def test_sam_refusals_carry_the_routers_result(testnet: Testnet) -> None:
    """Errors carry the router's RESULT: a lookup of an unknown b32, a stream to nowhere;
    and the router survives both (with its address book off, i2pd 2.45.1 dies on them)."""
    sam = testnet.router(CLIENT).sam
    nowhere = "a" * 52 + ".b32.i2p"
    with pytest.raises(SamError) as lookup:
        await naming_lookup(sam, nowhere, timeout_s=60)
    assert lookup.value.result == "INVALID_KEY", str(lookup.value)
    session = await stream_session(sam, signature_type=None)
    try:
        # i2pd's default TRANSIENT destination: DSA_SHA1 (signature type 0).
        assert session.destination.sig_type == 0
        with pytest.raises(SamError) as connect:
            await session.connect(nowhere, timeout_s=60)
        assert connect.value.result == "CANT_REACH_PEER"
    finally:
        await session.close()
    assert testnet.is_running(CLIENT)
