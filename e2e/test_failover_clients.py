"""A client keeps its stream when the router carrying it dies: the real `i2p-multihome
balance` on 2 routers, a real i2pd SAM client on another router downloading a paced body,
and SIGKILL for the router carrying the stream.

The survivor is the only router the client can move to, which makes the outcome
deterministic: with more survivors the client's next pick may land on one that did not give
it its new session (docs/conversations.md). The client's tunnels are kept off the hosting
routers (explicitPeers), so what the kill breaks is the destination's router, not the
client's own tunnels through it (on a 9-router testnet most tunnels would pass through it).
The hosting routers' own tunnels have no hop at all: i2pd 2.45.1 builds every explicitPeers
tunnel of a session through the same first peer, and a survivor whose tunnels through it
kept failing their tests had nothing to send with ("Destination is not ready") and the
stream never resumed (seen once in 3 runs on a fresh testnet).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.measured import report
from i2p_multihome_dev.backends import DRIP_PATH, HttpBackend, drip_content
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.clients import request_bytes
from i2p_multihome_dev.observe import published_session
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.sam import explicit_peers_options, stream_session
from i2p_multihome_dev.testnet import Testnet

pytestmark = pytest.mark.testnet

HOSTS = ["r1", "r2"]
CLIENT = "r5"
PEERS = ["r3", "r4", "r5", "r6", "ff1"]  # explicitPeers holds at most 5
DRIP_S = 90  # 90 KiB over 90 s
KILL_AFTER_BYTES = 20 * 1024
# The client refuses the survivor's session until its own is 2 minutes old, the stream's
# RTO then resends; the whole must fit the streams' 5-minute idle limit.
SURVIVE_TIMEOUT_S = 420.0


@pytest.fixture
def two_routers(testnet: Testnet, tmp_path: Path, restore_routers: None) -> Iterator[BalancerRun]:
    with HttpBackend(testnet.bridge_address) as http:
        ports = [{"name": "web", "port": 0,
                  "backend": {"host": http.address[0], "port": http.address[1]}}]  # fmt: skip
        document = destination_manifest("failover", testnet, HOSTS, inbound=2, length=0,
                                        ports=ports)  # fmt: skip
        with run_balancer(tmp_path / "balancer", testnet, document) as run:
            wait_until(
                "a floodfill to serve both routers' leases",
                240,
                lambda: run.served_with(HOSTS),
                interval=2.0,
            )
            yield run


async def test_a_download_survives_the_death_of_its_router(
    testnet: Testnet, two_routers: BalancerRun
) -> None:
    run = two_routers
    # Not through its own router: i2pd cannot build a tunnel through itself.
    peers = [testnet.identity_hash(r) for r in PEERS if r != CLIENT]
    tries = itertools.count()
    session = await published_session(
        testnet,
        lambda: stream_session(
            testnet.router(CLIENT).sam, options=explicit_peers_options(peers, next(tries))
        ),
    )
    async with session:
        started = time.monotonic()
        reader, writer = await session.connect(run.b32)
        writer.write(request_bytes("GET", f"{DRIP_PATH}{DRIP_S}", "drip.i2p", b""))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
        assert head.startswith(b"HTTP/1.1 200"), head
        expected = drip_content(DRIP_S)
        body = bytearray()
        while len(body) < KILL_AFTER_BYTES:
            body += await asyncio.wait_for(reader.read(65536), 120)

        def carrying() -> str | NotYet:
            by_router = {r["name"]: r.get("streams", 0) for r in run.status().get("routers", [])}
            routers = [r for r, n in by_router.items() if n]
            return routers[0] if len(routers) == 1 else NotYet(by_router)

        victim = await asyncio.to_thread(wait_until, "the stream's router", 10, carrying)
        await asyncio.to_thread(testnet.stop_router, victim)
        killed_at = last = time.monotonic()
        longest_gap = 0.0
        async with asyncio.timeout(SURVIVE_TIMEOUT_S):
            while len(body) < len(expected):
                chunk = await reader.read(65536)
                assert chunk, f"the stream ended after {len(body)} of {len(expected)} bytes"
                now = time.monotonic()
                longest_gap, last = max(longest_gap, now - last), now
                body += chunk
        writer.close()
    report(
        "download across a router kill", victim=victim, seconds=time.monotonic() - started,
        after_kill_s=time.monotonic() - killed_at, longest_stall_after_kill_s=longest_gap,
    )  # fmt: skip
    assert bytes(body) == expected
    log = (run.directory / "balancer.log").read_text()
    assert "clients moved off lost routers" in log and f"lost={victim}" in log
