"""The multihomed destination serves a real service, reached by real i2pd clients: SAM
sessions and an i2pd client tunnel on routers that do not host it, HTTP backends behind it,
the real `i2p-multihome balance` on 4 routers in between. Nothing fake is in the path. Each
test prints what it measured as `MEASURED` lines (`pytest -s`).

Datagrams are judged in `e2e/test_affinity.py`: without client affinity an i2pd datagram
client re-picks a random lease every 100 messages (Garlic.h) and its session then reaches a
router that cannot decrypt it (68 and 34 of 100 echoed in two runs on 4 routers, 99 of 100
single-homed; docs/conversations.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from e2e.fixtures_testnet import remove_tunnel
from e2e.measured import report
from e2e.operator_run import tcp_peers
from i2p_multihome.streaming import StreamConfig
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Destination
from i2p_multihome_dev.backends import (
    FILE_PATH,
    INDEX_PAGE,
    INDEX_PATH,
    ONE_MIB,
    UPLOAD_PATH,
    DigestBackend,
    HttpBackend,
)
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.clients import (
    HttpResponse,
    http_via_sam,
    http_via_tunnel,
)
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.sam import StreamSession, stream_session
from i2p_multihome_dev.streamclient import StreamClient
from i2p_multihome_dev.testnet import Testnet

pytestmark = pytest.mark.testnet

HOSTS = ["r1", "r2", "r3", "r4"]
SAM_ROUTER, TUNNEL_ROUTER = "r5", "r6"
REFUSING_PORT = 81  # served by a backend address where nothing listens
DIGEST_PORT = 82  # a backend that answers only after the client's EOF
PER_CLIENT_LIMIT = StreamConfig().max_streams_per_remote
STREAMS_OPENED = 40
FETCHES = 20
DRIFT_TIMEOUT_S = 120.0
CONCURRENT = 50
# Clients that stay on the streams they opened: one lease pick each, so several of them
# land on more than one of the 4 routers (all on one router: (1/4)^5 for 6 of them).
HOLDERS = 6


def closed_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    run: BalancerRun
    b32: str
    http: HttpBackend
    digest: DigestBackend
    testnet: Testnet

    @property
    def destination(self) -> Destination:
        keys = (self.run.directory / "keys.json").read_text()
        return DestinationKeys.from_json(keys).destination

    def streams_by_router(self) -> dict[str, int]:
        return {r["name"]: r.get("streams", 0) for r in self.run.status().get("routers", [])}


@pytest.fixture(scope="module")
def served(testnet: Testnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One destination on 4 routers serving an HTTP backend (port 0: what SAM and client
    tunnels address by default), a refusing backend (port 81), a backend that answers after
    EOF (port 82), until the module's tests are done."""
    bridge = testnet.bridge_address
    with HttpBackend(bridge) as http, DigestBackend(bridge) as digest:
        ports = [
            {"name": "web", "port": 0,
             "backend": {"host": http.address[0], "port": http.address[1]}},
            {"name": "refused", "port": REFUSING_PORT,
             "backend": {"host": bridge, "port": closed_port(bridge)}},
            {"name": "digest", "port": DIGEST_PORT,
             "backend": {"host": digest.address[0], "port": digest.address[1]}},
        ]  # fmt: skip
        document = destination_manifest("web", testnet, HOSTS, inbound=3, length=1, ports=ports)
        directory = tmp_path_factory.mktemp("dataplane")
        with run_balancer(directory, testnet, document) as run:
            b32 = run.b32
            # Clients look the LeaseSet up at the floodfills closest to it and ask the next
            # when one has none: the data plane needs it served, with every router's leases,
            # not on every floodfill (a lost flood is the publisher's business).
            wait_until(
                "a floodfill to serve the destination with all 4 routers' leases",
                180,
                lambda: run.served_with(HOSTS),
                interval=2.0,
            )
            report("floodfills", held=run.explain_floodfills())
            yield Served(run, b32, http, digest, testnet)


@pytest.fixture
async def sam_client(served: Served) -> AsyncIterator[StreamSession]:
    async with await stream_session(served.testnet.router(SAM_ROUTER).sam) as session:
        yield session


