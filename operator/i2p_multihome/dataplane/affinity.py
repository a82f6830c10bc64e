"""Which clients hold a serving router's own LeaseSet, under `leaseSet.clientAffinity`.

A serving router bundles its LeaseSet in the next message it sends each client after that
LeaseSet was signed afresh (i2pd marks every garlic session "LeaseSet updated"), and the
balancer signs it afresh within a second of a stream from a new client.
So a client that opened a stream through a router at least `SETTLE_S` ago, and none through
another router since, holds that router's LeaseSet, or finds it in our answer to its SYN.
Its later leases picks, including the other lease i2pd picks for a packet's second resend,
then reach the same router.

Such a client's bare SYN is answered at once, as a single-homed router answers it. Any
other is answered after the ack delay: its first RTT sample then includes that wait, and
i2pd's retransmission timeout (1.5 times the mean RTT, no floor) stays above a tunnel's
jitter, so it does not resend to a random lease of the merged LeaseSet, most of which lead
to routers that cannot decrypt its messages (docs/conversations.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# The balancer renews a serving router's LeaseSet at most `AFFINITY_RENEW_INTERVAL_S` (1 s)
# after a new client's first stream; signing and the I2CP round trip add milliseconds.
SETTLE_S = 2.0
# Remembered clients, least recently seen forgotten first.
MAX_CLIENTS = 4096


@dataclass(frozen=True)
class _Seen:
    via: str
    since: float  # when its streams started coming through `via`


class SettledClients:
    """Each recent client's router under client affinity, and since when, bounded."""

    def __init__(
        self,
        routers: frozenset[str] = frozenset(),
        settle_s: float = SETTLE_S,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.routers = routers  # the serving routers (MultihomedDestinationSpec.affinity_routers)
        self.settle_s = settle_s
        self._max = max_clients
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def stream_opened(self, client: bytes, via: str, now: float) -> None:
        """A stream from `client` (its destination hash) was accepted through `via`."""
        if via not in self.routers:
            self._seen.pop(client, None)
            return
        seen = self._seen.pop(client, None)
        self._seen[client] = seen if seen is not None and seen.via == via else _Seen(via, now)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def holds_lease_set_of(self, client: bytes, via: str, now: float) -> bool:
        """Whether a new stream's SYN from `client` through `via` is answered at once."""
        seen = self._seen.get(client)
        return (
            via in self.routers
            and seen is not None
            and seen.via == via
            and now - seen.since >= self.settle_s
        )
