"""Parsers for the i2pd web console, against pages captured from i2pd 2.45.1 in the testnet.

The captured pages (tests/data/console_*.html) have their <style> block removed; everything
else is byte for byte what the router served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i2p_multihome_dev.testnet import (
    ConsoleDestination,
    ConsoleParseError,
    ConsoleStatus,
    ConsoleTransitTunnel,
    ConsoleTunnel,
    not_ready_reason,
    parse_console_time,
    parse_i2cp_local_destination,
    parse_leasesets,
    parse_local_destinations,
    parse_router_status,
    parse_transit_tunnels,
    parse_tunnels,
    router_identity_hash,
)

DATA = Path(__file__).parent / "data"
FF1 = "K74LAQy7tbjt9khWkNZJOAPBnv3rnDlbvqfI4KNFsIQ="


def page(name: str) -> str:
    return (DATA / f"console_{name}.html").read_text()


def test_main_page() -> None:
    assert parse_router_status(page("main")) == ConsoleStatus(
        ident=FF1,
        version="2.45.1",
        caps="Xf",
        network_status="Unknown",
        tunnel_success_rate=100,
        routers=9,
        floodfills=3,
        leasesets=0,
        client_tunnels=11,
        transit_tunnels=30,
    )


def test_router_identity_hash_from_router_info_matches_the_console(tmp_path: Path) -> None:
    """tests/data/i2pd-router.info is ff1's router.info from the run the pages come from."""
    (tmp_path / "router.info").write_bytes((DATA / "i2pd-router.info").read_bytes())
    assert router_identity_hash(tmp_path) == FF1


def test_leasesets_page() -> None:
    lease_sets = parse_leasesets(page("leasesets"))
    assert [ls.b32 for ls in lease_sets] == [
        "hnhljq7kqqyn65gabw54t7rya5yeoj7srpmiiga22n7yphwz3lha",
        "vmyahjmgneidxzth43qns4uy6fhd6hwsfwmxamlerbntulgkn3vq",
        "csb52zx4qvps4nvvjjoxacnirxpj6zvx6xbctuap4geg2yowqo4q",
        "f4lqhsa22pd7zknjgcojcp6c4sfblq2kgmhs22ufq7lfzfhl7hbq",
    ]
    first = lease_sets[0]
    assert first.store_type == 3
    assert not first.expired and not first.invalid
    assert first.expires == "22/11/2026 00:38:45.000"
    assert first.non_expired_leases == 6 == len(first.leases)
    assert first.leases[0].gateway == FF1
    assert first.leases[0].tunnel_id == 114391150
    assert first.leases[0].end_date == "22/11/2026 00:38:29.000"
    assert first.leases[0].end == parse_console_time("22/11/2026 00:38:29.000")
    assert len({lease.gateway for lease in first.leases}) == 6
    assert [len(ls.leases) for ls in lease_sets] == [6, 1, 1, 5]


def test_leasesets_page_of_an_empty_floodfill_and_of_a_plain_router() -> None:
    assert parse_leasesets(page("leasesets_empty")) == []
    assert parse_leasesets(page("leasesets_not_floodfill")) == []


def test_expired_and_invalid_leasesets_are_flagged() -> None:
    """The console's markup for these, from i2pd 2.45.1's HTTPServer.cpp ShowLeasesSets."""
    item = (
        '<div class="content"><b>LeaseSets:</b><br>\r\n<div class="list">\r\n'
        '<div class="leaseset listitem expired">\r\n'
        '<div class="invalid">!! Invalid !! </div>\r\n'
        '<div class="slide"><label for="slide1">' + "a" * 52 + "</label>\r\n"
        '<input type="checkbox" id="slide1" />\r\n<div class="slidecontent">\r\n'
        "<b>Store type:</b> 3<br>\r\n<b>Expires:</b> 22/11/2026 00:33:47.000<br>\r\n"
        "<b>Non Expired Leases: 0</b><br>\r\n</div>\r\n</div>\r\n</div>\r\n"
    )
    (lease_set,) = parse_leasesets(item)
    assert lease_set.expired and lease_set.invalid
    assert lease_set.non_expired_leases == 0 and lease_set.leases == ()


def test_leaseset_whose_count_disagrees_with_its_leases_is_refused() -> None:
    broken = page("leasesets").replace("Non Expired Leases: 6", "Non Expired Leases: 7")
    with pytest.raises(ConsoleParseError, match="claims 7 leases but shows 6"):
        parse_leasesets(broken)


def test_local_destinations_page() -> None:
    assert parse_local_destinations(page("local_destinations")) == [
        ConsoleDestination(
            b32="uqkstveyjefql6bn3iapkrudfy65a2argx55qzq54u6pb3rll4ra",
            i2cp_session=None,
            nickname=None,
        ),
        ConsoleDestination(
            b32="yydscs7dhpoqtvh5riasyqyxv5vkrzvebtko3dnrepp3d4dm2eqq",
            i2cp_session=3165,
            nickname="capture-session",
        ),
    ]


