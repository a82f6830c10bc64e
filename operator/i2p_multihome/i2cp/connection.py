"""One I2CP TCP (or TLS) connection: the protocol byte, then length-prefixed frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from i2p_multihome.logs import fields
from i2p_multihome.wire import messages
from i2p_multihome.wire.codec import WireError

log = logging.getLogger(__name__)


class ConnectionClosed(Exception):
    """The router closed the connection, or it was closed here."""


class RouterProtocolError(Exception):
    """The router sent bytes that are not valid I2CP; the connection is dropped."""


class I2CPConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str):
        self._reader = reader
        self._writer = writer
        self.peer = peer
        self._closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 10.0,
    ) -> I2CPConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context, limit=messages.MAX_BODY + 64),
            connect_timeout_s,
        )
        connection = cls(reader, writer, f"{host}:{port}")
        writer.write(bytes([messages.PROTOCOL_BYTE]))
        await writer.drain()
        return connection

    async def send(self, message: messages.ClientMessage) -> None:
        if self._closed:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        try:
            self._writer.write(messages.encode_frame(message))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise ConnectionClosed(f"send to {self.peer} failed: {exc}") from exc

    async def receive(self) -> messages.RouterMessage:
        """The next message. Malformed input closes the connection and raises
        RouterProtocolError; nothing but this connection is affected."""
        header = b""
        try:
            header = await self._reader.readexactly(messages.HEADER_SIZE)
            length, msg_type = messages.parse_header(header)
            body = await self._reader.readexactly(length)
            return messages.decode_router_message(msg_type, body)
        except asyncio.IncompleteReadError as exc:
            await self.close()
            if header or exc.partial:
                got = len(exc.partial)
                log.warning(
                    "dropping connection: router closed it in the middle of a frame",
                    extra=fields(peer=self.peer, received=got, expected=exc.expected),
                )
                raise ConnectionClosed(
                    f"{self.peer} closed the connection mid-frame ({got} of {exc.expected} bytes)"
                ) from exc
            raise ConnectionClosed(f"{self.peer} closed the connection") from exc
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise ConnectionClosed(f"connection to {self.peer} lost: {exc}") from exc
        except WireError as exc:
            log.warning(
                "dropping connection: malformed I2CP from router",
                extra=fields(peer=self.peer, error=str(exc)),
            )
            await self.close()
            raise RouterProtocolError(str(exc)) from exc

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
