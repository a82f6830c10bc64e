"""Which clients' SYNs are answered at once under client affinity: those whose streams have
come through the same serving router, without long pauses, for long enough that it sent them
its own LeaseSet."""

from __future__ import annotations

from i2p_multihome.balancer.policy import AFFINITY_RENEW_INTERVAL_S
from i2p_multihome.dataplane.affinity import IDLE_S, SETTLE_S, SettledClients

SERVING = frozenset({"h", "k"})
ALICE, BOB, CAROL = b"a" * 32, b"b" * 32, b"c" * 32


def test_a_client_settles_on_a_serving_router_once_its_renewal_was_due() -> None:
    assert SETTLE_S > AFFINITY_RENEW_INTERVAL_S  # the renewal its first stream asked for
    clients = SettledClients(SERVING)
    assert not clients.is_settled(ALICE, "h", 0.0)  # never seen
    clients.stream_opened(ALICE, "h", 0.0)
    assert not clients.is_settled(ALICE, "h", SETTLE_S - 0.01)
    assert clients.is_settled(ALICE, "h", SETTLE_S)
    assert not clients.is_settled(ALICE, "k", SETTLE_S)  # a SYN through another router
    for at in (60.0, 120.0, 180.0):  # streams less than IDLE_S apart keep it settled
        clients.stream_opened(ALICE, "h", at)
        assert clients.is_settled(ALICE, "h", at)


def test_a_pause_longer_than_the_idle_limit_starts_the_wait_again() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    assert clients.is_settled(ALICE, "h", IDLE_S)
    assert not clients.is_settled(ALICE, "h", IDLE_S + 0.01)
    clients.stream_opened(ALICE, "h", IDLE_S + 1.0)
    assert not clients.is_settled(ALICE, "h", IDLE_S + 1.0 + SETTLE_S - 0.01)
    assert clients.is_settled(ALICE, "h", IDLE_S + 1.0 + SETTLE_S)


def test_a_stream_through_another_router_starts_the_wait_again() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(ALICE, "k", 10.0)
    assert not clients.is_settled(ALICE, "h", 20.0)
    assert not clients.is_settled(ALICE, "k", 10.0 + SETTLE_S - 0.01)
    assert clients.is_settled(ALICE, "k", 10.0 + SETTLE_S)


def test_without_affinity_or_through_a_publishing_router_no_client_settles() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(ALICE, "p", 1.0)  # it was given the merged LeaseSet there
    assert not clients.is_settled(ALICE, "h", 10.0) and len(clients) == 0
    assert not clients.is_settled(ALICE, "p", 10.0)
    off = SettledClients()
    off.stream_opened(BOB, "h", 0.0)
    assert not off.is_settled(BOB, "h", 10.0) and len(off) == 0


def test_a_change_of_serving_routers_forgets_every_client() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.routers = SERVING  # the same spec again
    assert clients.is_settled(ALICE, "h", 10.0)
    clients.routers = frozenset()  # clientAffinity off: routers bundle the merged LeaseSet
    clients.routers = SERVING
    assert not clients.is_settled(ALICE, "h", 10.0) and len(clients) == 0


def test_the_clients_of_a_lost_router_are_forgotten() -> None:
    clients = SettledClients(SERVING)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(BOB, "k", 0.0)
    clients.forget_routers({"h"})
    assert not clients.is_settled(ALICE, "h", 10.0)
    assert clients.is_settled(BOB, "k", 10.0)


def test_it_remembers_a_bounded_number_of_clients_least_recent_forgotten() -> None:
    clients = SettledClients(SERVING, max_clients=2)
    clients.stream_opened(ALICE, "h", 0.0)
    clients.stream_opened(BOB, "h", 0.0)
    clients.stream_opened(ALICE, "h", 1.0)  # Alice is now the most recent
    clients.stream_opened(CAROL, "k", 2.0)
    assert len(clients) == 2
    assert clients.is_settled(ALICE, "h", 10.0)
    assert not clients.is_settled(BOB, "h", 10.0)
    assert clients.is_settled(CAROL, "k", 10.0)
