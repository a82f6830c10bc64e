"""Which clients most likely hold a serving router's own LeaseSet, under
`leaseSet.clientAffinity`: those whose SYNs can be answered sooner.

A stream from a new client through a serving router has the balancer sign that router's own
LeaseSet afresh within about a second, and the router then bundles it in its next message to
each of its clients (i2pd marks its sessions "LeaseSet updated" when its LeaseSet changes;
an incoming session begins without the mark). So a client whose streams have come through
one router for at least `SETTLE_S`, none through another since and none more than `IDLE_S`
apart, has been sent that LeaseSet or finds it in our answer to its SYN, and its copy has
not run out: its later lease picks, including the other lease i2pd picks for a packet's
second resend, reach the same router.

Such a client's bare SYN is answered after `StreamConfig.settled_syn_delay` (tens of
milliseconds; a single-homed router answers at once). Any other is answered after the ack
delay: its first RTT sample then includes that wait, and i2pd's
retransmission timeout (1.5 times the mean RTT, no floor) stays above a tunnel's jitter, so
it does not resend to a random lease of the merged LeaseSet, most of which lead to routers
that cannot decrypt its messages (docs/conversations.md). This is an inference, not a
guarantee (a renewal can come late behind a publish, or be skipped while the router has no
usable lease): a wrong guess costs a resend or two that may stray, as before affinity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

# The balancer renews a serving router's LeaseSet at most `AFFINITY_RENEW_INTERVAL_S` (1 s)
# after a new client's first stream; signing and the I2CP round trip add milliseconds.
SETTLE_S = 2.0
# A client quiet for longer may hold another LeaseSet by now: its copy of ours ends with its
# leases (a serving router's LeaseSet changes while nothing reaches the quiet client), after
# which it looks up the published one; and i2pd restarts an end-to-end session idle for
# 90 s, and a router's new incoming session carries no LeaseSet until the next renewal.
IDLE_S = 90.0
# Remembered clients, least recently seen forgotten first.
MAX_CLIENTS = 4096


@dataclass(frozen=True)
class _Seen:
    via: str
    since: float  # when its streams began to come through `via`
    last: float  # its latest stream


class SettledClients:
    """Each recent client's serving router and since when, for at most `max_clients`."""

    def __init__(
        self,
        routers: frozenset[str] = frozenset(),
        settle_s: float = SETTLE_S,
        idle_s: float = IDLE_S,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._routers = routers
        self.settle_s = settle_s
        self.idle_s = idle_s
        self._max = max_clients
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def routers(self) -> frozenset[str]:
        """The serving routers (`MultihomedDestinationSpec.affinity_routers`)."""
        return self._routers

    @routers.setter
    def routers(self, routers: frozenset[str]) -> None:
        if routers != self._routers:
            # Meanwhile a router may have bundled another LeaseSet: every client starts over.
            self._seen.clear()
        self._routers = routers

    def stream_opened(self, client: bytes, via: str, now: float) -> None:
        """A stream from `client` (its destination hash) was accepted through `via`."""
        seen = self._seen.pop(client, None)
        if via not in self._routers:
            return  # a publishing router bundles the merged LeaseSet
        if seen is None or seen.via != via or now - seen.last > self.idle_s:
            seen = _Seen(via, now, now)
        self._seen[client] = _Seen(via, seen.since, now)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def forget_routers(self, lost: Collection[str]) -> None:
        """`lost` are gone: their clients get other routers' LeaseSets, and a router back
        under the same name starts with none of them."""
        for client in [c for c, seen in self._seen.items() if seen.via in lost]:
            del self._seen[client]

    def is_settled(self, client: bytes, via: str, now: float) -> bool:
        """Whether a new stream's bare SYN from `client` through `via` waits only
        `settled_syn_delay`."""
        seen = self._seen.get(client)
        return (
            seen is not None
            and seen.via == via
            and via in self._routers
            and now - seen.since >= self.settle_s
            and now - seen.last <= self.idle_s
        )
