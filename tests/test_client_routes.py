"""ClientRoutes: which router answers each client, and the hold of a client moved off a lost
router until its old end-to-end session can be replaced (pure logic, no clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from i2p_multihome.streaming.routes import SESSION_REPLACEABLE_AFTER_S, ClientRoutes
from i2p_multihome.wire.keys import DestinationKeys

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
DEST_A = DestinationKeys.generate().destination


def test_the_latest_router_a_client_was_heard_through_answers_it() -> None:
    routes = ClientRoutes()
    assert routes.via(A) is None
    assert routes.heard(A, "r1", 10.0) is False
    routes.heard(B, "r2", 11.0)
    routes.heard(A, "r3", 12.0)
    assert routes.routes() == {A: "r3", B: "r2"}
    routes.forget(A)
    assert routes.routes() == {B: "r2"} and len(routes) == 1


def test_clients_of_a_lost_router_move_and_are_held_until_their_session_is_old_enough() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 100.0)  # a young session: held
    routes.heard(B, "r1", 0.0)
    routes.heard(B, "r1", 90.0)  # heard again through the same router: its session is older
    routes.heard(C, "r2", 100.0)  # another router's client: untouched
    moved = routes.move({"r1"}, lambda client: "r9", 110.0)
    assert sorted(moved) == [A, B]
    assert routes.routes() == {A: "r9", B: "r9", C: "r2"}
    assert routes.held(A, 110.0) and routes.held_until(A) == 100.0 + SESSION_REPLACEABLE_AFTER_S
    assert routes.held_until(B) == SESSION_REPLACEABLE_AFTER_S  # first heard at 0
    assert not routes.held(C, 110.0)
    assert routes.next_release() == SESSION_REPLACEABLE_AFTER_S
    assert routes.release_due(124.9) == []
    assert routes.release_due(125.0) == [B]
    assert routes.release_due(300.0) == [A]
    assert routes.next_release() is None


def test_a_held_client_heard_through_any_router_is_released_there() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 0.0)
    routes.move({"r1"}, lambda client: "r2", 10.0)
    assert routes.heard(A, "r3", 11.0) is True
    assert routes.via(A) == "r3" and not routes.held(A, 11.0)
    assert routes.release_due(1000.0) == []


def test_a_second_loss_counts_the_session_from_when_the_new_router_first_sent() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 0.0)
    routes.move({"r1"}, lambda client: "r2", 200.0)  # old enough: released at once
    assert routes.release_due(200.0) == [A]
    routes.move({"r2"}, lambda client: "r3", 250.0)  # r2's session began at 200
    assert routes.held_until(A) == 200.0 + SESSION_REPLACEABLE_AFTER_S


@given(
    st.dictionaries(
        st.binary(min_size=32, max_size=32),
        st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.floats(0, 1000)),
        max_size=20,
    ),
    st.floats(0, 2000),
)
def test_a_move_never_holds_past_the_replace_age_nor_touches_other_routers(
    clients: dict[bytes, tuple[str, float]], now: float
) -> None:
    routes = ClientRoutes()
    for client, (via, at) in clients.items():
        routes.heard(client, via, at)
    moved = routes.move({"r1"}, lambda client: "r2", now)
    assert sorted(moved) == sorted(c for c, (via, _) in clients.items() if via == "r1")
    for client, (via, at) in clients.items():
        if via == "r1":
            assert routes.via(client) == "r2"
            assert routes.held_until(client) == max(now, at + SESSION_REPLACEABLE_AFTER_S)
        else:
            assert routes.via(client) == via and routes.held_until(client) is None


def test_a_client_keeps_its_session_age_between_streams_until_the_session_expires() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 0.0)
    routes.forget(A)  # its last stream ended; its session with r1 did not
    routes.heard(A, "r1", 80.0)
    routes.move({"r1"}, lambda client: "r2", 130.0)
    assert routes.held_until(A) == 130.0  # 130 s old: moved at once
    routes.forget(A)
    routes.heard(B, "r1", 0.0)
    routes.forget(B)
    routes.heard(B, "r1", 700.0)  # nothing heard for 700 s: a new session
    routes.move({"r1"}, lambda client: "r2", 710.0)
    assert routes.held_until(B) == 700.0 + SESSION_REPLACEABLE_AFTER_S


def test_remembered_clients_of_a_lost_router_move_too_unless_their_session_expired() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 0.0, address=DEST_A)
    routes.forget(A)  # no stream or flow now, but its session with r1 lives on
    routes.heard(B, "r1", 0.0)
    routes.forget(B)
    routes.heard(B, "r1", 100.0)
    routes.forget(B)
    assert sorted(routes.move({"r1"}, lambda client: "r2", 650.0)) == [B]  # A: 650 s silent
    assert routes.held_until(A) is None and routes.route_of(A) is None
    assert routes.held_until(B) == 650.0 and routes.route_of(B) == "r2"
    assert len(routes) == 0  # still remembered, not active
    assert routes.release_due(650.0) == [B]  # due: the caller pings it through r2
    routes.heard(B, "r2", 660.0)  # its answer came through the survivor
    routes.move({"r2"}, lambda client: "r3", 670.0)
    assert routes.held_until(B) == 650.0 + SESSION_REPLACEABLE_AFTER_S  # r2's began at 650


def test_a_remembered_client_keeps_its_hold_and_address() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 100.0, address=DEST_A)
    routes.move({"r1"}, lambda client: "r2", 110.0)
    routes.forget(A)  # its flow idled out while it was held
    assert routes.held_until(A) == 100.0 + SESSION_REPLACEABLE_AFTER_S
    assert routes.next_release() == 100.0 + SESSION_REPLACEABLE_AFTER_S
    assert routes.release_due(300.0) == [A]
    assert routes.address(A) is DEST_A and routes.route_of(A) == "r2"
    routes.heard(A, "r2", 310.0)  # heard again without an address: the known one is kept
    assert routes.address(A) is DEST_A


def test_memory_of_past_clients_is_bounded_and_drops_their_holds() -> None:
    routes = ClientRoutes(remembered=2)
    for client in (A, B, C):
        routes.heard(client, "r3", 600.0)
    routes.move({"r3"}, lambda client: "r4", 601.0)
    for client in (A, B, C):
        routes.forget(client)
    assert routes.route_of(A) is None and routes.held_until(A) is None  # the oldest dropped
    assert routes.held_until(C) == 600.0 + SESSION_REPLACEABLE_AFTER_S
    routes.heard(A, "r4", 700.0)  # no memory of it: counted from now
    routes.move({"r4"}, lambda client: "r5", 701.0)
    assert routes.held_until(A) == 700.0 + SESSION_REPLACEABLE_AFTER_S


def test_a_client_silent_for_90_s_with_an_old_session_is_taken_to_have_started_anew() -> None:
    routes = ClientRoutes()
    routes.heard(A, "r1", 0.0)
    routes.heard(A, "r1", 200.0)  # 200 s quiet, its session older than 2 minutes: a new one
    routes.move({"r1"}, lambda client: "r2", 210.0)
    assert routes.held_until(A) == 200.0 + SESSION_REPLACEABLE_AFTER_S
    routes.heard(B, "r1", 0.0)
    routes.heard(B, "r1", 100.0)  # 100 s quiet, but its session was too young to restart
    routes.move({"r1"}, lambda client: "r2", 110.0)
    assert routes.held_until(B) == SESSION_REPLACEABLE_AFTER_S  # counted from 0


def test_a_client_moved_again_before_its_release_keeps_its_release() -> None:
    # The router it was moved to never sent it anything: no new session to wait out.
    routes = ClientRoutes()
    routes.heard(A, "r1", 100.0)
    routes.move({"r1"}, lambda client: "r2", 110.0)
    routes.move({"r2"}, lambda client: "r3", 120.0)
    assert routes.held_until(A) == 100.0 + SESSION_REPLACEABLE_AFTER_S
    assert routes.via(A) == "r3"
