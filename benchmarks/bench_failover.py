"""Failover benchmark (not a test): what live clients of a multihomed destination see when one
of its routers dies, measured against real i2pd clients.

Brings up its own private i2pd testnet (9 routers, 3 floodfills; root, Debian's i2pd). The
real `i2p-multihome balance` hosts one destination on r1, r2, r3 (2 inbound tunnels of length
1 each) serving an HTTP backend (GET / a 110-byte page, GET /file 20 MiB) on stream port 0
and a UDP echo on datagram port 0. Two parts (`--part`, default both):

- download: a SAM client on r4 fetches the page every 20 s (its end-to-end session with one
  router begins, and stays alive) until that session is 130 s old, then downloads the 20 MiB
  file; at 30 % the router carrying the stream (the balancer's status says which) is killed
  with SIGKILL. Does the download complete on the same stream, intact, and how long was its
  longest stall? Run once with that old session (clients accept a session from another
  router only once theirs is 2 minutes old) and once with a young one (one fetch, 5 s).
  Each client waits until its LeaseSet is on a floodfill (the survivor reaches it there).
- kills: `--kills` (10) kills in a row, a different hosting router each time (r1, r2, r3,
  r1, ...), each restarted and back in the LeaseSet before the next, while three clients run
  throughout: a SAM stream client on r4 (the page every 2 s), a SAM datagram client on r5
  (a datagram to the echo every second) and an i2pd client tunnel on r6 (a non-publishing
  client: its LeaseSet cannot be found, so no router but its own can start a session with
  it; the page every 2 s). For every kill and client: the recovery time, from the kill to
  the end of the first request started after it that succeeded (datagrams: the first echo of
  one sent after it), and the requests that failed meanwhile.

- restarts (`--part restarts`, not in `both`): the same clients and table, but each "kill"
  is a restart of the balancer (SIGTERM, as a rollout does, then the same manifest, keys
  and `--clients-file`, as a deployment keeps its recent clients): every router session,
  and every client's end-to-end session with it, ends.

Tunnels are kept off the hosting routers (`explicitPeers`: r4-r6, ff1 and ff2, for
the destination and every client): on a 9-router testnet most tunnels would otherwise pass
through the router killed, and what is measured would be the clients' own tunnel rebuilds.

Prints tables, writes JSON to benchmarks/results/failover-DATE.json, exits 1 when a download
failed or a client did not recover. Everything it started is removed.

With `--affinity` the destination sets `leaseSet.clientAffinity`: r1-r3 serve
(`publish: false`) and r7 only publishes (10 routers); it is never killed.

Run (root): python benchmarks/bench_failover.py [--part both|download|kills|restarts] [--kills 10]
            [--affinity] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common import multihomed_served, testnet_version, wait_served, with_affinity
from i2p_multihome_dev.backends import (
    FILE_PATH,
    INDEX_PAGE,
    INDEX_PATH,
    HttpBackend,
    UdpEchoBackend,
)
from i2p_multihome_dev.balancer_process import BalancerRun, destination_manifest, run_balancer
from i2p_multihome_dev.clients import (
    HttpClientError,
    HttpResponse,
    http_via_sam,
    http_via_tunnel,
    request_bytes,
)
from i2p_multihome_dev.observe import published_session
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.sam import (
    DatagramSession,
    SamError,
    StreamSession,
    datagram_session,
    explicit_peers_options,
    stream_session,
)
from i2p_multihome_dev.testnet import Testnet, TestnetError, check_host
from results import write_results

ROUTERS = 9
FLOODFILLS = 3
HOSTS = ["r1", "r2", "r3"]
PUBLISHER = "r7"  # with --affinity
PEERS = ["r4", "r5", "r6", "ff1", "ff2"]  # explicitPeers holds at most 5
STREAM_CLIENT = "r4"
DATAGRAM_CLIENT = "r5"
TUNNEL_CLIENT = "r6"
TUNNEL_PORT = 18080
INBOUND = 2
LENGTH = 1
FILE_BYTES = 20 << 20
KILL_AT_FRACTION = 0.3
DOWNLOAD_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 60.0
REQUEST_INTERVAL_S = 2.0
DATAGRAM_INTERVAL_S = 1.0
RECOVERY_TIMEOUT_S = 420.0
BACK_TIMEOUT_S = 300.0
SETTLE_S = 20.0
READ_SIZE = 64 * 1024
SESSION_AGES_S = {"old session": 130.0, "young session": 5.0}
WARM_INTERVAL_S = 20.0
WARM_TIMEOUT_S = 60.0


# --- part 1: a download across a kill ---------------------------------------------------------


def router_carrying_streams(run: BalancerRun) -> str | NotYet:
    routers = run.status().get("routers", [])
    carrying = [r["name"] for r in routers if r.get("streams", 0) > 0]
    return (
        carrying[0]
        if len(carrying) == 1
        else NotYet({r["name"]: r.get("streams") for r in routers})
    )


_session_tries = itertools.count()


def peer_options(testnet: Testnet, client_router: str) -> dict[str, str]:
    """Tunnel options that keep a client's tunnels off the hosting routers (and off its own
    router: i2pd cannot build a tunnel through itself), one hop each, led by another peer
    on each call so that a retried session does not depend on the same one."""
    return explicit_peers_options(
        (testnet.identity_hash(r) for r in PEERS if r != client_router), next(_session_tries)
    )


async def download_across_a_kill(
    testnet: Testnet, run: BalancerRun, backend: HttpBackend, session_age_s: float
) -> dict[str, Any]:
    try:
        session = await published_session(
            testnet,
            lambda: stream_session(
                testnet.router(STREAM_CLIENT).sam, options=peer_options(testnet, STREAM_CLIENT)
            ),
        )
    except Exception as exc:  # the client could not be set up: a result to report
        return {"failure": f"client: {exc!r}"}
    try:
        began = time.monotonic()
        # A page every 20 s: an i2pd client renews a session that heard nothing for 90 s, so
        # only a client that keeps talking has an old one.
        # A fetch may wait for SYN resends (issue 10's drift) or fail: counted, not fatal.
        warm_ups_failed = 0
        while True:
            try:
                warm = await http_via_sam(session, run.b32, INDEX_PATH, timeout_s=WARM_TIMEOUT_S)
                warm_ups_failed += warm.body != INDEX_PAGE
            except (OSError, TimeoutError, HttpClientError, SamError):
                warm_ups_failed += 1
            left = began + session_age_s - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, WARM_INTERVAL_S))
        result: dict[str, Any] = {
            "session_age_s": round(time.monotonic() - began, 1),
            "warm_ups_failed": warm_ups_failed,
        }
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            result |= await _download(testnet, run, backend, session)
        return result
    except Exception as exc:  # a failed download is a result to report
        return {"failure": repr(exc)}
    finally:
        await session.close()


async def _download(
    testnet: Testnet, run: BalancerRun, backend: HttpBackend, session: StreamSession
) -> dict[str, Any]:
    started = time.monotonic()
    reader, writer = await session.connect(run.b32)
    writer.write(request_bytes("GET", FILE_PATH, "failover.i2p", b""))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(
        line.split(b":", 1)[1] for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ))  # fmt: skip
    digest = hashlib.sha256()
    received = 0
    last = time.monotonic()
    stall_before = stall_after = 0.0
    victim: str | None = None
    killed_at: float | None = None
    while received < length:
        chunk = await reader.read(min(READ_SIZE, length - received))
        if not chunk:
            raise ConnectionError(f"the stream ended after {received} of {length} bytes")
        now = time.monotonic()
        if killed_at is None:
            stall_before = max(stall_before, now - last)
        else:
            stall_after = max(stall_after, now - last)
        last = now
        digest.update(chunk)
        received += len(chunk)
        if killed_at is None and received >= KILL_AT_FRACTION * length:
            victim = await asyncio.to_thread(
                wait_until,
                "the router carrying the download",
                10,
                lambda: router_carrying_streams(run),
                interval=0.2,
            )
            await asyncio.to_thread(testnet.stop_router, victim)
            killed_at = last = time.monotonic()
    writer.close()
    intact = digest.hexdigest() == backend.content_sha256
    return {
        "victim": victim,
        "completed": intact,
        "seconds": round(time.monotonic() - started, 1),
        "longest_stall_before_kill_s": round(stall_before, 2),
        "longest_stall_after_kill_s": round(stall_after, 2),
    }


# --- part 2: kills in a row -------------------------------------------------------------------


@dataclasses.dataclass
class ClientLog:
    """Each attempt: when it started, when it ended, whether it succeeded."""

    name: str
    attempts: list[tuple[float, float, bool]] = dataclasses.field(default_factory=list)

    def recovery_after(self, kill_at: float) -> float | None:
        ends = [end for start, end, ok in self.attempts if ok and start >= kill_at]
        return min(ends) - kill_at if ends else None

    def failed_between(self, start: float, end: float) -> int:
        return sum(1 for s, _, ok in self.attempts if not ok and start <= s <= end)


async def request_loop(log: ClientLog, fetch: Any, stop: asyncio.Event) -> None:
    async def one() -> None:
        started = time.monotonic()
        try:
            got = await fetch()
            ok = isinstance(got, HttpResponse) and got.body == INDEX_PAGE
        except Exception:  # a failure is a result
            ok = False
        log.attempts.append((started, time.monotonic(), ok))

    tasks = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(one()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REQUEST_INTERVAL_S)
    await asyncio.gather(*tasks)


async def datagram_loop(
    log: ClientLog, session: DatagramSession, b32: str, stop: asyncio.Event
) -> None:
    target = await session.lookup(b32)
    sent: dict[int, float] = {}
    number = 0

    async def receive() -> None:
        while True:
            datagram = await session.receive(3600)
            head = datagram.payload.split(b":", 1)[0]
            if head.isdigit() and int(head) in sent:
                start = sent.pop(int(head))
                log.attempts.append((start, datagram.received_at, True))

    receiver = asyncio.create_task(receive())
    try:
        while not stop.is_set():
            sent[number] = time.monotonic()
            session.send(target, b"%d:failover" % number)
            number += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DATAGRAM_INTERVAL_S)
        await asyncio.sleep(10)  # the last echoes
    finally:
        receiver.cancel()
    log.attempts.extend((start, start, False) for start in sent.values())


async def wait_recovered(logs: Iterable[ClientLog], killed_at: float) -> None:
    """Until every client has a success started after the kill, or the recovery timeout."""

    def recovered() -> bool | NotYet:
        waiting = [log.name for log in logs if log.recovery_after(killed_at) is None]
        return NotYet(waiting) if waiting else True

    with contextlib.suppress(AssertionError):  # a client that never recovers is a result
        await poll(recovered, killed_at + RECOVERY_TIMEOUT_S - time.monotonic())


async def poll(check: Callable[[], bool | NotYet], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while check() is not True:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {check()}")
        await asyncio.sleep(1)  # the clients' loops run meanwhile


def back_in_lease_set(run: BalancerRun, routers: Iterable[str]) -> bool | NotYet:
    """The named routers are established again and the floodfills serve every host."""
    states = {r["name"]: r.get("state") for r in run.status().get("routers", [])}
    down = {r: states.get(r) for r in routers if states.get(r) != "Established"}
    if down:
        return NotYet(f"not established: {down}")
    return multihomed_served(run, HOSTS)


async def kills_in_a_row(
    testnet: Testnet,
    run: BalancerRun,
    kills: int,
    stop_after_s: float | None,
    balancer: bool = False,
) -> list[dict[str, Any]]:
    """Kill a hosting router `kills` times in a row (or, with `balancer`, restart the
    balancer: SIGTERM, as a rollout does, then the same manifest and keys again)."""
    tunnel = await asyncio.to_thread(
        testnet.add_client_tunnel,
        TUNNEL_CLIENT,
        "to-failover",
        run.b32,
        TUNNEL_PORT,
        peer_options(testnet, TUNNEL_CLIENT),
    )
    streams = await published_session(
        testnet,
        lambda: stream_session(
            testnet.router(STREAM_CLIENT).sam, options=peer_options(testnet, STREAM_CLIENT)
        ),
    )
    datagrams = await published_session(
        testnet,
        lambda: datagram_session(
            testnet.router(DATAGRAM_CLIENT).sam, options=peer_options(testnet, DATAGRAM_CLIENT)
        ),
    )
    logs = {name: ClientLog(name) for name in ("SAM stream", "SAM datagram", "client tunnel")}
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(request_loop(
            logs["SAM stream"],
            lambda: http_via_sam(streams, run.b32, INDEX_PATH, timeout_s=REQUEST_TIMEOUT_S),
            stop,
        )),
        asyncio.create_task(request_loop(
            logs["client tunnel"],
            lambda: http_via_tunnel(tunnel, INDEX_PATH, timeout_s=REQUEST_TIMEOUT_S),
            stop,
        )),
        asyncio.create_task(datagram_loop(logs["SAM datagram"], datagrams, run.b32, stop)),
    ]  # fmt: skip
    rows = []
    try:
        await asyncio.sleep(60)  # every client's session is established before the first kill
        stop_at = None if stop_after_s is None else time.monotonic() + stop_after_s
        for number in range(kills):
            if stop_at is not None and time.monotonic() > stop_at:
                print(f"time is up after {number} kills", flush=True)
                break
            victim = "balancer" if balancer else HOSTS[number % len(HOSTS)]
            killed_at = time.monotonic()
            if balancer:
                await asyncio.to_thread(run.restart)
            else:
                await asyncio.to_thread(testnet.stop_router, victim)
            print(f"kill {number + 1}: {victim}", flush=True)
            await wait_recovered(logs.values(), killed_at)
            row: dict[str, Any] = {"kill": number + 1, "victim": victim}
            for name, log in logs.items():
                recovery = log.recovery_after(killed_at)
                row[name] = {
                    "recovery_s": None if recovery is None else round(recovery, 1),
                    "failed_meanwhile": log.failed_between(
                        killed_at, killed_at + (recovery or RECOVERY_TIMEOUT_S)
                    ),
                }
            rows.append(row)
            if not balancer:
                await asyncio.to_thread(testnet.start_router, victim)
            await asyncio.to_thread(
                wait_served,
                f"{victim} back in the LeaseSet",
                lambda v=victim: back_in_lease_set(run, HOSTS if balancer else [v]),
            )
            row["victim_back_after_s"] = round(time.monotonic() - killed_at, 1)
            print(f"  {row}", flush=True)
            await asyncio.sleep(SETTLE_S)
    finally:
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await streams.close()
        await datagrams.close()
    return rows


# --- the run ----------------------------------------------------------------------------------


def print_tables(result: dict[str, Any]) -> None:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    if result.get("downloads"):
        print()
        print(f"{'download':<14} {'age s':>6} {'victim':>6} {'completed':>9} {'seconds':>8} "
              f"{'stall before':>12} {'stall after kill':>16}")  # fmt: skip
        for name, row in result["downloads"].items():
            if "failure" in row:
                print(f"{name:<14} FAILED: {row['failure']}")
                continue
            print(
                f"{name:<14} {row['session_age_s']:>6.0f} {row['victim']:>6} "
                f"{'yes' if row['completed'] else 'NO':>9} {row['seconds']:>8.1f} "
                f"{row['longest_stall_before_kill_s']:>12.1f} "
                f"{row['longest_stall_after_kill_s']:>16.1f}"
            )
    if result.get("kills"):
        names = ["SAM stream", "SAM datagram", "client tunnel"]
        print()
        print(f"{'kill':>4} {'victim':>6} " + " ".join(f"{n + ' s (failed)':>24}" for n in names)
              + f" {'victim back s':>13}")  # fmt: skip
        for row in result["kills"]:
            cells = " ".join(
                f"{show(row[n]['recovery_s']) + ' (' + str(row[n]['failed_meanwhile']) + ')':>24}"
                for n in names
            )
            back = show(row.get("victim_back_after_s"))
            print(f"{row['kill']:>4} {row['victim']:>6} {cells} {back:>13}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--part", choices=["both", "download", "kills", "restarts"], default="both")
    parser.add_argument(
        "--kills", type=int, default=10, help="kills (or balancer restarts) in a row (10)"
    )
    parser.add_argument(
        "--kill-minutes", type=float, help="start no kill after this many minutes of them"
    )
    parser.add_argument(
        "--affinity",
        action="store_true",
        help=f"leaseSet.clientAffinity, with {PUBLISHER} publishing only",
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    routers = ROUTERS + 1 if args.affinity else ROUTERS
    try:
        check_host()
    except TestnetError as exc:
        print(f"bench_failover: {exc}", file=sys.stderr)
        return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    print(f"work directory: {work}", flush=True)
    testnet = Testnet(work / "testnet")
    started = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "benchmark": "failover",
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "parameters": {
            "routers": routers, "floodfills": FLOODFILLS, "hosts": HOSTS,
            "part": args.part, "client_affinity": args.affinity,
            "publisher": PUBLISHER if args.affinity else None,
            "inbound_per_router": INBOUND, "length": LENGTH, "file_bytes": FILE_BYTES,
            "kill_at_fraction": KILL_AT_FRACTION, "kills": args.kills,
            "recent_clients_kept": args.part == "restarts",
            "i2pd": testnet_version(),
        },
    }  # fmt: skip
    try:
        testnet.up(routers=routers, floodfills=FLOODFILLS, timeout=300)
        with (
            HttpBackend(testnet.bridge_address, size=FILE_BYTES) as http,
            UdpEchoBackend(testnet.bridge_address, reply_delay=0.15) as udp,
        ):
            ports = [
                {"name": "web", "port": 0,
                 "backend": {"host": http.address[0], "port": http.address[1]}},
                {"name": "echo", "port": 0, "protocol": "Datagram",
                 "backend": {"host": udp.address[0], "port": udp.address[1]}},
            ]  # fmt: skip
            document = destination_manifest(
                "failover",
                testnet,
                HOSTS,
                inbound=INBOUND,
                length=LENGTH,
                ports=ports,
                peerPolicy={"explicitPeers": [testnet.identity_hash(r) for r in PEERS]},
            )
            if args.affinity:
                document = with_affinity(document, testnet, PUBLISHER)
            with run_balancer(work / "balancer", testnet, document) as run:
                wait_served("the destination to be served", lambda: multihomed_served(run, HOSTS))
                if args.part in ("both", "download"):
                    result["downloads"] = {}
                    for name, age in SESSION_AGES_S.items():
                        row = asyncio.run(download_across_a_kill(testnet, run, http, age))
                        result["downloads"][name] = row
                        print(f"{name}: {row}", flush=True)
                        victim = row.get("victim")
                        if victim:
                            testnet.start_router(victim)
                            wait_served(
                                f"{victim} back", lambda v=victim: back_in_lease_set(run, [v])
                            )
                if args.part in ("both", "kills", "restarts"):
                    result["kills"] = asyncio.run(
                        kills_in_a_row(
                            testnet,
                            run,
                            args.kills,
                            None if args.kill_minutes is None else args.kill_minutes * 60,
                            balancer=args.part == "restarts",
                        )
                    )
                run.assert_running()
    finally:
        testnet.down()
    print_tables(result)
    path = write_results("failover", result)
    print(f"results: {path}")
    failed = any(
        "failure" in r or not r.get("completed") for r in result.get("downloads", {}).values()
    )
    failed |= any(
        row[n]["recovery_s"] is None
        for row in result.get("kills", [])
        for n in ("SAM stream", "SAM datagram", "client tunnel")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
