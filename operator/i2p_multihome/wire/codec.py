"""Bounds-checked reading and writing of I2P's big-endian primitive types.

Every parser in this package reads through `Reader`, so a short or lying buffer raises
`WireError` instead of an IndexError deep in a handler.
"""

from __future__ import annotations


class WireError(ValueError):
    """Malformed bytes: too short, a length that lies, a value out of range."""


class Reader:
    """A cursor over a byte buffer that refuses to read past its end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self._data = data
        self._pos = pos

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str = "field") -> bytes:
        if n < 0 or n > self.remaining:
            raise WireError(f"{what}: need {n} bytes at offset {self._pos}, have {self.remaining}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self, what: str = "u8") -> int:
        return self.take(1, what)[0]

    def u16(self, what: str = "u16") -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str = "u32") -> int:
        return int.from_bytes(self.take(4, what), "big")

    def u64(self, what: str = "u64") -> int:
        return int.from_bytes(self.take(8, what), "big")

    def string(self, what: str = "string") -> str:
        """An I2P String: one length byte, then that many UTF-8 bytes."""
        raw = self.take(self.u8(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{what}: not UTF-8") from exc

    def since(self, start: int) -> bytes:
        """The bytes consumed from offset `start` up to the cursor."""
        return self._data[start : self._pos]

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def expect_end(self, what: str) -> None:
        if self.remaining:
            raise WireError(f"{what}: {self.remaining} unexpected trailing bytes")


def u8(value: int) -> bytes:
    return _uint(value, 1)


def u16(value: int) -> bytes:
    return _uint(value, 2)


def u32(value: int) -> bytes:
    return _uint(value, 4)


def u64(value: int) -> bytes:
    return _uint(value, 8)


def _uint(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise WireError(f"{value} does not fit in {size} bytes")
    return value.to_bytes(size, "big")


def string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise WireError(f"I2P String longer than 255 bytes ({len(raw)})")
    return bytes([len(raw)]) + raw
