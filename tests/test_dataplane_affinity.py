"""Which clients' SYNs are answered at once under client affinity: those whose streams have
come through the same serving router for long enough that it sent them its own LeaseSet."""

from __future__ import annotations

from i2p_multihome.balancer.policy import AFFINITY_RENEW_INTERVAL_S
from i2p_multihome.dataplane.affinity import SETTLE_S, SettledClients

SERVING = frozenset({"h", "k"})
ALICE, BOB, CAROL = b"a" * 32, b"b" * 32, b"c" * 32


def test_a_client_settles_on_a_serving_router_after_its_renewal_is_due() -> None:
    assert SETTLE_S > AFFINITY_RENEW_INTERVAL_S  # the renewal its first stream asked for
    clients = SettledClients(SERVING)
    assert not clients.holds_lease_set_of(ALICE, "h", 0.0)  # never seen
    clients.stream_opened(ALICE, "h", 0.0)
    assert not clients.holds_lease_set_of(ALICE, "h", SETTLE_S - 0.01)
    assert clients.holds_lease_set_of(ALICE, "h", SETTLE_S)
    assert not clients.holds_lease_set_of(ALICE, "k", SETTLE_S)  # another router's SYN
    clients.stream_opened(ALICE, "h", 100.0)  # more streams keep when it began
    assert clients.holds_lease_set_of(ALICE, "h", 100.0)


def test_a_stream_through_another_router_starts_the_wait_again() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(ALICE, "k", 10.0)
    assert not clients.holds_lease_set_of(ALICE, "h", 20.0)
    assert not clients.holds_lease_set_of(ALICE, "k", 10.0 + SETTLE_S - 0.01)
    assert clients.holds_lease_set_of(ALICE, "k", 10.0 + SETTLE_S)


def test_without_affinity_or_through_a_publishing_router_no_client_settles() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(ALICE, "p", 1.0)  # the publisher's merged LeaseSet: it forgets
    assert not clients.holds_lease_set_of(ALICE, "h", 100.0)
    assert not clients.holds_lease_set_of(ALICE, "p", 100.0)
    off = SettledClients()
    off.stream_opened(BOB, "h", 0.0)
    assert not off.holds_lease_set_of(BOB, "h", 100.0) and len(off) == 0
    clients.stream_opened(BOB, "h", 0.0)
    clients.routers = frozenset()  # clientAffinity turned off
    assert not clients.holds_lease_set_of(BOB, "h", 100.0)


def test_it_remembers_a_bounded_number_of_clients_least_recent_forgotten() -> None:
    clients = SettledClients(SERVING, max_clients=2)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(BOB, "h", 0.0)
    clients.stream_opened(ALICE, "h", 1.0)  # Alice is now the most recent
    clients.stream_opened(CAROL, "k", 2.0)
    assert len(clients) == 2
    assert clients.holds_lease_set_of(ALICE, "h", 10.0)
    assert not clients.holds_lease_set_of(BOB, "h", 10.0)
    assert clients.holds_lease_set_of(CAROL, "k", 10.0)
