"""Parsers and fetchers for the i2pd 2.45.1 web console (daemon/HTTPServer.cpp).

The pages are generated HTML with a fixed shape, so each field is one anchored regular
expression; every count is bounded so hostile input cannot make int() or the regex engine
misbehave, and anything the parsers do not understand is a `ConsoleParseError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import urllib.request
from collections.abc import Mapping
from typing import Literal

from i2p_multihome.wire.codec import WireError
from i2p_multihome.wire.encoding import b32_address, b64decode, sha256

_B32 = r"([a-z2-7]{52,60})"
_B64_HASH = r"([A-Za-z0-9~-]{43}=)"
_ARROW = "&#8658;"


class ConsoleParseError(ValueError):
    """The i2pd web console returned a page this parser does not understand."""


@dataclasses.dataclass(frozen=True)
class ConsoleStatus:
    """The console main page: who the router is and whether it builds tunnels."""

    ident: str
    version: str
    caps: str
    network_status: str
    tunnel_success_rate: int
    routers: int
    floodfills: int
    leasesets: int
    client_tunnels: int
    transit_tunnels: int


@dataclasses.dataclass(frozen=True)
class ConsoleLease:
    """One lease as a floodfill shows it; ``gateway`` compares with `router_identity_hash`."""

    gateway: str
    tunnel_id: int
    end_date: str  # as shown: "dd/mm/yyyy HH:MM:SS.mmm" in the router's local time
    end: float  # the same instant in epoch seconds


@dataclasses.dataclass(frozen=True)
class ConsoleLeaseSet:
    """One LeaseSet in a router's netdb (``/?page=leasesets``)."""

    b32: str  # destination hash in base32, without ".b32.i2p", as the console shows it
    store_type: int
    expired: bool
    invalid: bool
    expires: str
    non_expired_leases: int | None  # None for store types the console does not decode
    leases: tuple[ConsoleLease, ...]


@dataclasses.dataclass(frozen=True)
class ConsoleDestination:
    """A destination a router hosts (``/?page=local_destinations``).

    ``i2cp_session`` is set for destinations opened over I2CP (the balancer's); others are
    the router's own, such as its always-present shared client destination.
    """

    b32: str
    i2cp_session: int | None
    nickname: str | None


@dataclasses.dataclass(frozen=True)
class ConsoleTunnel:
    """One of the router's own tunnels (``/?page=tunnels``, or one destination's pool).

    ``hops`` are the other routers in order from the far end for inbound tunnels (the first
    is the gateway) and from the near end for outbound ones, each as the console abbreviates
    it: the first four characters of the router's base64 identity hash. A zero-hop tunnel,
    and a tunnel still building, show none. ``tunnel_id`` is the id at this router's end; an
    inbound tunnel's lease names the gateway's id instead, except for a zero-hop tunnel,
    whose gateway is this router.
    """

    inbound: bool
    tunnel_id: int
    hops: tuple[str, ...]
    state: str  # building, failed, expiring, established or unknown
    exploratory: bool


@dataclasses.dataclass(frozen=True)
class ConsoleTunnelPool:
    """One I2CP destination's tunnels (``/?page=i2cp_local_destination&i2cp_id=N``)."""

    b32: str  # computed from the identity the page shows, without ".b32.i2p"
    inbound: tuple[ConsoleTunnel, ...]
    outbound: tuple[ConsoleTunnel, ...]


@dataclasses.dataclass(frozen=True)
class ConsoleI2PTunnel:
    """A tunnel of tunnels.conf or tunnels.d as the router runs it (``/?page=i2p_tunnels``).

    ``kind`` is the page's section: client and server for TCP tunnels, client_forward and
    server_forward for UDP ones (udpclient, udpserver).
    """

    kind: Literal["client", "server", "client_forward", "server_forward"]
    name: str
    b32: str  # the tunnel's local destination, without ".b32.i2p"


