"""RouterSession against the in-process fake router: real I2CP bytes over loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fakerouter import (
    I2PD_258_API_VERSION,
    MALFORMED_KINDS,
    FakeRouter,
    eventually,
    make_leases,
)
from i2p_multihome.i2cp.connection import ConnectionClosed
from i2p_multihome.i2cp.session import Endpoint, RouterSession, SessionLost, SessionRefused
from i2p_multihome.wire import messages
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease, Lease2, LeaseSet2
from i2p_multihome_dev.pki import write_pki

CLIENT_VERSION = "0.9.62"
OPTIONS = {"inbound.quantity": "2", "outbound.quantity": "2", "i2cp.leaseSetEncType": "4"}

RouterFactory = Callable[..., Awaitable[FakeRouter]]


@pytest.fixture
def keys() -> DestinationKeys:
    return DestinationKeys.generate()


@pytest.fixture
async def routers() -> AsyncIterator[RouterFactory]:
    started: list[FakeRouter] = []

    async def start(name: str = "r1", **kwargs: Any) -> FakeRouter:
        router = await FakeRouter(name, **kwargs).start()
        started.append(router)
        return router

    yield start
    for router in started:
        await router.close()


def lease_set_for(keys: DestinationKeys, leases: tuple[Lease, ...]) -> LeaseSet2:
    published = int(time.time())
    lease2s = tuple(
        Lease2(lease.gateway, lease.tunnel_id, lease.end_ms // 1000) for lease in leases
    )
    latest = max((lease.end_s for lease in lease2s), default=published + 600)
    return LeaseSet2.build(
        keys.destination, published, latest - published, (keys.encryption_key,), lease2s, keys.sign
    )


class Client:
    """A RouterSession plus its run() task; records lease requests, optionally answers."""

    def __init__(self, session: RouterSession, keys: DestinationKeys, answer: bool = True):
        self.session = session
        self.keys = keys
        self.answer = answer
        self.lease_requests: list[tuple[Lease, ...]] = []
        self.task: asyncio.Task[None] | None = None

    async def on_lease_request(self, session: RouterSession, leases: tuple[Lease, ...]) -> None:
        self.lease_requests.append(leases)
        if self.answer:
            await session.send_lease_set(lease_set_for(self.keys, leases))

    async def on_payload(self, session: RouterSession, message: messages.MessagePayload) -> None:
        pass

    def start(self) -> Client:
        self.task = asyncio.create_task(self.session.run(self.on_lease_request, self.on_payload))
        return self

    async def ended_with(self, within_s: float = 3.0) -> BaseException | None:
        assert self.task is not None
        done, _ = await asyncio.wait({self.task}, timeout=within_s)
        assert done, f"session {self.session.name} still running after {within_s}s"
        return self.task.exception()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.session.close()


async def open_session(
    router: FakeRouter,
    keys: DestinationKeys,
    *,
    endpoint: Endpoint | None = None,
    heartbeat_s: float = 10.0,
    options: dict[str, str] | None = None,
) -> RouterSession:
    session = RouterSession(
        router.name,
        endpoint or router.endpoint,
        keys,
        heartbeat_s=heartbeat_s,
        handshake_timeout_s=2.0,
    )
    await session.connect(CLIENT_VERSION)
    await session.create(OPTIONS if options is None else options)
    return session


def warnings_from(caplog: pytest.LogCaptureFixture, logger_prefix: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith(logger_prefix) and r.levelno >= logging.WARNING
    ]


def log_text(record: logging.LogRecord) -> str:
    return f"{record.getMessage()} {getattr(record, 'fields', {})}"


# --- handshake and session creation ------------------------------------------------------


async def test_handshake_and_create_session(routers: RouterFactory, keys: DestinationKeys) -> None:
    router = await routers()
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=2.0)

    version = await session.connect(CLIENT_VERSION)
    session_id = await session.create(OPTIONS)

    assert version == CLIENT_VERSION  # i2pd < 2.58 echoes the client's version
    assert session.router_version == CLIENT_VERSION
    assert session.established
    [connection] = router.sessions
    assert connection.session_id == session_id == session.session_id
    assert connection.client_version == CLIENT_VERSION
    assert connection.destination == keys.destination
    assert connection.options == OPTIONS
    [create] = router.creates
    assert create.config.destination.verify(create.config.signed_part(), create.config.signature)
    assert abs(create.config.date_ms - time.time() * 1000) < 5000
    assert router.errors == []
    await session.close()


async def test_router_with_own_api_version(routers: RouterFactory, keys: DestinationKeys) -> None:
    router = await routers(version=I2PD_258_API_VERSION)
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=2.0)
    assert await session.connect(CLIENT_VERSION) == I2PD_258_API_VERSION
    await session.close()


@pytest.mark.parametrize(
    ("status", "name"), [(messages.STATUS_REFUSED, "refused"), (messages.STATUS_INVALID, "invalid")]
)
async def test_refused_session_raises_with_status_name(
    routers: RouterFactory, keys: DestinationKeys, status: int, name: str
) -> None:
    router = await routers(create_status=status)
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=2.0)
    await session.connect(CLIENT_VERSION)

    with pytest.raises(SessionRefused, match=f"'{name}'"):
        await session.create(OPTIONS)

    assert not session.established
    assert session.session_id is None
    await eventually(lambda: router.connections[0].closed, what="router sees the close")


async def test_the_no_session_id_is_given_back_and_the_next_session_gets_leases(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    """i2pd may draw 0xFFFF as a session id; it then never asks that session for a LeaseSet."""
    router = await routers(session_ids=[messages.NO_SESSION], leases=make_leases("r1", 2))
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=2.0)
    await session.connect(CLIENT_VERSION)

    with pytest.raises(SessionRefused, match="0xFFFF"):
        await session.create(OPTIONS)

    assert session.session_id is None and not session.established
    assert [d.session_id for d in router.destroys] == [messages.NO_SESSION]
    await eventually(lambda: router.connections[0].closed, what="router sees the close")
    assert router.requests == []

    client = Client(await open_session(router, keys), keys)
    client.start()
    await eventually(lambda: len(router.lease_sets) == 1, what="the new session's LeaseSet")
    assert client.session.session_id != messages.NO_SESSION
    await client.stop()


async def test_duplicate_destination_is_refused_like_i2pd(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers()
    first = await open_session(router, keys)

    second = RouterSession("r1-again", router.endpoint, keys, handshake_timeout_s=2.0)
    await second.connect(CLIENT_VERSION)
    with pytest.raises(SessionRefused, match="'invalid'"):
        await second.create(OPTIONS)

    assert first.established
    await first.close()


async def test_handshake_times_out_on_a_silent_router(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers()
    router.hang()
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(SessionLost, match="no SetDate within"):
        await session.connect(CLIENT_VERSION)

    assert time.monotonic() - started < 2.0
    assert not session.established


@pytest.mark.parametrize("with_password", [True, False])
async def test_credentials_only_in_getdate_when_set(
    routers: RouterFactory, keys: DestinationKeys, with_password: bool
) -> None:
    router = await routers()
    endpoint = Endpoint(
        "127.0.0.1",
        router.port,
        username="balancer",
        password="s3cret" if with_password else None,
    )
    session = RouterSession("r1", endpoint, keys, handshake_timeout_s=2.0)
    await session.connect(CLIENT_VERSION)

    expected = {"i2cp.username": "balancer", "i2cp.password": "s3cret"} if with_password else {}
    assert router.connections[0].getdate_options == expected
    assert "s3cret" not in repr(endpoint)
    await session.close()


async def test_tls_endpoint_speaks_i2cp_over_tls(
    routers: RouterFactory, keys: DestinationKeys, tmp_path: Path
) -> None:
    pki = write_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.serving_cert, pki.serving_key)
    router = await routers(ssl_context=context)

    session = RouterSession(
        "r1", Endpoint("127.0.0.1", router.port, tls=True), keys, handshake_timeout_s=2.0
    )
    await session.connect(CLIENT_VERSION)
    await session.create({"inbound.quantity": "1"})
    assert session.established
    assert router.connections[0].protocol_byte_read
    await session.close()

    # Plain TCP to a TLS port is no I2CP: the handshake fails instead of hanging.
    plain = RouterSession("r2", Endpoint("127.0.0.1", router.port), keys, handshake_timeout_s=1.0)
    with pytest.raises((SessionLost, ConnectionClosed)):
        await plain.connect(CLIENT_VERSION)
    await plain.close()


async def test_no_credentials_no_mapping(routers: RouterFactory, keys: DestinationKeys) -> None:
    router = await routers()
    session = RouterSession("r1", router.endpoint, keys, handshake_timeout_s=2.0)
    await session.connect(CLIENT_VERSION)
    [getdate] = router.messages(messages.GetDate)
    assert getdate.options == {}
    await session.close()


# --- running sessions --------------------------------------------------------------------


async def test_lease_request_answered_with_signed_lease_set(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    leases = make_leases("r1", 3)
    router = await routers(leases=leases)
    client = Client(await open_session(router, keys), keys).start()

    [request] = router.requests
    answer = await asyncio.wait_for(request.answered, 2.0)

    assert client.lease_requests == [leases]
    assert answer.signature_ok
    assert answer.answered_after_s is not None and answer.answered_after_s < 1.0
    assert answer.gateways == {lease.gateway for lease in leases}
    assert [k.crypto_type for k in answer.private_keys] == [4, 0]
    assert router.missed_deadlines == []
    await client.stop()


async def test_unanswered_lease_request_ends_session_like_i2pd(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers(leases=make_leases("r1", 2), lease_deadline_s=0.3)
    client = Client(await open_session(router, keys), keys, answer=False).start()

    error = await client.ended_with(3.0)

    assert isinstance(error, SessionLost)
    assert len(router.missed_deadlines) == 1
    assert len(client.lease_requests) == 1


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
async def test_malformed_router_input_ends_only_that_session(
    routers: RouterFactory,
    keys: DestinationKeys,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    bad_router = await routers("bad")
    good_router = await routers("good")
    other_keys = DestinationKeys.generate()
    bad = Client(await open_session(bad_router, keys), keys).start()
    good = Client(await open_session(good_router, other_keys), other_keys).start()
    await asyncio.sleep(0.05)
    good_session_id = good.session.session_id

    await bad_router.send_malformed(kind)
    error = await bad.ended_with(3.0)

    assert isinstance(error, SessionLost), error
    assert not bad.session.established
    await eventually(lambda: bad_router.connections[0].closed, what="bad connection closed")
    warnings = warnings_from(caplog, "i2p_multihome.i2cp")
    assert len(warnings) == 1, [log_text(r) for r in warnings]
    text = log_text(warnings[0])
    assert "dropping connection" in text
    assert f"127.0.0.1:{bad_router.port}" in text
    expected_detail = {
        "short_frame": "middle of a frame",
        "unknown_type": "type 99",
        "oversize_length": "exceeds 65535",
        "lying_lease_count": "5 leases",
    }[kind]
    assert expected_detail in text

    # The other session never noticed: still the same session, still answering.
    [request] = await good_router.request_leases(make_leases("good", 2))
    answer = await asyncio.wait_for(request.answered, 2.0)
    assert answer.signature_ok
    assert good.session.established
    assert good.session.session_id == good_session_id
    assert good.task is not None and not good.task.done()
    assert len(good_router.connections) == 1
    await good.stop()
    await bad.stop()


async def test_router_disconnect_message_ends_session(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers()
    client = Client(await open_session(router, keys), keys).start()
    await router.disconnect("shutting down")
    error = await client.ended_with()
    assert isinstance(error, SessionLost)
    assert "shutting down" in str(error)


async def test_router_crash_ends_session(routers: RouterFactory, keys: DestinationKeys) -> None:
    router = await routers()
    client = Client(await open_session(router, keys), keys).start()
    await router.die()
    error = await client.ended_with()
    assert isinstance(error, SessionLost)
    assert not client.session.established


async def test_heartbeat_keeps_a_quiet_router_and_drops_a_hung_one(
    routers: RouterFactory, keys: DestinationKeys, caplog: pytest.LogCaptureFixture
) -> None:
    router = await routers()
    client = Client(await open_session(router, keys, heartbeat_s=0.2), keys).start()

    # Quiet but healthy: GetDate is answered, the session stays.
    await eventually(lambda: len(router.messages(messages.GetDate)) >= 3, 3.0, "heartbeat GetDates")
    assert client.task is not None and not client.task.done()
    assert client.session.established

    router.hang()
    hung_at = time.monotonic()
    error = await client.ended_with(3.0)

    assert isinstance(error, SessionLost)
    assert 0.3 < time.monotonic() - hung_at < 1.5  # 2 x heartbeat of silence, checked every 0.1s
    assert any("stopped answering" in r.getMessage() for r in caplog.records)


async def test_destroy_sends_destroy_and_waits_for_destroyed(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers(destroy_reply_delay_s=0.3)
    session = await open_session(router, keys)
    session_id = session.session_id

    started = time.monotonic()
    await session.destroy()

    assert time.monotonic() - started >= 0.3  # it waited for the router's answer
    assert [m.session_id for m in router.destroys] == [session_id]
    assert not session.established
    assert router.errors == []


async def test_destroy_while_running(routers: RouterFactory, keys: DestinationKeys) -> None:
    """The balancer destroys sessions whose run() loop is reading: no second reader."""
    router = await routers(destroy_reply_delay_s=0.2)
    client = Client(await open_session(router, keys), keys).start()
    await asyncio.sleep(0.05)
    session_id = client.session.session_id

    started = time.monotonic()
    await client.session.destroy()

    assert time.monotonic() - started >= 0.2
    assert [m.session_id for m in router.destroys] == [session_id]
    error = await client.ended_with()
    assert isinstance(error, SessionLost)
    assert not client.session.established


async def test_destroy_gives_up_on_a_hung_router(
    routers: RouterFactory, keys: DestinationKeys
) -> None:
    router = await routers()
    session = await open_session(router, keys)
    router.hang()
    started = time.monotonic()
    await session.destroy()
    assert time.monotonic() - started < 6.0
    assert not session.established


async def test_lookup_gets_host_reply(routers: RouterFactory, keys: DestinationKeys) -> None:
    known = DestinationKeys.generate().destination
    router = await routers(known_destinations=[known])
    client = Client(await open_session(router, keys), keys).start()

    found = await client.session.lookup(known.hash, timeout_s=2.0)
    missing = await client.session.lookup(b"\x01" * 32, timeout_s=2.0)

    assert found == known
    assert missing is None
    assert [m.hash for m in router.messages(messages.HostLookup)] == [known.hash, b"\x01" * 32]
    await client.stop()


async def test_send_payload_reaches_router(routers: RouterFactory, keys: DestinationKeys) -> None:
    router = await routers()
    client = Client(await open_session(router, keys), keys).start()
    to = DestinationKeys.generate().destination

    nonce = await client.session.send_payload(
        to,
        messages.Payload(b"ping", messages.PROTOCOL_DATAGRAM, 1, 2),
        int(time.time() * 1000) + 60_000,
    )
    await eventually(
        lambda: router.messages(messages.SendMessageExpires), what="SendMessageExpires"
    )

    [sent] = router.messages(messages.SendMessageExpires)
    assert sent.nonce == nonce
    assert sent.destination == to
    assert messages.Payload.decode(sent.payload) == messages.Payload(b"ping", 17, 1, 2)
    await asyncio.sleep(0.05)  # the MessageStatus answer must not upset the session
    assert client.task is not None and not client.task.done()
    await client.stop()
