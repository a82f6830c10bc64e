"""The testnet's SAM bridge and i2pd tunnels, without routers: the configuration written for
i2pd 2.45.1, and the console pages read back (captured from a testnet router with a client
tunnel, a server tunnel and a udpserver tunnel; <style> removed as in the other captures).
The real routers are e2e/test_sam.py."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from i2p_multihome_dev.testnet import (
    ConsoleI2PTunnel,
    ConsoleParseError,
    TestnetError,
    TestnetRouter,
    parse_command_token,
    parse_i2p_tunnels,
    parse_local_destination,
)
from i2p_multihome_dev.testnet.i2pd import ADDRESS_BOOK_FILES, i2pd_conf
from i2p_multihome_dev.testnet.tunnels import (
    client_tunnel_settings,
    read_keys_b32,
    server_tunnel_settings,
    tunnel_section,
)

DATA = Path(__file__).parent / "data"
CLIENT = "4azuol3txmgznu6z3rjb3avhb5kgp253ciujb5wbtojdchexztiq"
SERVER = "fr4ccvpg7vg6j5k42wjqhrrbq6asfue5wklkemxtnlzoydycsnhq"
UDP_SERVER = "vm4qux5jduscoxdiy3hkdss7scscdo4mqnq646cx7jolqvshmzeq"
ROUTER = TestnetRouter(
    name="r2",
    address="198.18.162.5",
    floodfill=False,
    namespace="i2pmh-15c0-r2",
    datadir=Path("/tmp/testnet/routers/r2"),
)


def page(name: str) -> str:
    return (DATA / f"console_{name}.html").read_text()


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string("[main]\n" + text)
    return parser


def test_every_router_runs_sam_on_its_own_address() -> None:
    conf = ini(i2pd_conf(ROUTER, Path("/tmp/r2.log"), None))
    assert dict(conf["sam"]) == {"enabled": "true", "address": ROUTER.address, "port": "7656"}
    assert ROUTER.sam == (ROUTER.address, 7656)
    assert ROUTER.sam_udp == (ROUTER.address, 7655)  # i2pd: always the TCP port less one
    assert ROUTER.to_json()["sam"] == "198.18.162.5:7656"
    assert list(ROUTER.to_json()) == ["name", "address", "i2cp", "sam", "console", "floodfill"]


def test_the_address_book_is_on_and_reaches_nowhere() -> None:
    """SAM needs the address book's storage; these files keep it from fetching anything."""
    conf = ini(i2pd_conf(ROUTER, Path("/tmp/r2.log"), None))
    assert conf["addressbook"]["enabled"] == "true"
    assert conf["addressbook"]["defaulturl"] == ""
    assert ADDRESS_BOOK_FILES["hosts.txt"] == ""
    subscriptions = ADDRESS_BOOK_FILES["subscriptions.txt"].splitlines()
    assert subscriptions and all(line.startswith("#") for line in subscriptions)


def test_i2p_tunnels_page_lists_every_kind() -> None:
    assert parse_i2p_tunnels(page("i2p_tunnels")) == [
        ConsoleI2PTunnel(kind="client", name="probe-cli", b32=CLIENT),
        ConsoleI2PTunnel(kind="server", name="probe-srv", b32=SERVER),
        ConsoleI2PTunnel(kind="server_forward", name="probe-udp", b32=UDP_SERVER),
    ]
    assert parse_i2p_tunnels(page("i2p_tunnels_none")) == []
    with pytest.raises(ConsoleParseError):
        parse_i2p_tunnels(page("local_destination"))


def test_local_destination_page() -> None:
    pool = parse_local_destination(page("local_destination"))
    assert pool is not None
    assert pool.b32 == SERVER
    assert [t.state for t in pool.inbound] == ["established", "established"]
    assert [t.hops for t in pool.inbound] == [("3zws", "QXu2", "3zws"), ("QXu2", "cZa-", "8tLH")]
    assert [t.tunnel_id for t in pool.outbound] == [1460114410, 3926123791]
    assert parse_local_destination(page("local_destination_unknown")) is None
    with pytest.raises(ConsoleParseError):
        parse_local_destination(page("i2p_tunnels"))


def test_command_token_comes_from_the_commands_page() -> None:
    commands = page("commands")
    assert parse_command_token(commands, "reload_tunnels_config") == "681378626"
    assert parse_command_token(commands, "set_loglevel") == "681378626"  # after `&level=none`
    with pytest.raises(ConsoleParseError, match="offers no"):
        parse_command_token(commands, "reload")
    with pytest.raises(ConsoleParseError, match="not a Router commands page"):
        parse_command_token(page("i2p_tunnels"), "reload_tunnels_config")


def test_client_tunnel_section() -> None:
    settings = client_tunnel_settings("web-client", ROUTER.address, 8080, SERVER, {})
    section = ini(tunnel_section("web-client", settings))["web-client"]
    assert dict(section) == {
        "type": "client",
        "address": ROUTER.address,
        "port": "8080",
        "destination": f"{SERVER}.b32.i2p",
        "keys": "tunnel-web-client.dat",
        "signaturetype": "7",
        "connecttimeout": "60",
    }
    with pytest.raises(TestnetError, match="b32"):
        client_tunnel_settings("web-client", ROUTER.address, 8080, "example.i2p", {})


def test_server_tunnel_sections() -> None:
    backend = ("198.18.162.1", 8000)
    tcp = server_tunnel_settings("web", "server", ROUTER.address, backend, {})
    assert tcp == {
        "type": "server",
        "host": "198.18.162.1",
        "port": "8000",
        "keys": "tunnel-web.dat",
        "signaturetype": "7",
    }
    udp = server_tunnel_settings("echo", "udpserver", ROUTER.address, backend, {})
    # Sent from the router's own address: its default, loopback, cannot reach the backend.
    assert udp["address"] == ROUTER.address
    options = {"inbound.length": "1", "inbound.quantity": "2"}
    with_options = server_tunnel_settings("web", "server", ROUTER.address, backend, options)
    assert with_options["inbound.quantity"] == "2"
    # i2pd's one camel-case tunnel option (ClientContext::ReadI2CPOptions).
    peers = {"explicitPeers": "A" * 44 + "," + "B-~" * 14 + "xy="}
    section = tunnel_section("web", server_tunnel_settings("web", "server", ROUTER.address,
                                                           backend, peers))  # fmt: skip
    assert ini(section)["web"]["explicitPeers"] == peers["explicitPeers"]


@pytest.mark.parametrize("name", ["", "Web", "web.conf", "a/b", "-web", "x" * 41])
def test_tunnel_names_are_safe_file_and_section_names(name: str) -> None:
    with pytest.raises(TestnetError, match="tunnel name"):
        tunnel_section(name, {"type": "server"})


@pytest.mark.parametrize(
    "settings",
    [{"host": "a\nb"}, {"host": "[other]"}, {"host": " padded"}, {"bad key": "x"}],
)
def test_tunnel_settings_cannot_break_the_ini(settings: dict[str, str]) -> None:
    with pytest.raises(TestnetError, match="tunnel setting"):
        tunnel_section("web", settings)


def test_keys_file_b32(tmp_path: Path) -> None:
    assert (
        read_keys_b32(DATA / "i2pd-ed25519.dat") == (DATA / "i2pd-ed25519.b32").read_text().strip()
    )
    (tmp_path / "short.dat").write_bytes(b"\x00" * 10)
    with pytest.raises(TestnetError, match="cannot read"):
        read_keys_b32(tmp_path / "short.dat")
