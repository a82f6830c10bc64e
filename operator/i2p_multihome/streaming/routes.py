"""Which router answers each client, and what happens to a client when its router is lost.

A client's end-to-end (ECIES-X25519-AEAD-Ratchet) session lives in the router it set it up
with; only that router can decrypt the client's messages, and our answers must leave
through it. When that router is lost, the client has to be given a session with another
one, and only a message from that router can give it: the first message through a new
router is a new-session message from the destination's static key. Clients (i2pd
`GarlicDestination::AddECIESx25519Session`, Java `RatchetSKM`) take such a session in place
of their old one only once the old is 2 minutes old. Before that the new router's attempt is
wasted: the client answers through its old session, which the new router cannot decrypt,
and i2pd leaves that router's unanswered session in place for 2 minutes more, swallowing
everything sent through it meanwhile. So a moved client is *held*: nothing goes to it until
its old session is old enough, then everything pending goes at once.

Sans-I/O: routers are names, time is the caller's monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

# The age at which a client replaces its session with one a new router offers (i2pd
# ECIESX25519_RESTART_TIMEOUT, Java RatchetSKM: 120 s), plus a margin for path delay.
SESSION_REPLACEABLE_AFTER_S = 125.0


class ClientRoutes:
    """Per client (a destination hash): the router answering it, since when, and, for a
    client moved off a lost router, until when it is held."""

    def __init__(self, replaceable_after: float = SESSION_REPLACEABLE_AFTER_S) -> None:
        self._replaceable_after = replaceable_after
        self._via: dict[bytes, str] = {}
        self._since: dict[bytes, float] = {}  # when the client's session at `via` began, at most
        self._held: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._via)

    def via(self, client: bytes) -> str | None:
        return self._via.get(client)

    def routes(self) -> dict[bytes, str]:
        return dict(self._via)

    def heard(self, client: bytes, via: str, now: float) -> bool:
        """A packet from `client` came through `via`: that router holds a working session
        with it, so answer through it, hold or not. True when this ended a hold."""
        if self._via.get(client) != via:
            self._via[client] = via
            self._since[client] = now
        return self._held.pop(client, None) is not None

    def forget(self, client: bytes) -> None:
        self._via.pop(client, None)
        self._since.pop(client, None)
        self._held.pop(client, None)

    def move(
        self, lost: Collection[str], choose: Callable[[bytes], str], now: float
    ) -> list[bytes]:
        """Answer every client of a router in `lost` through `choose(client)` instead, held
        until its old session is old enough to be replaced. Returns the moved clients."""
        moved = []
        for client, via in list(self._via.items()):
            if via not in lost:
                continue
            release = max(now, self._since.get(client, now) + self._replaceable_after)
            self._via[client] = choose(client)
            self._since[client] = release  # the new router's session begins when it first sends
            self._held[client] = release
            moved.append(client)
        return moved

    def held_until(self, client: bytes) -> float | None:
        return self._held.get(client)

    def held(self, client: bytes, now: float) -> bool:
        release = self._held.get(client)
        return release is not None and now < release

    def release_due(self, now: float) -> list[bytes]:
        """Clients whose hold ends by `now`: send them what is pending."""
        due = [client for client, release in self._held.items() if release <= now]
        for client in due:
            del self._held[client]
        return due

    def next_release(self) -> float | None:
        return min(self._held.values(), default=None)
