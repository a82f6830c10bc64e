"""What the e2e tests and benchmarks do as I2P clients: HTTP/1.1 over a SAM stream or
through an i2pd client tunnel, and rounds of numbered datagrams through a SAM DATAGRAM
session, with an echo for the other end.

HTTP is timed from the start of the connection to the response's first byte and to its
end; one request per connection, and the body is read by its Content-Length, never to EOF:
an i2pd SAM stream may stay open after the peer closed (see sam.py), and closing our side
early would end the stream (SAM streams do not half-close).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import statistics
import time
from collections.abc import Mapping

from i2p_multihome.wire.structures import Destination
from i2p_multihome_dev.sam import DatagramSession, StreamSession, stream_target

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?")


class HttpClientError(Exception):
    """The server's answer was not an HTTP response this client reads."""


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # names lowercased
    body: bytes
    connect_s: float  # until the connection was open (SAM: STREAM STATUS OK)
    first_byte_s: float  # until the response's first byte, from the start of the connection
    total_s: float  # until the last byte of the body
    # The longest wait between consecutive reads, from the response's first byte to its last:
    # how long a download stalled at worst.
    longest_gap_s: float = 0.0


def request_bytes(method: str, path: str, host: str, body: bytes) -> bytes:
    if not re.fullmatch(r"[A-Z]{1,16}", method) or not re.fullmatch(r"/[!-~]{0,2000}", path):
        raise ValueError(f"cannot send {method} {path!r}")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: i2p-multihome-dev\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of a response head (through the blank line)."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise HttpClientError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HttpClientError(f"malformed header line {line[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(status.group(1)), headers


async def http_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    started: float,
    connect_s: float,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """Send one request on an open connection and read the whole response."""
    writer.write(request)
    await writer.drain()
    first = await reader.read(1)
    if not first:
        raise HttpClientError("the connection closed before any response")
    first_byte_s = time.monotonic() - started
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpClientError(f"response head longer than {MAX_HEADER} bytes") from None
    except asyncio.IncompleteReadError as exc:
        raise HttpClientError(f"the connection closed in the response head: {exc}") from None
    status, headers = parse_head(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpClientError("chunked responses are not read here")
    try:
        length = int(headers["content-length"])
    except (KeyError, ValueError):
        raise HttpClientError("response without a Content-Length") from None
    if not 0 <= length <= max_body:
        raise HttpClientError(f"response body of {length} bytes exceeds {max_body}")
    body = bytearray()
    last_read = started + first_byte_s
    longest_gap_s = 0.0
    while len(body) < length:
        chunk = await reader.read(min(_READ_SIZE, length - len(body)))
        if not chunk:
            raise HttpClientError(f"the connection closed after {len(body)} of {length} body bytes")
        now = time.monotonic()
        longest_gap_s = max(longest_gap_s, now - last_read)
        last_read = now
        body += chunk
    return HttpResponse(
        status=status,
        headers=headers,
        body=bytes(body),
        connect_s=connect_s,
        first_byte_s=first_byte_s,
        total_s=time.monotonic() - started,
        longest_gap_s=longest_gap_s,
    )


async def http_via_tunnel(
    address: tuple[str, int],
    path: str,
    method: str = "GET",
    body: bytes = b"",
    timeout_s: float = 180.0,
) -> HttpResponse:
    """One request through an i2pd client tunnel (a plain TCP connection to its port)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(*address, limit=MAX_HEADER)
        try:
            request = request_bytes(method, path, f"{address[0]}:{address[1]}", body)
            return await http_exchange(reader, writer, request, started, time.monotonic() - started)
        finally:
            await _close(writer)


async def http_via_sam(
    session: StreamSession,
    destination: str,
    path: str,
    method: str = "GET",
    body: bytes = b"",
    timeout_s: float = 180.0,
) -> HttpResponse:
    """One request over a SAM stream from `session` to `destination` (b32 or base64)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        reader, writer = await session.connect(destination, timeout_s=timeout_s)
        try:
            target = stream_target(destination)
            host = target if target.endswith(".i2p") else "destination.i2p"
            request = request_bytes(method, path, host, body)
            return await http_exchange(reader, writer, request, started, time.monotonic() - started)
        finally:
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# ----------------------------------------------------------------------------- datagrams


@dataclasses.dataclass(frozen=True)
class DatagramRound:
    """One round of numbered datagrams sent to an echo: what came back, and how fast."""

    sent: int
    echoed: int  # distinct datagrams of this round that came back
    round_trips_s: tuple[float, ...]  # of the first echo of each, in send order
    strangers: int  # datagrams that were not an echo of this round

    @property
    def median_round_trip_s(self) -> float | None:
        return statistics.median(self.round_trips_s) if self.round_trips_s else None


def _numbered(round_id: bytes, number: int, size: int) -> bytes:
    head = round_id + b":" + str(number).encode() + b":"
    return head + b"." * max(0, size - len(head))


async def datagram_round(
    session: DatagramSession,
    echo: Destination,
    count: int = 100,
    interval_s: float = 0.05,
    size: int = 64,
    settle_s: float = 15.0,
) -> DatagramRound:
    """Send `count` numbered datagrams of `size` bytes to `echo`, one per `interval_s`, then
    wait up to `settle_s` after the last for the echoes still on their way."""
    round_id = secrets.token_hex(4).encode()
    sent_at: dict[int, float] = {}
    back: dict[int, float] = {}
    strangers = 0

    def take(received: list[tuple[bytes, float]]) -> None:
        nonlocal strangers
        for payload, at in received:
            parts = payload.split(b":", 2)
            number = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1
            if parts[0] != round_id or number not in sent_at:
                strangers += 1
            elif number not in back:
                back[number] = at - sent_at[number]

    for number in range(count):
        sent_at[number] = time.monotonic()
        session.send(echo, _numbered(round_id, number, size))
        await asyncio.sleep(interval_s)
        take([(d.payload, d.received_at) for d in session.drain()])
    deadline = time.monotonic() + settle_s
    while len(back) < count and (left := deadline - time.monotonic()) > 0:
        try:
            datagram = await session.receive(left)
        except TimeoutError:
            break
        take([(datagram.payload, datagram.received_at)])
    return DatagramRound(
        sent=count,
        echoed=len(back),
        round_trips_s=tuple(back[n] for n in sorted(back)),
        strangers=strangers,
    )


class DatagramEcho:
    """Answers every datagram a SAM DATAGRAM session receives with the same payload, to its
    sender, until closed; counts what it saw."""

    def __init__(self, session: DatagramSession) -> None:
        self.session = session
        self.received = 0
        self.senders: set[str] = set()
        self._task = asyncio.create_task(self._run(), name=f"datagram-echo-{session.id}")

    async def _run(self) -> None:
        while True:
            try:
                datagram = await self.session.receive(3600.0)
            except TimeoutError:
                continue
            self.received += 1
            self.senders.add(datagram.source.b32)
            self.session.send(datagram.source, datagram.payload)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