def test_console_time_is_local_time_to_the_millisecond(
    utc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """i2pd prints dates with C's localtime(); the routers run with this machine's zone."""
    assert parse_console_time("22/11/2026 00:38:29.250") == 1795307909.25
    monkeypatch.setenv("TZ", "Europe/Berlin")  # UTC+1 in November
    time.tzset()
    assert parse_console_time("22/11/2026 00:38:29.250") == 1795307909.25 - 3600


@pytest.mark.parametrize(
    "text",
    [
        "",
        "22/11/2026 00:38:29",  # no milliseconds
        "2026-11-22 00:38:29.000",
        "32/11/2026 00:38:29.000",  # no such day
        "22/13/2026 00:38:29.000",
        "22/11/2026 24:00:00.000",
        "22/11/2026 00:38:29.000 ",
        "22/11/+026 00:38:29.000",
        "\uff122/11/2026 00:38:29.000",  # a fullwidth digit, which int() would read
    ],
)
def test_malformed_console_time_is_a_parse_error(text: str) -> None:
    with pytest.raises(ConsoleParseError, match="not a console date"):
        parse_console_time(text)


def test_leasesets_page_with_a_malformed_end_date_is_refused() -> None:
    broken = page("leasesets").replace("22/11/2026 00:38:29.000", "22/11/2026 00:38:61.000", 1)
    with pytest.raises(ConsoleParseError, match="not a console date"):
        parse_leasesets(broken)


def test_tunnels_page() -> None:
    tunnels = parse_tunnels(page("tunnels"))
    assert len(tunnels) == 15
    assert sum(t.inbound for t in tunnels) == 7
    assert all(t.state == "established" for t in tunnels)
    assert tunnels[0] == ConsoleTunnel(True, 2996851501, (), "established", False)
    assert tunnels[1].hops == ("K74L", "Z~Sd", "K74L")
    assert tunnels[3].exploratory and tunnels[3].hops == ("lVkK", "MnUv")
    assert tunnels[8] == ConsoleTunnel(False, 1541482429, ("odk6",), "established", False)
    assert tunnels[10].hops == ("K74L", "xHwa", "MnUv")  # its latency sits after the hops


def test_i2cp_local_destination_page() -> None:
    """r1 of a 4-router destination mid rotation: three inbound tunnels of one hop each,
    their predecessors still listed while expiring, and the same for the outbound ones."""
    pool = parse_i2cp_local_destination(page("i2cp_local_destination"))
    assert pool is not None
    assert pool.b32 == "3rrscorujf3xwkgkdzk2sx7vnhkxgz6l3mfu7dapgun3isirioeq"
    assert [(t.hops, t.state) for t in pool.inbound] == [
        (("gwGO",), "established"),
        (("QgC8",), "established"),
        (("Tc8h",), "established"),
        (("gwGO",), "expiring"),
        (("QgC8",), "expiring"),
        (("Tc8h",), "expiring"),
    ]
    assert all(t.inbound and not t.exploratory for t in pool.inbound)
    assert pool.inbound[0].tunnel_id == 144200336  # this router's end, not the lease's id
    assert [t.hops for t in pool.outbound] == [("gwGO",), ("QgC8",), ("gwGO",), ("pP7X",)]
    assert pool.outbound[0] == ConsoleTunnel(False, 1530888343, ("gwGO",), "established", False)


def test_i2cp_local_destination_page_of_zero_hop_tunnels() -> None:
    pool = parse_i2cp_local_destination(page("i2cp_local_destination_zero_hop"))
    assert pool is not None
    assert pool.b32 == "giljg2q72ftool72s7rbbucshnpkjz5t5wzsrkrusxp22ouayyoq"
    assert pool.inbound and all(t.hops == () for t in pool.inbound)
    # A zero-hop tunnel's lease names this router and this very id.
    assert [t.tunnel_id for t in pool.inbound] == [3785335071, 1201901730]
    assert [(t.tunnel_id, t.hops) for t in pool.outbound] == [(4040845351, ())]


def test_i2cp_local_destination_page_of_a_session_gone() -> None:
    """i2pd's ShowI2CPLocalDestination for an id it no longer has: a client reconnected."""
    gone = (
        '<div class="content"><b>I2CP Local Destination:</b><br>\r\n<br>\r\n'
        "<b>ERROR:</b>&nbsp;I2CP session not found<br>\r\n</div>"
    )
    assert parse_i2cp_local_destination(gone) is None


def test_i2cp_local_destination_page_whose_identity_is_not_base64_is_refused() -> None:
    text = page("i2cp_local_destination")
    start = text.index('rows="8">') + len('rows="8">')
    broken = text[:start] + "=" * 4 + text[start + 4 :]
    with pytest.raises(ConsoleParseError, match="not I2P base64"):
        parse_i2cp_local_destination(broken)


def test_transit_tunnels_page() -> None:
    """r5: gateway "ID ⇒", participant "⇒ ID ⇒", endpoint "⇒ ID" (HTTPServer.cpp)."""
    tunnels = parse_transit_tunnels(page("transit_tunnels"))
    assert len(tunnels) == 86
    assert tunnels[:4] == [
        ConsoleTransitTunnel(3769203940, "participant"),
        ConsoleTransitTunnel(993784437, "gateway"),
        ConsoleTransitTunnel(301842471, "gateway"),
        ConsoleTransitTunnel(245924570, "endpoint"),
    ]
    assert {t.role for t in tunnels} == {"gateway", "participant", "endpoint"}


def test_transit_tunnels_page_without_tunnels() -> None:
    empty = (
        '<div class="content"><b>Transit Tunnels:</b> no transit tunnels currently built.'
        "<br>\r\n</div>"
    )
    assert parse_transit_tunnels(empty) == []


def test_transit_tunnel_entry_it_cannot_read_is_refused() -> None:
    broken = page("transit_tunnels").replace("993784437 &#8658;  43176", "993784437 43176", 1)
    with pytest.raises(ConsoleParseError, match="without a role"):
        parse_transit_tunnels(broken)
    broken = page("transit_tunnels").replace("993784437 &#8658;  43176", "x &#8658;  43176", 1)
    with pytest.raises(ConsoleParseError, match="85 readable"):
        parse_transit_tunnels(broken)


@pytest.mark.parametrize(
    ("parser", "name"),
    [
        (parse_router_status, "leasesets"),
        (parse_leasesets, "main"),
        (parse_local_destinations, "tunnels"),
        (parse_tunnels, "local_destinations"),
        (parse_i2cp_local_destination, "tunnels"),
        (parse_transit_tunnels, "i2cp_local_destination"),
    ],
)
def test_each_parser_refuses_another_page(parser: Callable[[str], Any], name: str) -> None:
    with pytest.raises(ConsoleParseError):
        parser(page(name))


def status(**changes: Any) -> ConsoleStatus:
    return dataclasses.replace(parse_router_status(page("main")), **changes)


def tunnel(
    inbound: bool, hops: tuple[str, ...] = ("K74L",), state: str = "established"
) -> ConsoleTunnel:
    return ConsoleTunnel(inbound, 1, hops, state, False)


def test_ready_needs_peers_tunnels_both_ways_and_transit() -> None:
    both = [tunnel(True), tunnel(False)]
    assert not_ready_reason(status(), both, 9) is None
    assert not_ready_reason(status(routers=5), both, 9) == "knows 5 of 9 routers"
    zero_hop = [tunnel(True, ()), tunnel(False, ())]
    assert "inbound" in (not_ready_reason(status(), zero_hop, 9) or "")
    building = [tunnel(True), tunnel(False, state="building")]
    assert "outbound" in (not_ready_reason(status(), building, 9) or "")
    assert not_ready_reason(status(transit_tunnels=0), both, 9) == "no transit tunnels yet"
    assert not_ready_reason(status(transit_tunnels=0), both, 9, transit=False) is None
    assert "inbound" in (not_ready_reason(status(), zero_hop, 9, transit=False) or "")


PARSERS: list[Callable[[str], Any]] = [
    parse_router_status,
    parse_leasesets,
    parse_local_destinations,
    parse_tunnels,
    parse_i2cp_local_destination,
    parse_transit_tunnels,
]
SAMPLES = [
    "main",
    "leasesets",
    "leasesets_empty",
    "leasesets_not_floodfill",
    "local_destinations",
    "tunnels",
    "i2cp_local_destination",
    "i2cp_local_destination_zero_hop",
    "transit_tunnels",
]


@given(text=st.text())
def test_arbitrary_text_only_ever_raises_the_parse_error(text: str) -> None:
    for parser in PARSERS:
        with contextlib.suppress(ConsoleParseError):
            parser(text)


@given(
    sample=st.sampled_from(SAMPLES),
    start=st.integers(min_value=0),
    length=st.integers(min_value=0, max_value=400),
    insert=st.text(alphabet=st.sampled_from(list('<>/"= :0123456789abK~-\r\n'))) | st.text(),
)
def test_damaged_real_pages_only_ever_raise_the_parse_error(
    sample: str, start: int, length: int, insert: str
) -> None:
    """Cut a slice out of a real page and splice in junk: deep paths, hostile values."""
    text = page(sample)
    start %= len(text) + 1
    damaged = text[:start] + insert + text[start + length :]
    for parser in PARSERS:
        with contextlib.suppress(ConsoleParseError):
            parser(damaged)


def test_huge_numbers_do_not_reach_int() -> None:
    """Python refuses int() of over 4300 digits with ValueError; the parsers must not try."""
    huge = "<b>TunnelID:</b> " + "9" * 5000
    text = page("leasesets").replace("<b>TunnelID:</b> 114391150", huge)
    with pytest.raises(ConsoleParseError):
        parse_leasesets(text)