@dataclasses.dataclass(frozen=True)
class ConsoleTransitTunnel:
    """A tunnel another router built through this one (``/?page=transit_tunnels``).

    At a ``gateway`` the id is the one the tunnel's lease names together with this
    router's identity hash.
    """

    tunnel_id: int
    role: Literal["gateway", "participant", "endpoint"]


def _require_page(page: str, heading: str) -> None:
    """Each console page opens its content with a bold heading; the main page has none."""
    if f'<div class="content"><b>{heading}:</b>' not in page:
        raise ConsoleParseError(f"not a {heading} page")


def _field(pattern: str, text: str, what: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise ConsoleParseError(f"console page has no {what}")
    return match.group(1)


def parse_router_status(page: str) -> ConsoleStatus:
    """The main page (``/``) of a router's console."""
    routers = re.search(
        r"<b>Routers:</b> (\d{1,9}) <b>Floodfills:</b> (\d{1,9}) <b>LeaseSets:</b> (\d{1,9})",
        page,
    )
    tunnels = re.search(r"<b>Client Tunnels:</b> (\d{1,9}) <b>Transit Tunnels:</b> (\d{1,9})", page)
    if routers is None or tunnels is None:
        raise ConsoleParseError("console page has no router or tunnel counts")
    return ConsoleStatus(
        ident=_field(r"<b>Router Ident:</b> " + _B64_HASH + "<br>", page, "router ident"),
        version=_field(r"<b>Version:</b> ([0-9.]{1,20})<br>", page, "version"),
        caps=_field(r"<b>Router Caps:</b> ([A-Za-z]{0,16})<br>", page, "router caps"),
        network_status=_field(
            r"<b>Network status:</b> ([^<\r\n]{0,64})<br>", page, "network status"
        ),
        tunnel_success_rate=int(
            _field(r"<b>Tunnel creation success rate:</b> (\d{1,3})%", page, "success rate")
        ),
        routers=int(routers.group(1)),
        floodfills=int(routers.group(2)),
        leasesets=int(routers.group(3)),
        client_tunnels=int(tunnels.group(1)),
        transit_tunnels=int(tunnels.group(2)),
    )


# ASCII digits only: int() would read other scripts' digits too.
_CONSOLE_TIME = re.compile(r"(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})\.(\d{3})", re.ASCII)


def parse_console_time(text: str) -> float:
    """A console date (``dd/mm/yyyy HH:MM:SS.mmm``) as epoch seconds.

    i2pd formats it with C's localtime() in its own process (ConvertTime), and the testnet's
    routers inherit this machine's time zone, so it is read as this machine's local time.
    """
    match = _CONSOLE_TIME.fullmatch(text)
    if match is None:
        raise ConsoleParseError(f"not a console date: {text[:40]!r}")
    day, month, year, hour, minute, second, millis = (int(g) for g in match.groups())
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ConsoleParseError(f"not a console date: {text!r} ({exc})") from exc
    # A naive datetime's timestamp() is this machine's local time, as localtime() printed it.
    return moment.timestamp() + millis / 1000


_LEASE = re.compile(
    r"<b>Gateway:</b> " + _B64_HASH + r"<br>\s{0,4}"
    r"<b>TunnelID:</b> (\d{1,10})<br>\s{0,4}"
    r"<b>EndDate:</b> ([^<\r\n]{0,64})<br>"
)


def parse_leasesets(page: str) -> list[ConsoleLeaseSet]:
    """Every LeaseSet on the page; a router that is not a floodfill shows none."""
    _require_page(page, "LeaseSets")
    return [_parse_leaseset(item) for item in page.split('<div class="leaseset listitem')[1:]]


def _parse_leaseset(item: str) -> ConsoleLeaseSet:
    b32 = _field(r'<label for="slide\d{1,9}">' + _B32 + "</label>", item, "LeaseSet address")
    store_type = int(_field(r"<b>Store type:</b> (\d{1,3})<br>", item, f"store type of {b32}"))
    count = re.search(r"<b>Non Expired Leases: (\d{1,3})</b>", item)
    leases = tuple(
        ConsoleLease(
            gateway=m.group(1),
            tunnel_id=int(m.group(2)),
            end_date=m.group(3),
            end=parse_console_time(m.group(3)),
        )
        for m in _LEASE.finditer(item)
    )
    non_expired = int(count.group(1)) if count else None
    if len(leases) != (non_expired or 0):
        raise ConsoleParseError(f"{b32} claims {non_expired} leases but shows {len(leases)}")
    return ConsoleLeaseSet(
        b32=b32,
        store_type=store_type,
        expired=item.startswith(" expired"),
        invalid='<div class="invalid">' in item,
        expires=_field(r"<b>Expires:</b> ([^<\r\n]{0,64})<br>", item, f"expiry of {b32}"),
        non_expired_leases=non_expired,
        leases=leases,
    )


_TUNNEL_ITEM = re.compile(
    r'<div class="listitem">([^<]{0,2000})<span class="tunnel (\w{1,20})">([^<]{0,100})</span>'
)
_HOP = r"[A-Za-z0-9~-]{4}"


def _tunnel_lists(page: str) -> list[ConsoleTunnel]:
    """The inbound, then the outbound tunnels of a page that lists both, as the Tunnels page
    and a destination's page do."""
    inbound_at = page.find("<b>Inbound tunnels:</b>")
    outbound_at = page.find("<b>Outbound tunnels:</b>")
    if not 0 <= inbound_at < outbound_at:
        raise ConsoleParseError("page without inbound and outbound tunnel lists")
    tunnels = []
    for match in _TUNNEL_ITEM.finditer(page, inbound_at):
        path, state, label = match.groups()
        inbound = match.start() < outbound_at
        # Inbound: "⇒ hop ⇒ hop ⇒ ID:me"; outbound: "ID:me ⇒ hop ⇒ hop ⇒".
        ends = re.search(
            f"{_ARROW} (\\d{{1,10}}):me" if inbound else f"(\\d{{1,10}}):me {_ARROW}", path
        )
        if ends is None:
            raise ConsoleParseError(f"tunnel entry without an id: {path[:80]!r}")
        if inbound:
            hops = re.findall(f"{_ARROW} ({_HOP}) ", path[: ends.start()])
        else:
            hops = re.findall(f" ({_HOP}) {_ARROW}", path[ends.end() :])
        tunnels.append(
            ConsoleTunnel(
                inbound=inbound,
                tunnel_id=int(ends.group(1)),
                hops=tuple(hops),
                state=state,
                exploratory="(exploratory)" in label,
            )
        )
    return tunnels


def parse_tunnels(page: str) -> list[ConsoleTunnel]:
    """The router's tunnels, inbound then outbound, as the Tunnels page lists them."""
    _require_page(page, "Tunnels")
    return _tunnel_lists(page)


def parse_local_destinations(page: str) -> list[ConsoleDestination]:
    """The router's own destinations, then those clients opened over I2CP."""
    _require_page(page, "Local Destinations")
    own = [
        ConsoleDestination(b32=m.group(1), i2cp_session=None, nickname=None)
        for m in re.finditer(r"\?page=local_destination&(?:amp;)?b32=" + _B32 + '"', page)
    ]
    i2cp = [
        ConsoleDestination(b32=m.group(3), i2cp_session=int(m.group(1)), nickname=m.group(2))
        for m in re.finditer(
            r'\?page=i2cp_local_destination&(?:amp;)?i2cp_id=(\d{1,5})">'
            r"\[ ([^\r\n]{0,256}?) \]</a> &#8660; " + _B32 + r"\.b32\.i2p",
            page,
        )
    ]
    return own + i2cp


_I2P_TUNNEL_SECTIONS: tuple[
    tuple[str, Literal["client", "server", "client_forward", "server_forward"]], ...
] = (
    ("<b>Client Tunnels:</b>", "client"),
    ("<b>Server Tunnels:</b>", "server"),
    ("<b>Client Forwards:</b>", "client_forward"),
    ("<b>Server Forwards:</b>", "server_forward"),
)
# Every entry links its destination, then its name, then an arrow (the Server Forwards entries
# lack the listitem div the others have).
_I2P_TUNNEL_ENTRY = re.compile(
    r"\?page=local_destination&(?:amp;)?b32=" + _B32 + r'">([^<\r\n]{1,256})</a> &#865[68];'
)


def parse_i2p_tunnels(page: str) -> list[ConsoleI2PTunnel]:
    """The router's client and server tunnels and UDP forwards, in the page's order."""
    _require_page(page, "Client Tunnels")
    starts = sorted(
        (at, kind) for heading, kind in _I2P_TUNNEL_SECTIONS if (at := page.find(heading)) >= 0
    )
    found = []
    for match in _I2P_TUNNEL_ENTRY.finditer(page):
        kind = [k for at, k in starts if at < match.start()][-1]
        found.append(ConsoleI2PTunnel(kind=kind, name=match.group(2), b32=match.group(1)))
    return found


# A destination's identity in I2P base64: 387 bytes and a certificate payload of at most a
# few hundred bytes (key certificates carry the excess of larger keys).
_IDENTITY_TEXT = r'<textarea readonly cols="80" rows="8">([A-Za-z0-9~=-]{516,1400})</textarea>'


def parse_i2cp_local_destination(page: str) -> ConsoleTunnelPool | None:
    """One I2CP session's destination and tunnels; None when the router has no session with
    that id (any more: a client that reconnects gets a new one)."""
    _require_page(page, "I2CP Local Destination")
    if "<b>ERROR:</b>&nbsp;I2CP session not found<br>" in page:
        return None
    return _tunnel_pool(page)


def parse_local_destination(page: str) -> ConsoleTunnelPool | None:
    """One of the router's own destinations (a tunnel's, a SAM session's) and its tunnels;
    None when the router hosts no destination with that b32 (the page is then empty)."""
    _require_page(page, "Local Destination")
    if "<textarea" not in page:
        return None
    return _tunnel_pool(page)


def _tunnel_pool(page: str) -> ConsoleTunnelPool:
    identity = _field(_IDENTITY_TEXT, page, "destination identity")
    try:
        b32 = b32_address(sha256(b64decode(identity))).removesuffix(".b32.i2p")
    except WireError as exc:
        raise ConsoleParseError(f"destination identity is not I2P base64: {exc}") from exc
    tunnels = _tunnel_lists(page)
    return ConsoleTunnelPool(
        b32=b32,
        inbound=tuple(t for t in tunnels if t.inbound),
        outbound=tuple(t for t in tunnels if not t.inbound),
    )


# Gateway "ID ⇒", participant "⇒ ID ⇒", endpoint "⇒ ID", then the bytes carried.
_TRANSIT_ITEM = re.compile(
    r'<div class="listitem">\s{0,4}( ' + _ARROW + r" )?(\d{1,10})( " + _ARROW + r" )? "
    r"(\d{1,20})</div>",
    re.ASCII,
)
_ROLES: dict[tuple[bool, bool], Literal["gateway", "participant", "endpoint"]] = {
    (False, True): "gateway",
    (True, True): "participant",
    (True, False): "endpoint",
}


def parse_transit_tunnels(page: str) -> list[ConsoleTransitTunnel]:
    """The tunnels other routers built through this one, in the console's order."""
    _require_page(page, "Transit Tunnels")
    found = []
    for match in _TRANSIT_ITEM.finditer(page):
        role = _ROLES.get((match.group(1) is not None, match.group(3) is not None))
        if role is None:
            raise ConsoleParseError(f"transit tunnel entry without a role: {match.group(0)!r}")
        found.append(ConsoleTransitTunnel(tunnel_id=int(match.group(2)), role=role))
    listed = page.count('<div class="listitem">')
    if len(found) != listed:
        raise ConsoleParseError(f"transit page lists {listed} tunnels, {len(found)} readable")
    return found


def _get(console_url: str, query: str | None, timeout: float) -> str:
    """GET a console page, never through a proxy: only testnet addresses may be reached."""
    if not console_url.startswith("http://"):
        raise ValueError(f"console URL must be http://…, got {console_url!r}")
    url = console_url.rstrip("/") + "/" + (f"?{query}" if query else "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


def fetch_router_status(console_url: str, timeout: float = 10.0) -> ConsoleStatus:
    return parse_router_status(_get(console_url, None, timeout))


def fetch_leasesets(console_url: str, timeout: float = 10.0) -> list[ConsoleLeaseSet]:
    return parse_leasesets(_get(console_url, "page=leasesets", timeout))


def fetch_tunnels(console_url: str, timeout: float = 10.0) -> list[ConsoleTunnel]:
    return parse_tunnels(_get(console_url, "page=tunnels", timeout))


def fetch_local_destinations(console_url: str, timeout: float = 10.0) -> list[ConsoleDestination]:
    return parse_local_destinations(_get(console_url, "page=local_destinations", timeout))


def fetch_i2cp_local_destination(
    console_url: str, i2cp_session: int, timeout: float = 10.0
) -> ConsoleTunnelPool | None:
    query = f"page=i2cp_local_destination&i2cp_id={i2cp_session}"
    return parse_i2cp_local_destination(_get(console_url, query, timeout))


def fetch_transit_tunnels(console_url: str, timeout: float = 10.0) -> list[ConsoleTransitTunnel]:
    return parse_transit_tunnels(_get(console_url, "page=transit_tunnels", timeout))


def fetch_i2p_tunnels(console_url: str, timeout: float = 10.0) -> list[ConsoleI2PTunnel]:
    return parse_i2p_tunnels(_get(console_url, "page=i2p_tunnels", timeout))


def fetch_local_destination(
    console_url: str, b32: str, timeout: float = 10.0
) -> ConsoleTunnelPool | None:
    label = b32.removesuffix(".b32.i2p")
    if not re.fullmatch(_B32, label):
        raise ValueError(f"not a b32 address: {b32!r}")
    return parse_local_destination(
        _get(console_url, f"page=local_destination&b32={label}", timeout)
    )


def parse_command_token(page: str, command: str) -> str:
    """The token the commands page hands out for `command` (i2pd runs no command without one,
    and each page view makes a new one); a link with arguments before the token (such as
    set_loglevel's `level`) counts too."""
    if '<div class="content"><b>Router commands</b>' not in page:  # the one heading without ":"
        raise ConsoleParseError("not a Router commands page")
    match = re.search(
        rf"\?cmd={re.escape(command)}(?:&(?:amp;)?\w{{1,20}}=\w{{0,20}})*&(?:amp;)?"
        rf"token=(\d{{1,10}})\"",
        page,
    )
    if match is None:
        raise ConsoleParseError(f"the commands page offers no {command}")
    return match.group(1)


def run_console_command(
    console_url: str,
    command: str,
    timeout: float = 30.0,
    arguments: Mapping[str, str] | None = None,
) -> None:
    """Run a router command (such as reload_tunnels_config) the way the console's own link
    does: fetch a token from the commands page, then the command with it. i2pd runs it before
    answering, so it has taken effect when this returns."""
    token = parse_command_token(_get(console_url, "page=commands", timeout), command)
    extra = "".join(f"&{key}={value}" for key, value in (arguments or {}).items())
    answer = _get(console_url, f"cmd={command}{extra}&token={token}", timeout)
    if "<b>SUCCESS</b>" not in answer:
        error = re.search(r"<b>ERROR:</b>&nbsp;([^<\r\n]{0,200})", answer)
        raise ConsoleParseError(
            f"{command} refused: {error.group(1) if error else 'no SUCCESS in the answer'}"
        )
