"""The test bed's one polling contract: a truthy value ends the wait and is returned; a
falsy one, or NotYet(detail), means not yet; the timeout names what was awaited, the last
detail and `explain()`'s account, in the caller's error type."""

from __future__ import annotations

import itertools

import pytest

from i2p_multihome_dev.polling import NotYet, wait_until


class RouterGone(RuntimeError):
    pass


def test_the_first_truthy_value_is_returned() -> None:
    values = iter([None, 0, NotYet("warming up"), {"ready": True}])
    assert wait_until("ready", 5, lambda: next(values), interval=0) == {"ready": True}


def test_timeout_names_the_wait_the_last_detail_and_the_explanation() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError) as failed:
        wait_until(
            "three floodfills",
            0.05,
            lambda: NotYet(f"{next(counter)} of 3"),
            interval=0.01,
            explain=lambda: "ff2 holds nothing",
        )
    message = str(failed.value)
    assert message.startswith("timed out after 0s waiting for three floodfills; last: ")
    assert message.endswith(" of 3; ff2 holds nothing")
    assert int(message.split("last: ")[1].split()[0]) >= 1  # checked again up to the end


def test_a_plain_falsy_value_carries_no_detail_and_the_error_type_is_the_callers() -> None:
    with pytest.raises(RouterGone, match=r"^timed out after 0s waiting for r2$"):
        wait_until("r2", 0, lambda: False, error=RouterGone)


def test_a_check_that_raises_ends_the_wait_at_once() -> None:
    def dead() -> bool:
        raise RouterGone("exited")

    with pytest.raises(RouterGone, match="exited"):
        wait_until("anything", 60, dead)


def test_not_yet_is_falsy_and_shows_its_detail() -> None:
    assert not NotYet({"r1": "Connecting"})
    assert str(NotYet({"r1": "Connecting"})) == "{'r1': 'Connecting'}"
