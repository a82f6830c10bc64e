"""Backends that I2P services forward to in e2e tests and benchmarks: an HTTP server with a
deterministic file and an upload endpoint, and a UDP echo. Each runs in a thread of its
own, so it serves while the test's event loop or a blocking wait runs.

A router reaches them only when they listen on the testnet's bridge address
(`Testnet.bridge_address`) or on 0.0.0.0 in the root namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import logging
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from i2p_multihome.logs import fields

log = logging.getLogger(__name__)

ONE_MIB = 1 << 20
INDEX_PATH = "/"
FILE_PATH = "/file"
UPLOAD_PATH = "/upload"
# GET /drip/SECONDS: DRIP_BYTES_PER_S deterministic bytes each second for SECONDS seconds, a
# download slow enough to outlive tunnels and leases.
DRIP_PATH = "/drip/"
DRIP_BYTES_PER_S = 1024
MAX_DRIP_S = 3 * 3600
MAX_UPLOAD = 64 * ONE_MIB
_UDP_MAX = 65535


def deterministic_bytes(size: int, seed: bytes = b"i2p-multihome test file") -> bytes:
    """`size` bytes that look random and are the same on every run: SHA-256 of seed and a
    counter, block after block."""
    blocks = (
        hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range((size + 31) // 32)
    )
    return b"".join(blocks)[:size]


def drip_content(seconds: int) -> bytes:
    """The body of GET /drip/SECONDS."""
    return deterministic_bytes(seconds * DRIP_BYTES_PER_S, b"i2p-multihome drip")


INDEX_PAGE = (
    b"<!doctype html>\n<title>i2p-multihome</title>\n"
    b"<p>Served by one I2P destination on several routers at once.</p>\n"
)


class _Closing:
    """A backend used as a context manager: closed on leaving the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        if self.path == INDEX_PATH:
            self._reply(200, INDEX_PAGE, "text/html")
        elif self.path == FILE_PATH:
            self._reply(200, self.server.content, "application/octet-stream")
        elif self.path.startswith(DRIP_PATH) and self.path[len(DRIP_PATH) :].isdigit():
            self._drip(int(self.path[len(DRIP_PATH) :]))
        else:
            self._reply(404, b"not found\n")

    def do_POST(self) -> None:
        if self.path != UPLOAD_PATH:
            self._reply(404, b"not found\n")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, b"Content-Length required\n")
            return
        if not 0 <= length <= MAX_UPLOAD:
            self._reply(413, b"too large\n")
            return
        digest = hashlib.sha256()
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                return  # the client went away mid-body
            digest.update(chunk)
            remaining -= len(chunk)
        with self.server.lock:
            self.server.uploads.append(digest.hexdigest())
        self._reply(200, (digest.hexdigest() + "\n").encode())

    def _drip(self, seconds: int) -> None:
        if not 0 < seconds <= MAX_DRIP_S:
            self._reply(400, b"seconds out of range\n")
            return
        body = drip_content(seconds)
        with self.server.lock:
            self.server.served += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        started = time.monotonic()
        for second in range(seconds):
            time.sleep(max(0.0, started + second - time.monotonic()))
            self.wfile.write(body[second * DRIP_BYTES_PER_S : (second + 1) * DRIP_BYTES_PER_S])
            self.wfile.flush()

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        # Counted before sending, so a client that has the whole response sees the count.
        with self.server.lock:
            self.server.served += 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http backend", extra=fields(client=self.client_address[0], line=format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The server tunnel opens a connection per stream; a deep backlog keeps parallel
    # fetches from being refused.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], content: bytes) -> None:
        super().__init__(address, _Handler)
        self.content = content
        self.lock = threading.Lock()
        self.uploads: list[str] = []
        self.served = 0


class HttpBackend(_Closing):
    """GET /: a small HTML page (INDEX_PAGE); GET /file: `size` deterministic bytes
    (`content`, `content_sha256`); POST /upload: answers the SHA-256 (hex) of the body it
    received. Responses carry Content-Length."""

    def __init__(self, host: str, port: int = 0, size: int = ONE_MIB) -> None:
        self.content = deterministic_bytes(size)
        self.content_sha256 = hashlib.sha256(self.content).hexdigest()
        self._server = _Server((host, port), self.content)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-backend", daemon=True
        )
        self._thread.start()
        log.info("http backend listening", extra=fields(address=self.address, size=size))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    @property
    def served(self) -> int:
        """Responses sent or being sent."""
        with self._server.lock:
            return self._server.served

    @property
    def uploads(self) -> list[str]:
        """SHA-256 (hex) of every complete upload, in order."""
        with self._server.lock:
            return list(self._server.uploads)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class DigestBackend(_Closing):
    """A TCP service that answers only once the client has finished sending: it reads to
    EOF, then writes the SHA-256 (hex) of everything it read and closes. Through a stream,
    an answer at all shows a half-close: the client's CLOSE reached it as EOF while the
    other direction stayed open."""

    def __init__(self, host: str, port: int = 0) -> None:
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answered = 0
        self._thread = threading.Thread(target=self._run, name="digest-backend", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.getsockname()[:2]
        return (str(host), int(port))

    @property
    def answered(self) -> int:
        with self._lock:
            return self._answered

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(120.0)
            digest = hashlib.sha256()
            while chunk := conn.recv(65536):
                digest.update(chunk)
            conn.sendall((digest.hexdigest() + "\n").encode())
            with self._lock:
                self._answered += 1

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=10)


class UdpEchoBackend(_Closing):
    """Sends every datagram back to where it came from, `reply_delay` seconds later.

    A delay matters behind an i2pd 2.45.1 udpserver tunnel: it forwards what the backend
    sends within 100 ms of the last datagram of that peer as a raw datagram, without the
    sender's identity (I2P_UDP_REPLIABLE_DATAGRAM_INTERVAL, UDPTunnel.h 30; UDPSession::
    HandleReceived, UDPTunnel.cpp 118-139), and a SAM DATAGRAM session drops raw datagrams.
    With a delay above 100 ms and requests further apart than delay + 100 ms, every answer
    is repliable.
    """

    def __init__(self, host: str, port: int = 0, reply_delay: float = 0.0) -> None:
        self.reply_delay = reply_delay
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._received = 0
        self._thread = threading.Thread(target=self._run, name="udp-echo", daemon=True)
        self._thread.start()
        log.info(
            "udp echo backend listening",
            extra=fields(address=self.address, reply_delay=reply_delay),
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return (str(host), int(port))

    @property
    def received(self) -> int:
        with self._lock:
            return self._received

    def _run(self) -> None:
        due: list[tuple[float, int, bytes, tuple[str, int]]] = []
        sequence = 0
        while not self._stop.is_set():
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, payload, peer = heapq.heappop(due)
                with contextlib.suppress(OSError):
                    self._sock.sendto(payload, peer)
            wait = min(0.2, due[0][0] - now) if due else 0.2
            self._sock.settimeout(max(wait, 0.001))
            try:
                payload, peer = self._sock.recvfrom(_UDP_MAX)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with self._lock:
                self._received += 1
            sequence += 1
            heapq.heappush(due, (time.monotonic() + self.reply_delay, sequence, payload, peer))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    """`python3 -m i2p_multihome_dev.backends --host H --http-port P --udp-port Q`: both
    backends until SIGTERM (what `demo up` leaves running behind the demo destination)."""
    parser = argparse.ArgumentParser(prog="python3 -m i2p_multihome_dev.backends")
    parser.add_argument("--host", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--udp-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with HttpBackend(args.host, args.http_port), UdpEchoBackend(args.host, args.udp_port):
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
