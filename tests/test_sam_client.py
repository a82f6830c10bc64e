"""The test bed's SAM client framing and its HTTP/UDP helpers, without a router: SAM replies
and datagram frames as i2pd 2.45.1 writes them (SAM.cpp/SAM.h), the backends on loopback.
The client against real routers is e2e/test_sam.py."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome_dev.backends import (
    DRIP_BYTES_PER_S,
    DRIP_PATH,
    FILE_PATH,
    ONE_MIB,
    UPLOAD_PATH,
    HttpBackend,
    UdpEchoBackend,
    deterministic_bytes,
    drip_content,
)
from i2p_multihome_dev.clients import (
    HttpClientError,
    http_via_tunnel,
    parse_head,
    request_bytes,
)
from i2p_multihome_dev.sam import (
    MAX_DATAGRAM,
    SamError,
    datagram_frame,
    explicit_peers_options,
    format_command,
    parse_destination,
    parse_forwarded_datagram,
    parse_reply,
    stream_target,
)
from seeded import seeded_random

DEST = DestinationKeys.generate(seeded_random(b"sam")).destination


def test_replies_as_i2pd_writes_them() -> None:
    hello = parse_reply("HELLO REPLY RESULT=OK VERSION=3.1")
    assert (hello.topic, hello.result, hello.values["VERSION"]) == ("HELLO REPLY", "OK", "3.1")
    error = parse_reply('SESSION STATUS RESULT=I2P_ERROR MESSAGE="Unknown STYLE"\n')
    assert error.topic == "SESSION STATUS"
    assert (error.result, error.values["MESSAGE"]) == ("I2P_ERROR", "Unknown STYLE")
    naming = parse_reply(f"NAMING REPLY RESULT=OK NAME=ME VALUE={DEST.b64}")
    assert parse_destination(naming.values["VALUE"]) == DEST
    assert parse_reply("STREAM STATUS RESULT=CANT_REACH_PEER").result == "CANT_REACH_PEER"
    assert parse_reply('X Y MESSAGE="a \\"quoted\\" word"').values["MESSAGE"] == 'a "quoted" word'


@pytest.mark.parametrize("line", ["", "HELLO", " REPLY"])
def test_unreadable_replies_are_sam_errors(line: str) -> None:
    with pytest.raises(SamError):
        parse_reply(line)


def test_sam_error_names_result_and_message() -> None:
    error = SamError("SESSION CREATE", "I2P_ERROR", "Unknown STYLE")
    assert (error.result, error.message) == ("I2P_ERROR", "Unknown STYLE")
    assert str(error) == "SESSION CREATE: RESULT=I2P_ERROR MESSAGE='Unknown STYLE'"
    assert str(SamError("HELLO")) == "HELLO: no RESULT"


def test_commands_refuse_what_i2pd_would_split() -> None:
    assert format_command("NAMING LOOKUP", {"NAME": "ME"}) == b"NAMING LOOKUP NAME=ME\n"
    for value in ("two words", 'quo"te', "line\nbreak", ""):
        with pytest.raises(ValueError, match="cannot be sent"):
            format_command("SESSION CREATE", {"ID": value})
    with pytest.raises(ValueError, match="cannot be sent"):
        format_command("SESSION CREATE", {"A=B": "c"})


def test_session_status_destination_is_the_public_part_of_the_keys() -> None:
    """SESSION STATUS DESTINATION= is the private key blob: destination, then keys."""
    keys_blob = DEST.raw + bytes(256) + bytes(32)
    assert parse_destination(b64encode(keys_blob)) == DEST
    with pytest.raises(ValueError, match="not a base64 destination"):
        parse_destination("not base64!")


def test_stream_targets_get_the_suffix_i2pd_resolves() -> None:
    label = DEST.b32.removesuffix(".b32.i2p")
    assert stream_target(label) == DEST.b32
    assert stream_target(DEST.b32) == DEST.b32
    assert stream_target(DEST.b64) == DEST.b64
    with pytest.raises(ValueError):
        stream_target("a" * 51 + "1")  # '1' is not base32
    with pytest.raises(ValueError):
        stream_target("example.i2p")


def test_datagram_frame_takes_only_a_full_destination() -> None:
    frame = datagram_frame("tb1", DEST.b64, b"payload\nwith newline")
    assert frame == f"3.0 tb1 {DEST.b64}\n".encode() + b"payload\nwith newline"
    with pytest.raises(ValueError, match="not a base64 destination"):
        datagram_frame("tb1", DEST.b32, b"x")  # i2pd would send it nowhere
    header = len(f"3.0 tb1 {DEST.b64}\n")
    datagram_frame("tb1", DEST.b64, bytes(MAX_DATAGRAM - header))
    with pytest.raises(ValueError, match="exceeds"):
        datagram_frame("tb1", DEST.b64, bytes(MAX_DATAGRAM - header + 1))


@given(st.binary(max_size=2000))
def test_forwarded_datagrams_round_trip(payload: bytes) -> None:
    sender, got = parse_forwarded_datagram(DEST.b64.encode() + b"\n" + payload)
    assert (sender, got) == (DEST, payload)


@given(st.binary(max_size=600))
def test_malformed_forwarded_datagrams_are_value_errors(data: bytes) -> None:
    try:
        sender, _ = parse_forwarded_datagram(data)
    except ValueError:
        return
    assert data.startswith(sender.b64.encode())


def test_each_retry_of_an_explicit_peers_session_is_led_by_another_peer() -> None:
    # i2pd 2.45.1 puts a one-hop explicitPeers tunnel through the list's first peer only.
    leads = [explicit_peers_options(["a", "b", "c"], t)["explicitPeers"] for t in range(4)]
    assert leads == ["a,b,c", "b,c,a", "c,a,b", "a,b,c"]
    assert explicit_peers_options([], 3)["explicitPeers"] == ""
    assert explicit_peers_options(["a"])["inbound.length"] == "1"


def test_deterministic_file_is_the_same_every_run() -> None:
    data = deterministic_bytes(ONE_MIB)
    assert len(data) == ONE_MIB
    assert data == deterministic_bytes(ONE_MIB)
    assert data != deterministic_bytes(ONE_MIB, b"other seed")
    assert deterministic_bytes(100) == data[:100]
    assert (
        hashlib.sha256(deterministic_bytes(64)).hexdigest()
        == hashlib.sha256(
            hashlib.sha256(b"i2p-multihome test file" + bytes(8)).digest()
            + hashlib.sha256(b"i2p-multihome test file" + (1).to_bytes(8, "big")).digest()
        ).hexdigest()
    )


def test_response_heads() -> None:
    status, headers = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\n")
    assert status == 200
    assert headers == {"content-length": "5", "x-a": "b"}
    for bad in (b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"):
        with pytest.raises(HttpClientError):
            parse_head(bad)
    assert request_bytes("POST", "/upload", "h", b"xy").endswith(b"Content-Length: 2\r\n\r\nxy")
    with pytest.raises(ValueError):
        request_bytes("GET", "no-slash", "h", b"")


async def test_http_backend_serves_the_file_and_hashes_uploads() -> None:
    with HttpBackend("127.0.0.1") as backend:
        got = await http_via_tunnel(backend.address, FILE_PATH, timeout_s=30)
        assert got.status == 200
        assert got.body == backend.content == deterministic_bytes(ONE_MIB)
        assert got.headers["content-length"] == str(ONE_MIB)
        assert 0 <= got.connect_s <= got.first_byte_s <= got.total_s
        upload = deterministic_bytes(300_000, b"up")
        posted = await http_via_tunnel(backend.address, UPLOAD_PATH, "POST", upload, 30)
        assert posted.body.decode().strip() == hashlib.sha256(upload).hexdigest()
        missing = await http_via_tunnel(backend.address, "/nothing", timeout_s=30)
        assert missing.status == 404
        assert backend.served == 3
        assert backend.uploads == [hashlib.sha256(upload).hexdigest()]


async def test_a_drip_download_paces_its_body_and_the_client_times_the_gaps() -> None:
    with HttpBackend("127.0.0.1") as backend:
        got = await http_via_tunnel(backend.address, f"{DRIP_PATH}3", timeout_s=30)
        assert got.status == 200
        assert got.body == drip_content(3)
        assert len(got.body) == 3 * DRIP_BYTES_PER_S
        # One chunk a second after the head: the body takes about two seconds, and the
        # client saw gaps of about a second between them.
        assert 1.8 <= got.total_s - got.first_byte_s <= 5.0
        assert 0.8 <= got.longest_gap_s <= 3.0
        for bad in ("0", "999999", "x"):
            refused = await http_via_tunnel(backend.address, f"{DRIP_PATH}{bad}", timeout_s=30)
            assert refused.status in (400, 404)


async def test_http_client_refuses_a_response_without_length() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HttpClientError, match="Content-Length"):
            await http_via_tunnel(("127.0.0.1", port), "/", timeout_s=10)


def test_udp_echo_answers_after_its_delay() -> None:
    with (
        UdpEchoBackend("127.0.0.1", reply_delay=0.15) as echo,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(5)
        started = time.monotonic()
        for n in range(3):
            client.sendto(b"ping %d" % n, echo.address)
        answers = sorted(client.recvfrom(2048)[0] for _ in range(3))
        assert answers == [b"ping 0", b"ping 1", b"ping 2"]
        assert time.monotonic() - started >= 0.15
        assert echo.received == 3