def check_file(response: HttpResponse, served: Served) -> None:
    assert response.status == 200, response
    assert hashlib.sha256(response.body).hexdigest() == served.http.content_sha256


def backend_connections(served: Served) -> int:
    """TCP connections the balancer process holds to the HTTP backend now."""
    return sum(1 for peer in tcp_peers(served.run.process.pid) if peer == served.http.address)


async def test_sam_and_a_client_tunnel_fetch_a_mebibyte_twenty_times_each(
    served: Served,
) -> None:
    testnet = served.testnet
    host, port = await asyncio.to_thread(
        testnet.add_client_tunnel, TUNNEL_ROUTER, "to-web", served.b32, 18080
    )
    seen_streams: dict[str, int] = {}

    async def watch_status() -> None:
        while True:
            for router, count in served.streams_by_router().items():
                seen_streams[router] = max(seen_streams.get(router, 0), count)
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_status())
    # ElGamal-only (an i2pd SAM session's default) and ECIES clients alike.
    sessions = await asyncio.gather(
        *(
            stream_session(
                testnet.router(router).sam,
                options={"i2cp.leaseSetEncType": "0"} if i % 2 else None,
            )
            for i, router in enumerate([SAM_ROUTER, TUNNEL_ROUTER] * (HOLDERS // 2))
        )
    )
    try:
        # Each session's first stream opens its end-to-end session (any router can take it);
        # the sessions are reused within seconds, so later streams share that path.
        timings = []
        retried: list[str] = []
        for i in range(FETCHES):
            session = sessions[i % len(sessions)]
            response = await again_after_a_drift(
                f"SAM fetch {i}", retried,
                lambda session=session: http_via_sam(
                    session, served.b32, FILE_PATH, timeout_s=DRIFT_TIMEOUT_S
                ),
            )  # fmt: skip
            check_file(response, served)
            timings.append((response.first_byte_s, response.total_s))
        # Streams that stay open while the status is read: where each client landed. Each
        # opens right after a page fetch of its session, on that fetch's path: i2pd keeps a
        # path 30 s, and the mebibytes above may have taken minutes (issue 10: a fresh pick
        # of a lease may land on a router without the client's session).
        holders = []
        for i, session in enumerate(sessions):
            await again_after_a_drift(
                f"page before holder {i}", retried,
                lambda session=session: http_via_sam(
                    session, served.b32, INDEX_PATH, timeout_s=DRIFT_TIMEOUT_S
                ),
            )  # fmt: skip
            holders.append(await session.connect(served.b32))
        # SAM answers CONNECT before the SYN is acked: a SYN whose pick drifted (see
        # again_after_a_drift) is counted once a resend lands right (27, 54 or 90 s).
        await asyncio.to_thread(
            wait_until,
            "the status to count the open streams",
            100,
            lambda: (
                sum(served.streams_by_router().values()) >= HOLDERS
                or NotYet(served.streams_by_router())
            ),
            interval=0.5,
        )
        spread = {r: n for r, n in served.streams_by_router().items() if n}
        for _, writer in holders:
            writer.close()

        tunnel_timings = []
        for i in range(FETCHES):
            response = await again_after_a_drift(
                f"tunnel fetch {i}", retried,
                lambda: http_via_tunnel((host, port), FILE_PATH, timeout_s=DRIFT_TIMEOUT_S),
            )  # fmt: skip
            check_file(response, served)
            tunnel_timings.append((response.first_byte_s, response.total_s))
    finally:
        watcher.cancel()
        for session in sessions:
            await session.close()
        await asyncio.to_thread(remove_tunnel, testnet, TUNNEL_ROUTER, "to-web")
    report(
        "fetches", sam=f"{FETCHES}/{FETCHES}", tunnel=f"{FETCHES}/{FETCHES}",
        sam_median_ttfb_s=sorted(t[0] for t in timings)[FETCHES // 2],
        sam_median_total_s=sorted(t[1] for t in timings)[FETCHES // 2],
        tunnel_median_total_s=sorted(t[1] for t in tunnel_timings)[FETCHES // 2],
        open_streams_by_router=spread, most_streams_seen=seen_streams, retried=retried,
    )  # fmt: skip
    assert len(spread) > 1, f"every client's stream landed on one router: {spread}"


async def again_after_a_drift(
    what: str, retried: list[str], fetch: Callable[[], Awaitable[HttpResponse]]
) -> HttpResponse:
    """One fetch, tried once more if it timed out. Issue 10, known and measured: when a
    client picks a lease afresh (its path is 30 s old, or its lease nears its end), it may
    pick one of a router without its end-to-end session, and waits for SYN resends (27, 54,
    90 s) until a pick lands right. A second timeout, or anything else, fails the test."""
    try:
        return await fetch()
    except TimeoutError:
        retried.append(what)
        return await fetch()


async def test_an_upload_a_refusing_backend_and_fifty_streams_at_once_leave_nothing(
    served: Served, sam_client: StreamSession
) -> None:
    upload = os.urandom(ONE_MIB)
    response = await http_via_sam(sam_client, served.b32, UPLOAD_PATH, "POST", upload)
    assert response.status == 200
    assert response.body.decode().strip() == hashlib.sha256(upload).hexdigest()

    # A backend that refuses: the client's stream is reset at once, not left to time out.
    testnet = served.testnet
    host, port = await asyncio.to_thread(
        testnet.add_client_tunnel, TUNNEL_ROUTER, "to-refused", served.b32, 18081,
        {"destinationport": str(REFUSING_PORT)},
    )  # fmt: skip
    try:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 60)
        refused_after = time.monotonic() - started
        writer.close()
    finally:
        await asyncio.to_thread(remove_tunnel, testnet, TUNNEL_ROUTER, "to-refused")
    assert answer == b""
    assert refused_after < 15.0
    # The stream reached the destination and was reset by it (not refused by the client's
    # own router, which would look the same from here).
    balancer_log = (served.run.directory / "balancer.log").read_text(errors="replace")
    assert "backend refused a stream; resetting it" in balancer_log

    # 50 streams at once, from two clients (one client may hold 32: see the next test).
    # Two new clients, each fetching once first, then the 50 right away. A client's first
    # stream opens its end-to-end session, which any hosting router can accept; its later
    # streams follow the path of the last one whose SYN was acked, for 30 s (i2pd's shared
    # routing path). Streams opened before that, or more than 30 s later, pick a lease at
    # random, and one of another router cannot decrypt them: issue 10, measured in its note.
    clients = await asyncio.gather(
        *(stream_session(testnet.router(router).sam) for router in (SAM_ROUTER, TUNNEL_ROUTER))
    )
    try:
        for client in clients:
            check_file(await http_via_sam(client, served.b32, FILE_PATH), served)
        started = time.monotonic()
        # The page, not the 1 MiB file: 50 MiB at once overflows the testnet routers' own
        # transport queues (i2pd drops an NTCP2 session past 500 queued messages), which is
        # a load test of i2pd on 2 cores, not of this destination.
        retried: list[str] = []
        results = await asyncio.gather(
            *(
                again_after_a_drift(
                    f"page {i}", retried,
                    lambda client=clients[i % 2]: http_via_sam(
                        client, served.b32, INDEX_PATH, timeout_s=DRIFT_TIMEOUT_S
                    ),
                )
                for i in range(CONCURRENT)
            ),
            return_exceptions=True,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        for client in clients:
            await client.close()
    failures = [r for r in results if not isinstance(r, HttpResponse)]
    assert not failures, failures[:3]
    for response in results:
        assert isinstance(response, HttpResponse)
        assert (response.status, response.body) == (200, INDEX_PAGE)

    # Nothing left behind: no stream in the status, no connection to the backend. Most end
    # within seconds; but a client's CLOSE goes by its routing path, which may have drifted
    # to a router without its session (or the closed SAM session never sent it), and such a
    # stream ends only when our FIN's resends give up (about 200 s), at most after the idle
    # timeout. Seen once in CI: 16 streams on one router still open 60 s after.
    closed_at = time.monotonic()
    await asyncio.to_thread(
        wait_until,
        "every stream and backend connection to end",
        StreamConfig().idle_timeout + 30,
        lambda: (
            (sum(served.streams_by_router().values()) == 0 and backend_connections(served) == 0)
            or NotYet(
                {"streams": served.streams_by_router(), "sockets": backend_connections(served)}
            )
        ),
        interval=1.0,
    )
    report(
        "streams", upload_mib=1, refused_reset_s=refused_after, concurrent=CONCURRENT,
        concurrent_total_s=took, retried=retried, all_ended_s=time.monotonic() - closed_at,
    )  # fmt: skip


async def test_one_client_over_its_stream_limit_is_refused_at_once(served: Served) -> None:
    """32 streams per client (StreamConfig.max_streams_per_remote). One client opens 40
    streams to the backend that answers only after EOF, so all stay open: 32 are accepted,
    the other 8 are answered with a signed RESET within seconds, not left to time out.
    Then the client half-closes the 32 and each gets its answer."""
    release = asyncio.Event()
    async with StreamClient(served.testnet, SAM_ROUTER) as client:
        destination = served.destination
        started = time.monotonic()
        requests = [
            asyncio.create_task(
                client.request(destination, b"held", port=DIGEST_PORT, close_after=release,
                               timeout_s=300)
            )
            for _ in range(STREAMS_OPENED)
        ]  # fmt: skip

        def refused_and_held() -> bool | NotYet:
            refused = sum(1 for r in requests if r.done())
            held = sum(served.streams_by_router().values())
            if refused == STREAMS_OPENED - PER_CLIENT_LIMIT and held == PER_CLIENT_LIMIT:
                return True
            return NotYet({"refused": refused, "held by the destination": held})

        await asyncio.to_thread(wait_until, "8 refused and 32 held", 120, refused_and_held,
                                interval=0.5)  # fmt: skip
        settled_s = time.monotonic() - started
        release.set()
        outcomes = await asyncio.gather(*requests)
    refused = [o for o in outcomes if o.ending.startswith("reset")]
    answered = [o for o in outcomes if o.ending == "closed"]
    report(
        "stream limit", opened=STREAMS_OPENED, answered=len(answered), refused=len(refused),
        settled_s=settled_s, slowest_refusal_s=max((o.ended_s or 0.0) for o in refused),
    )  # fmt: skip
    assert len(refused) == STREAMS_OPENED - PER_CLIENT_LIMIT
    assert all(not o.established and o.ended_s is not None and o.ended_s < 30 for o in refused)
    digest = (hashlib.sha256(b"held").hexdigest() + "\n").encode()
    assert len(answered) == PER_CLIENT_LIMIT
    assert all(o.received == digest for o in answered)


async def test_a_half_closed_stream_still_carries_the_answer(served: Served) -> None:
    """No i2pd client can half-close (SAM and client tunnels end the whole stream), so our
    own streaming client does it, as a real client of another router: it sends 20 kB and
    CLOSE, the backend sees EOF and only then answers, and the answer arrives on the
    half-closed stream. Small on purpose: i2pd's I2CP sends on one path for 100 messages,
    then picks a lease at random, and one of another router loses what follows until a
    retransmission gets through (issue 10; 200 kB took 108 s here)."""
    body = os.urandom(20_000)
    async with StreamClient(served.testnet, SAM_ROUTER) as client:
        outcome = await client.request(served.destination, body, port=DIGEST_PORT, timeout_s=300)
    report(
        "half-close", ending=outcome.ending, half_closed_s=outcome.half_closed_s,
        first_byte_s=outcome.first_byte_s,
    )  # fmt: skip
    assert outcome.received == (hashlib.sha256(body).hexdigest() + "\n").encode(), outcome
    assert outcome.ending == "closed" and outcome.peer_closed
    assert outcome.half_closed_s is not None and outcome.first_byte_s is not None
    assert outcome.first_byte_s > outcome.half_closed_s
    assert served.digest.answered >= 1
