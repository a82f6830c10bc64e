"""The testnet against real i2pd routers: what every other e2e test stands on."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from i2p_multihome_dev.observe import serving
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.testnet import (
    I2CP_PORT,
    SAM_PORT,
    TESTNET_RANGE,
    ConsoleLeaseSet,
    Testnet,
    TestnetError,
    TestnetRouter,
    check_host,
    fetch_leasesets,
    fetch_local_destinations,
    fetch_router_status,
    fetch_transit_tunnels,
    fetch_tunnels,
    not_ready_reason,
)

CLI = [sys.executable, "-m", "i2p_multihome_dev"]
ROUTER_KEYS = {"name", "address", "i2cp", "sam", "console", "floodfill"}


def i2cp_accepts(router: TestnetRouter) -> bool:
    try:
        with socket.create_connection(router.i2cp, timeout=2.0):
            return True
    except OSError:
        return False


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def console_command(router: TestnetRouter, command: str) -> None:
    """Run a console command; i2pd wants the token its commands page hands out."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{router.console}?page=commands", timeout=10) as response:
        page = response.read().decode()
    token = re.search(rf"cmd={command}&token=(\d+)", page)
    assert token, f"{router.name}'s commands page offers no {command}"
    with opener.open(f"{router.console}?cmd={command}&token={token[1]}", timeout=10) as response:
        assert b"SUCCESS" in response.read()


@pytest.mark.testnet
def test_every_router_runs_and_has_built_tunnels(testnet: Testnet) -> None:
    routers = testnet.routers
    assert [r.name for r in routers] == ["ff1", "ff2", "ff3", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert len({r.address for r in routers}) == 9
    for router in routers:
        assert router.address.startswith(("198.18.", "198.19."))
        assert testnet.is_running(router.name)
        assert i2cp_accepts(router), f"{router.name}'s I2CP port refuses connections"
        status = fetch_router_status(router.console)
        assert status.ident == testnet.identity_hash(router.name)
        assert ("f" in status.caps) == router.floodfill
        assert not_ready_reason(status, fetch_tunnels(router.console), len(routers)) is None


@pytest.mark.testnet
def test_every_console_parses_and_floodfills_show_a_routers_leases(testnet: Testnet) -> None:
    """A zero-hop server tunnel on r6 publishes a LeaseSet whose leases all name r6."""
    host = testnet.router("r6")
    transit = 0
    for router in testnet.routers:
        assert fetch_local_destinations(router.console), f"{router.name} hosts nothing"
        assert fetch_tunnels(router.console)
        transit += len(fetch_transit_tunnels(router.console))
        if router.floodfill:
            fetch_leasesets(router.console)
    # Every router is ready, so each carries transit tunnels of others.
    assert transit >= len(testnet.routers)
    before = {d.b32 for d in fetch_local_destinations(host.console)}
    probe = host.datadir / "tunnels.d" / "probe.conf"
    probe.write_text(
        "[probe]\ntype = server\nhost = 127.0.0.1\nport = 9\nkeys = transient-probe\n"
        "inbound.length = 0\ninbound.quantity = 2\noutbound.length = 0\n"
    )
    try:
        console_command(host, "reload_tunnels_config")

        def published() -> dict[str, ConsoleLeaseSet]:
            # Reloading also renews the router's unpublished shared destination, so "new on
            # r6" is the probe plus that one; only the probe reaches the floodfills.
            new = {d.b32 for d in fetch_local_destinations(host.console)} - before
            return {
                router.name: lease_set
                for router in testnet.routers
                if router.floodfill
                for lease_set in fetch_leasesets(router.console)
                if lease_set.b32 in new and serving(lease_set, time.time())
            }

        found = wait_until(
            "a floodfill to serve the probe's LeaseSet", 120, published, interval=1.0
        )
        ident = testnet.identity_hash("r6")
        for lease_set in found.values():
            assert lease_set.store_type == 3
            assert lease_set.non_expired_leases == len(lease_set.leases)
            assert {lease.gateway for lease in lease_set.leases} == {ident}
    finally:
        probe.unlink()
        console_command(host, "reload_tunnels_config")


@pytest.mark.testnet
def test_stopped_router_restarts_with_the_same_identity(
    testnet: Testnet, restore_routers: None
) -> None:
    router = testnet.router("r6")
    identity = testnet.identity_hash("r6")
    testnet.stop_router("r6")
    assert not testnet.is_running("r6")
    assert not i2cp_accepts(router)
    with pytest.raises(OSError):
        fetch_router_status(router.console, timeout=2.0)

    testnet.start_router("r6")
    assert testnet.is_running("r6")
    assert i2cp_accepts(router)
    assert testnet.identity_hash("r6") == identity
    assert fetch_router_status(router.console).ident == identity
    testnet.wait_ready(["r6"], timeout=180)


@pytest.mark.testnet
def test_cli_status_prints_every_router_as_json(testnet: Testnet) -> None:
    done = cli("testnet", "status", "--dir", str(testnet.directory))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"routers"}
    assert [r["name"] for r in document["routers"]] == [r.name for r in testnet.routers]
    for entry, router in zip(document["routers"], testnet.routers, strict=True):
        assert set(entry) == ROUTER_KEYS
        assert entry["i2cp"] == f"{router.address}:{I2CP_PORT}"
        assert entry["sam"] == f"{router.address}:{SAM_PORT}"
        assert entry["console"] == router.console
        assert entry["floodfill"] is router.floodfill


