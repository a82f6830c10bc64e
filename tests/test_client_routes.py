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


# --- across a restart ------------------------------------------------------------------------

WALL = 1_700_000_000.0  # the wall clock when the monotonic clock reads 0


def test_remembered_clients_are_the_recent_ones_with_an_address_newest_first() -> None:
    routes = ClientRoutes()
    dest_b = DestinationKeys.generate().destination
    routes.heard(DEST_A.hash, "r1", 100.0, DEST_A)
    routes.heard(dest_b.hash, "r2", 50.0, dest_b)
    routes.heard(dest_b.hash, "r2", 120.0)  # its address is kept from before
    routes.heard(C, "r1", 310.0)  # no address: nothing would reach it
    routes.forget(DEST_A.hash)  # remembered after its streams too
    kept = routes.remembered(400.0, WALL + 400.0)
    assert [k.address for k in kept] == [dest_b, DEST_A]
    assert (kept[0].session_since_s, kept[0].last_heard_s) == (WALL + 50.0, WALL + 120.0)
    assert (kept[1].session_since_s, kept[1].last_heard_s) == (WALL + 100.0, WALL + 100.0)
    assert routes.remembered(400.0, WALL + 400.0, limit=1) == kept[:1]
    # Nothing heard for 10 minutes: its session is gone, and so is any reason to keep it.
    assert [k.address for k in routes.remembered(701.0, WALL + 701.0)] == [dest_b]
    assert routes.remembered(721.0, WALL + 721.0) == []


def test_a_held_client_is_remembered_with_its_old_sessions_age() -> None:
    routes = ClientRoutes()
    routes.heard(DEST_A.hash, "r1", 0.0, DEST_A)
    routes.move({"r1"}, lambda client: "r2", 30.0)  # held until 125
    [kept] = routes.remembered(40.0, WALL + 40.0)
    assert kept.session_since_s == WALL + 0.0


def test_restored_clients_are_held_until_their_old_session_can_be_replaced() -> None:
    before = ClientRoutes()
    dest_b = DestinationKeys.generate().destination
    for at in (0.0, 80.0, 160.0, 190.0):  # one session, 200 s old at the restart
        before.heard(DEST_A.hash, "r1", at, DEST_A)
    before.heard(dest_b.hash, "r2", 150.0, dest_b)  # 50 s old
    kept = before.remembered(200.0, WALL + 200.0)

    # The new process's monotonic clock starts anywhere: only the wall clock carries over.
    after = ClientRoutes()
    restored_at = 5.0  # 10 s after the old run's last look, on the wall clock
    wall_now = WALL + 210.0
    assert sorted(after.restore(kept, lambda client: "r3", restored_at, wall_now)) == sorted(
        [DEST_A.hash, dest_b.hash]
    )
    assert after.routes() == {}  # nothing active: no streams or flows yet
    assert after.route_of(DEST_A.hash) == "r3" and after.address(dest_b.hash) == dest_b
    assert after.release_due(restored_at) == [DEST_A.hash]  # old enough: pinged at once
    # dest_b's session began 60 s before the restore: replaceable 65 s after it.
    assert after.held_until(dest_b.hash) == restored_at + 65.0
    assert after.release_due(restored_at + 64.9) == []
    assert after.release_due(restored_at + 65.0) == [dest_b.hash]


def test_restore_leaves_alone_clients_heard_since_and_sessions_that_expired() -> None:
    before = ClientRoutes()
    dest_b = DestinationKeys.generate().destination
    before.heard(DEST_A.hash, "r1", 0.0, DEST_A)
    before.heard(dest_b.hash, "r1", 0.0, dest_b)
    kept = before.remembered(10.0, WALL + 10.0)
    after = ClientRoutes()
    after.heard(DEST_A.hash, "r2", 1.0, DEST_A)  # came back on its own: it has a session
    assert after.restore(kept, lambda client: "r3", 2.0, WALL + 20.0) == [dest_b.hash]
    assert after.via(DEST_A.hash) == "r2" and after.held_until(DEST_A.hash) is None
    expired = ClientRoutes()
    assert expired.restore(kept, lambda client: "r3", 2.0, WALL + 601.0) == []


@given(st.lists(st.integers(0, 3), max_size=40), st.floats(1, 30))
def test_restore_keeps_within_its_bound(heard: list[int], step: float) -> None:
    clients = [DEST_A, *(DestinationKeys.generate().destination for _ in range(3))]
    before = ClientRoutes()
    for n, index in enumerate(heard):
        before.heard(clients[index].hash, "r1", n * step, clients[index])
    end = len(heard) * step
    kept = before.remembered(end, WALL + end)
    after = ClientRoutes(remembered=2)
    restored = after.restore(kept, lambda client: "r2", 0.0, WALL + end)
    assert len(restored) == len(kept) <= 4
    remaining = [c for c in restored if after.route_of(c) is not None]
    assert len(remaining) == min(2, len(kept))
    # The most recently heard are the ones kept.
    assert set(remaining) == {k.address.hash for k in kept[: len(remaining)]}
    assert len(after.release_due(2000.0)) == len(remaining)
