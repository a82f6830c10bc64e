"""A router link's lifecycle as a pure state machine: each event's new state and effects."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from i2p_multihome.balancer.events import (
    RouterLost,
    RouterRecovered,
    RouterRefused,
    SessionEstablished,
)
from i2p_multihome.balancer.link import (
    AttemptStarted,
    BackOff,
    CreateRefused,
    EndpointUnavailable,
    LeaseSetHandedOver,
    LeasesReported,
    LinkEvent,
    LinkState,
    Notify,
    PlanPublish,
    RampTurn,
    Reconfigure,
    Retired,
    SessionCreated,
    SessionEnded,
    step,
)
from i2p_multihome.model.v1alpha1 import RouterState
from i2p_multihome.wire.structures import Lease

LEASES = (Lease(hashlib.sha256(b"gw").digest(), 7, 1_700_000_600_000),)


def run(*events: LinkEvent, link: LinkState | None = None) -> tuple[LinkState, list[object]]:
    """The state after `events`, and every effect on the way."""
    state = link or LinkState("r1")
    effects: list[object] = []
    for event in events:
        transition = step(state, event)
        state = transition.state
        effects.extend(transition.effects)
    return state, effects


def established() -> LinkState:
    state, _ = run(AttemptStarted(), SessionCreated("0.9.67", 1_700_000_000.0, 100.0))
    return state


def test_first_session_is_established_news() -> None:
    state, effects = run(AttemptStarted(), SessionCreated("0.9.67", 1_700_000_000.0, 100.0))
    assert state.state is RouterState.ESTABLISHED
    assert (state.version, state.since_s, state.last_error) == ("0.9.67", 1_700_000_000.0, None)
    assert effects == [Notify(SessionEstablished("r1", "0.9.67"))]


def test_lease_report_waits_for_an_answer_and_plans_a_publish() -> None:
    state, effects = run(LeasesReported(LEASES), link=established())
    assert (state.leases, state.awaiting_answer) == (LEASES, True)
    assert effects == [PlanPublish()]
    answered, effects = run(LeaseSetHandedOver(), link=state)
    assert not answered.awaiting_answer and effects == []
    assert answered.leases == LEASES


def test_lease_report_without_a_session_is_ignored() -> None:
    state, effects = run(LeasesReported(LEASES))
    assert state == LinkState("r1") and effects == []


def test_a_lost_session_is_news_replans_and_backs_off_from_the_start() -> None:
    reported, _ = run(LeasesReported(LEASES), link=established())
    state, effects = run(SessionEnded("router disconnected: bye", 130.0), link=reported)
    assert state.state is RouterState.DISCONNECTED
    assert (state.leases, state.awaiting_answer, state.since_s) == ((), False, None)
    assert (state.lost_at, state.last_error) == (130.0, "router disconnected: bye")
    assert effects == [
        Notify(RouterLost("r1", "router disconnected: bye")),
        PlanPublish(),
        BackOff(0),
    ]
    assert state.failures == 1


def test_failed_attempts_back_off_further_each_time_without_news() -> None:
    state, effects = run(
        AttemptStarted(), SessionEnded("refused", 1.0),
        AttemptStarted(), SessionEnded("refused", 2.0),
        AttemptStarted(), SessionEnded("timed out", 3.0),
    )  # fmt: skip
    assert effects == [BackOff(0), BackOff(1), BackOff(2)]
    assert state.failures == 3 and state.lost_at is None


def test_recovery_after_a_loss_reports_the_downtime_and_resets_the_backoff() -> None:
    lost, _ = run(SessionEnded("gone", 130.0), link=established())
    state, effects = run(
        AttemptStarted(), SessionEnded("refused", 131.0),
        AttemptStarted(), SessionCreated("0.9.67", 1_700_000_050.0, 150.0),
        link=lost,
    )  # fmt: skip
    assert effects == [BackOff(1), Notify(RouterRecovered("r1", 20.0))]
    assert (state.failures, state.lost_at, state.ramped) == (0, None, False)


def test_a_refusal_is_news_once_per_reason() -> None:
    state, effects = run(
        AttemptStarted(), CreateRefused("refused"),
        AttemptStarted(), CreateRefused("refused"),
        AttemptStarted(), EndpointUnavailable("Secret ns/x: Not Found"),
    )  # fmt: skip
    assert state.state is RouterState.REFUSED
    assert state.last_error == "Secret ns/x: Not Found"
    assert effects == [
        Notify(RouterRefused("r1", "refused")),
        BackOff(0),
        BackOff(1),
        Notify(RouterRefused("r1", "Secret ns/x: Not Found")),
        BackOff(2),
    ]


def test_an_attempt_keeps_the_last_error_for_status() -> None:
    refused, _ = run(CreateRefused("refused"))
    state, effects = run(AttemptStarted(), link=refused)
    assert state.state is RouterState.CONNECTING and state.last_error == "refused"
    assert effects == []


def test_the_ramp_turn_reconfigures_once_and_only_an_established_session() -> None:
    state, effects = run(RampTurn(), RampTurn(), link=established())
    assert state.ramped and effects == [Reconfigure()]
    assert run(RampTurn())[1] == []
    ended, _ = run(SessionEnded("gone", 1.0), link=state)
    again, _ = run(SessionCreated("0.9.67", 1.0, 2.0), link=ended)
    assert not again.ramped  # a new session starts short again


def test_a_retired_link_tells_nothing_and_never_backs_off() -> None:
    retired, _ = run(LeasesReported(LEASES), Retired(), link=established())
    assert retired.retired and retired.leases == () and not retired.awaiting_answer
    for event in (SessionEnded("destroyed", 1.0), CreateRefused("x"), AttemptStarted()):
        transition = step(retired, event)
        assert transition.effects == ()
        assert transition.state.retired


EVENTS = st.one_of(
    st.just(AttemptStarted()),
    st.builds(EndpointUnavailable, st.sampled_from(["no secret", "no password"])),
    st.builds(CreateRefused, st.sampled_from(["refused", "invalid"])),
    st.builds(SessionCreated, st.just("0.9.67"), st.floats(0, 1e9), st.floats(0, 1e6)),
    st.builds(SessionEnded, st.sampled_from(["gone", "hung"]), st.floats(0, 1e6)),
    st.just(LeasesReported(LEASES)),
    st.just(LeaseSetHandedOver()),
    st.just(RampTurn()),
)


@settings(max_examples=300)
@given(st.lists(EVENTS, max_size=40))
def test_invariants_hold_whatever_happens(events: list[LinkEvent]) -> None:
    state = LinkState("r1")
    for event in events:
        was_established = state.established
        transition = step(state, event)
        state = transition.state
        news = [e.event for e in transition.effects if isinstance(e, Notify)]
        # Leases and a pending answer belong to an established session only.
        assert state.established or (state.leases == () and not state.awaiting_answer)
        assert not state.ramped or state.established
        # A loss is told exactly when an established session ends, and plans a publish.
        lost = any(isinstance(n, RouterLost) for n in news)
        assert lost == (was_established and isinstance(event, SessionEnded))
        assert lost == (PlanPublish() in transition.effects and not state.established)
        # Every ending backs off, by a step that counts the failures before it.
        backoffs = [e for e in transition.effects if isinstance(e, BackOff)]
        ending = isinstance(event, SessionEnded | CreateRefused | EndpointUnavailable)
        assert len(backoffs) == (1 if ending else 0)
        assert state.failures >= 0
        if state.established:
            assert state.failures == 0 and state.lost_at is None
