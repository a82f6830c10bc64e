"""The recent clients kept across a restart, as stored: round trips, bounds, refusal of
anything malformed (fuzzed), and sealing under the destination's keys."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i2p_multihome.dataplane.remembered import (
    ClientDocumentError,
    from_json_text,
    seal,
    to_json_text,
    unseal,
)
from i2p_multihome.streaming.routes import KEPT_ACROSS_RESTART, RememberedClient
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys

CLIENT = DestinationKeys.generate().destination
KEPT = RememberedClient(CLIENT, 1_700_000_000.0, 1_700_000_100.5)


def test_a_document_round_trips_in_order() -> None:
    other = RememberedClient(DestinationKeys.generate().destination, 1.0, 2.0)
    assert from_json_text(to_json_text([KEPT, other])) == [KEPT, other]
    assert from_json_text(to_json_text([])) == []


def test_at_most_the_kept_number_is_written() -> None:
    text = to_json_text([KEPT] * (KEPT_ACROSS_RESTART + 3))
    assert len(from_json_text(text)) == KEPT_ACROSS_RESTART


def entry(**changes: object) -> str:
    document = {
        "version": 1,
        "clients": [
            {"destination": b64encode(CLIENT.raw), "sessionSinceS": 1, "lastHeardS": 2} | changes
        ],
    }
    return json.dumps(document)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"version": 2, "clients": []}',
        '{"version": 1, "clients": {}}',
        json.dumps({"version": 1, "clients": [{}] * (KEPT_ACROSS_RESTART + 1)}),
        entry(destination="AAAA"),
        entry(destination="not base64!"),
        entry(destination=b64encode(CLIENT.raw + b"x")),
        entry(destination="A" * 5000),
        entry(sessionSinceS=-1),
        entry(lastHeardS="2"),
        entry(lastHeardS=True),
        entry(sessionSinceS=None),
        '{"version": 1, "clients": [{"destination": 1}]}',
        '{"version": 1, "clients": ["x"]}',
        "[" * 100_000,
        " " * 800_000,
    ],
)
def test_malformed_documents_are_refused_whole(text: str) -> None:
    with pytest.raises(ClientDocumentError):
        from_json_text(text)


@given(st.text(max_size=400))
def test_any_text_is_read_or_refused(text: str) -> None:
    with contextlib.suppress(ClientDocumentError):
        from_json_text(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["version", "clients", "destination", "sessionSinceS", "lastHeardS"]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_is_read_or_refused(document: object) -> None:
    with contextlib.suppress(ClientDocumentError):
        from_json_text(json.dumps(document))


def test_sealed_clients_open_only_with_the_destinations_keys() -> None:
    keys = DestinationKeys.generate()
    text = to_json_text([KEPT])
    sealed = seal(text, keys)
    assert b64encode(CLIENT.raw)[:40] not in sealed and "1700000000" not in sealed
    assert unseal(sealed, keys) == text
    assert seal(text, keys) != sealed  # a fresh nonce each time
    with pytest.raises(ClientDocumentError, match="other keys"):
        unseal(sealed, DestinationKeys.generate())
    damaged = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    with pytest.raises(ClientDocumentError):
        unseal(damaged, keys)
    for bad in ("", "AAAA", "not base64!", "A" * 2_000_000):
        with pytest.raises(ClientDocumentError):
            unseal(bad, keys)


@given(st.text(max_size=200))
def test_any_sealed_text_is_opened_or_refused(text: str) -> None:
    with contextlib.suppress(ClientDocumentError):
        unseal(text, DestinationKeys.generate())
