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

A client's session outlives its streams (a browser opens a stream per request over one
session), so what is known of a client is kept, bounded, after its last stream or flow ends:
its next one starts with the right session age, and when its router is lost it is moved and
held too. A held client whose hold ends is *due*: whatever is pending goes to it, and one
that has nothing pending is sent a ping, because otherwise nothing would reach it: it keeps
sending to the lost router's leases (the LeaseSet it holds), and only a message from its new
router gives it that router's session and LeaseSet.

A restart of the balancer loses every router's session at once, and with them every
client's: what is known of the recent clients (`remembered`, `restore`) is kept across it,
so that each is moved, held and nudged like a client of a lost router.

Sans-I/O: routers are names, time is the caller's monotonic clock (and, for what is kept
across a restart, the wall clock it is given).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from i2p_multihome.wire.structures import Destination

# The age at which a client replaces its session with one a new router offers (i2pd
# ECIESX25519_RESTART_TIMEOUT, Java RatchetSKM: 120 s), plus a margin for path delay.
SESSION_REPLACEABLE_AFTER_S = 125.0
# A client's session with nothing received for this long is gone (i2pd
# ECIESX25519_RECEIVE_EXPIRATION_TIMEOUT): its next message starts a new one.
SESSION_EXPIRES_AFTER_S = 600.0
# An i2pd client whose session is 2 minutes old and received nothing for 90 s starts a new
# one with its next message (ECIESX25519_INACTIVITY_TIMEOUT, `IsInactive`): a client silent
# that long is taken to have done so, whichever router its new-session message reached.
SESSION_RESTARTS_AFTER_IDLE_S = 90.0
# Clients remembered after their last stream or flow ended.
REMEMBERED_CLIENTS = 4096
# Clients kept across a restart, the most recently heard: one ping each when it ends.
KEPT_ACROSS_RESTART = 512


@dataclass(frozen=True)
class RememberedClient:
    """A client as kept across a restart: where a ping reaches it, and (wall clock) since
    when its session has been up at the latest and when it was last heard."""

    address: Destination
    session_since_s: float
    last_heard_s: float


@dataclass
class _Route:
    via: str
    since: float  # when the client's session at `via` began, at the latest
    last_heard: float
    address: Destination | None = None  # where a ping reaches it