@pytest.mark.testnet
def test_cli_stops_and_starts_a_router(testnet: Testnet, restore_routers: None) -> None:
    directory = str(testnet.directory)
    assert cli("testnet", "stop-router", "r5", "--dir", directory).returncode == 0
    assert not testnet.is_running("r5")
    assert cli("testnet", "start-router", "r5", "--dir", directory).returncode == 0
    assert testnet.is_running("r5")
    assert i2cp_accepts(testnet.router("r5"))


@pytest.mark.testnet
def test_cli_up_and_down_of_a_second_testnet_leave_nothing_behind(
    testnet_host: None, tmp_path: Path
) -> None:
    """A small testnet beside the shared one: its own names, subnet and clean removal."""
    directory = str(tmp_path / "small")
    up = cli("testnet", "up", "--dir", directory, "--routers", "3", "--floodfills", "1")
    try:
        assert up.returncode == 0, up.stderr
        routers = json.loads(up.stdout)["routers"]
        assert [(r["name"], r["floodfill"]) for r in routers] == [
            ("ff1", True),
            ("r1", False),
            ("r2", False),
        ]
        assert all(set(r) == ROUTER_KEYS for r in routers)
        state = json.loads((tmp_path / "small" / "testnet.json").read_text())
        prefix = f"i2pmh-{state['id']}-"
        assert sum(ns.startswith(prefix) for ns in namespaces()) == 3
    finally:
        down = cli("testnet", "down", "--dir", directory)
    assert down.returncode == 0, down.stderr
    assert not any(ns.startswith(prefix) for ns in namespaces())
    assert not any(link.startswith(f"i2pmh{state['id']}-") for link in links())
    assert f"--datadir={tmp_path / 'small'}" not in processes()
    assert cli("testnet", "down", "--dir", directory).returncode == 0  # idempotent


def test_cli_without_a_testnet_says_what_to_do(tmp_path: Path) -> None:
    done = cli("testnet", "status", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("i2p-multihome-dev testnet: ")
    assert "run `i2p-multihome-dev testnet up --dir" in done.stderr


def test_host_check_looks_on_path_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """i2pd outside PATH (Debian's is in /usr/sbin) does not count: the check fails, and so
    do the tests that need the testnet."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (tmp_path / "ip").symlink_to("/bin/true")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TestnetError, match="i2pd not found on PATH"):
        check_host()
    (tmp_path / "i2pd").symlink_to("/bin/true")
    assert check_host() == tmp_path / "i2pd"


def test_host_check_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestnetError, match="run it as root"):
        check_host()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    with pytest.raises(TestnetError, match="apt-get install iproute2"):
        check_host()
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None if name == "i2pd" else name)
    with pytest.raises(TestnetError, match="apt-get install i2pd"):
        check_host()


def namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]


def links() -> list[str]:
    listing = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return [link["ifname"] for link in json.loads(listing.stdout)]


def processes() -> str:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return listing.stdout


def test_testnet_addresses_outside_a_live_testnet_go_nowhere(testnet: Testnet) -> None:
    """A client left pointing at a removed testnet's router fails at once instead of
    following the default route off this machine."""
    live = {ipaddress.IPv4Network(f"{r.address}/24", strict=False) for r in testnet.routers}
    elsewhere = (
        next(net for net in TESTNET_RANGE.subnets(new_prefix=24) if net not in live).network_address
        + 5
    )
    started = time.monotonic()
    with socket.socket() as sock, pytest.raises(OSError) as refused:
        sock.settimeout(5)
        sock.connect((str(elsewhere), I2CP_PORT))
    assert refused.value.errno == errno.EHOSTUNREACH, refused.value
    assert time.monotonic() - started < 1.0