class ClientRoutes:
    """Per client (a destination hash): the router answering it, since when, and, for a
    client moved off a lost router, until when it is held."""

    def __init__(
        self,
        replaceable_after: float = SESSION_REPLACEABLE_AFTER_S,
        remembered: int = REMEMBERED_CLIENTS,
    ) -> None:
        self._replaceable_after = replaceable_after
        self._remembered = remembered
        self._active: dict[bytes, _Route] = {}
        self._past: OrderedDict[bytes, _Route] = OrderedDict()  # oldest first
        # Held clients (active or past) and when their hold ends: few, and only after a loss.
        self._held: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._active)

    def via(self, client: bytes) -> str | None:
        route = self._active.get(client)
        return route.via if route is not None else None

    def routes(self) -> dict[bytes, str]:
        return {client: route.via for client, route in self._active.items()}

    def heard(
        self, client: bytes, via: str, now: float, address: Destination | None = None
    ) -> bool:
        """A packet from `client` (whose Destination is `address`, when known) came through
        `via`: that router holds a working session with it, so answer through it, hold or
        not. True when this ended a hold."""
        route = self._active.get(client) or self._past.pop(client, None)
        was_held = self._held.pop(client, None) is not None
        known = route.address if route is not None else None
        if route is None or route.via != via or now - route.last_heard > SESSION_EXPIRES_AFTER_S:
            route = _Route(via, now, now)
        elif (
            now - route.last_heard > SESSION_RESTARTS_AFTER_IDLE_S
            and now - route.since > self._replaceable_after
        ):
            route.since = now
        route.last_heard = now
        route.address = address or known
        self._active[client] = route
        return was_held

    def forget(self, client: bytes) -> None:
        """Its last stream or flow ended: remember it a while (bounded), hold and all."""
        route = self._active.pop(client, None)
        if route is None:
            return
        self._past[client] = route
        while len(self._past) > self._remembered:
            dropped, _ = self._past.popitem(last=False)
            self._held.pop(dropped, None)

    def move(
        self, lost: Collection[str], choose: Callable[[bytes], str], now: float
    ) -> list[bytes]:
        """Answer every client of a router in `lost` through `choose(client)` instead, held
        until its old session is old enough to be replaced; remembered clients too, unless
        their session has expired. Returns the moved clients."""
        moved = []
        for table in (self._active, self._past):
            for client, route in list(table.items()):
                if route.via not in lost:
                    continue
                if table is self._past and now - route.last_heard > SESSION_EXPIRES_AFTER_S:
                    del table[client]  # nothing to move: its next message starts afresh
                    self._held.pop(client, None)
                    continue
                # Still held from an earlier move: the router it was moved to never sent.
                earlier = self._held.get(client)
                release = max(now, earlier if earlier is not None else
                              route.since + self._replaceable_after)  # fmt: skip
                # The new router's session begins when it first sends: at the release.
                table[client] = _Route(choose(client), release, route.last_heard, route.address)
                self._held[client] = release
                moved.append(client)
        return moved

    def remembered(
        self, now: float, wall_now: float, limit: int = KEPT_ACROSS_RESTART
    ) -> list[RememberedClient]:
        """The clients worth keeping across a restart, most recently heard first: those
        with an address whose session has not expired, at most `limit`."""
        kept = []
        for table in (self._active, self._past):
            for client, route in table.items():
                if route.address is None or now - route.last_heard > SESSION_EXPIRES_AFTER_S:
                    continue
                # A held client still has its old session, which its hold was counted from.
                since = route.since - self._replaceable_after if client in self._held else (
                    route.since)  # fmt: skip
                kept.append(RememberedClient(
                    route.address, wall_now - (now - since), wall_now - (now - route.last_heard)
                ))  # fmt: skip
        kept.sort(key=lambda client: client.last_heard_s, reverse=True)
        return kept[:limit]

    def restore(
        self,
        clients: Collection[RememberedClient],
        choose: Callable[[bytes], str],
        now: float,
        wall_now: float,
    ) -> list[bytes]:
        """Clients kept across a restart, whose sessions went with every router's: answer
        each through `choose(client)`, held as if moved off a lost router (`move`). Those
        already heard since the restart, and those whose session has expired, are left
        alone. Returns the restored clients."""
        restored = []
        # Oldest first, as `_past` keeps them.
        for kept in sorted(clients, key=lambda client: client.last_heard_s):
            client = kept.address.hash
            last_heard = now - (wall_now - kept.last_heard_s)
            if client in self._active or client in self._past:
                continue
            if now - last_heard > SESSION_EXPIRES_AFTER_S:
                continue
            since = now - (wall_now - kept.session_since_s)
            release = max(now, since + self._replaceable_after)
            self._past[client] = _Route(choose(client), release, last_heard, kept.address)
            self._held[client] = release
            restored.append(client)
        while len(self._past) > self._remembered:
            dropped, _ = self._past.popitem(last=False)
            self._held.pop(dropped, None)
        return restored

    def address(self, client: bytes) -> Destination | None:
        """The client's Destination, if it was given with `heard`."""
        route = self._active.get(client) or self._past.get(client)
        return route.address if route is not None else None

    def route_of(self, client: bytes) -> str | None:
        """The router answering `client`, whether it has streams or flows now or not."""
        route = self._active.get(client) or self._past.get(client)
        return route.via if route is not None else None

    def held_until(self, client: bytes) -> float | None:
        return self._held.get(client)

    def held(self, client: bytes, now: float) -> bool:
        release = self.held_until(client)
        return release is not None and now < release

    def release_due(self, now: float) -> list[bytes]:
        """Clients whose hold ends by `now`, active or remembered: send them what is
        pending, or a ping."""
        due = [client for client, release in self._held.items() if release <= now]
        for client in due:
            del self._held[client]
        return due

    def next_release(self) -> float | None:
        return min(self._held.values(), default=None)
