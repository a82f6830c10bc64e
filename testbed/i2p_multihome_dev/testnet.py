"""A private I2P testnet of Debian i2pd routers, one network namespace each.

Tests and the demo need real routers that talk only to each other. Each router runs in its
own namespace with a veth onto one bridge in the root namespace; addresses come from
198.18.0.0/15 (the only non-public range i2pd 2.45.1 accepts NTCP2 peers from). The bridge
has an address too, so the balancer under test, running in the root namespace, reaches every
router's I2CP port and web console. Nothing is routed anywhere else.

State lives in ``DIR/testnet.json`` so separate CLI processes can act on one testnet.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from i2p_multihome.logs import fields
from i2p_multihome_dev.processes import is_zombie, port_open, stat_fields

log = logging.getLogger(__name__)

I2CP_PORT = 7654
CONSOLE_PORT = 7070
NTCP2_PORT = 20000
NETID = 7

_NAME_PREFIX = "i2pmh"
_TESTNET_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
_STATE_FILE = "testnet.json"
_LOCK_FILE = "testnet.lock"
_STATE_VERSION = 1
_I2PD_LOG_LEVEL = "info"
_CERTS_DIR = Path("/usr/share/i2pd/certificates")
_ROUTER_INFO = "router.info"


class TestnetError(Exception):
    """A testnet operation failed; the message says what to do about it."""

    __test__ = False  # a name pytest would otherwise try to collect


class ConsoleParseError(ValueError):
    """The i2pd web console returned a page this parser does not understand."""


# --------------------------------------------------------------------------- routers


@dataclasses.dataclass(frozen=True)
class TestnetRouter:
    """One router of the testnet, as the balancer under test and the tests see it."""

    __test__ = False

    name: str
    address: str
    floodfill: bool
    namespace: str
    datadir: Path

    @property
    def i2cp(self) -> tuple[str, int]:
        return (self.address, I2CP_PORT)

    @property
    def console(self) -> str:
        return f"http://{self.address}:{CONSOLE_PORT}/"

    def to_json(self) -> dict[str, Any]:
        """The shape the CLI prints: i2cp as ``host:port``, console as a URL."""
        return {
            "name": self.name,
            "address": self.address,
            "i2cp": f"{self.address}:{I2CP_PORT}",
            "console": self.console,
            "floodfill": self.floodfill,
        }


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What ``up`` made, persisted so any later process can stop, start or remove it."""

    testnet_id: str
    subnet: ipaddress.IPv4Network
    directory: Path
    routers: tuple[TestnetRouter, ...]

    @property
    def bridge(self) -> str:
        return f"{self.link_prefix}br"

    @property
    def link_prefix(self) -> str:
        return f"{_NAME_PREFIX}{self.testnet_id}-"

    @property
    def namespace_prefix(self) -> str:
        return f"{_NAME_PREFIX}-{self.testnet_id}-"

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def veth(self, router: TestnetRouter) -> str:
        return f"{self.link_prefix}{router.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "id": self.testnet_id,
            "subnet": str(self.subnet),
            "routers": [
                {"name": r.name, "address": r.address, "floodfill": r.floodfill}
                for r in self.routers
            ],
        }

    @classmethod
    def from_json(cls, directory: Path, data: dict[str, Any]) -> _Plan:
        if data.get("version") != _STATE_VERSION:
            raise TestnetError(
                f"{directory / _STATE_FILE} has an unknown format; remove it and any "
                f"leftover '{_NAME_PREFIX}-*' namespaces by hand"
            )
        try:
            testnet_id = str(data["id"])
            return cls(
                testnet_id=testnet_id,
                subnet=ipaddress.IPv4Network(data["subnet"]),
                directory=directory,
                routers=tuple(
                    _router(directory, testnet_id, r["name"], r["address"], bool(r["floodfill"]))
                    for r in data["routers"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TestnetError(f"{directory / _STATE_FILE} is damaged ({exc!r})") from exc


def _router(directory: Path, testnet_id: str, name: str, address: str, ff: bool) -> TestnetRouter:
    return TestnetRouter(
        name=name,
        address=address,
        floodfill=ff,
        namespace=f"{_NAME_PREFIX}-{testnet_id}-{name}",
        datadir=directory / "routers" / name,
    )


def _plan(directory: Path, routers: int, floodfills: int, used: set[str]) -> _Plan:
    """Pick an id and a /24 no other testnet on this host uses, and name every router."""
    existing = _existing_namespaces()
    while True:
        testnet_id = secrets.token_hex(2)
        if not any(ns.startswith(f"{_NAME_PREFIX}-{testnet_id}-") for ns in existing):
            break
    free = [s for s in _TESTNET_RANGE.subnets(new_prefix=24) if str(s) not in used]
    if not free:
        raise TestnetError("every /24 of 198.18.0.0/15 is in use; run `testnet down` on old ones")
    subnet = free[secrets.randbelow(len(free))]
    names = [f"ff{i + 1}" for i in range(floodfills)]
    names += [f"r{i + 1}" for i in range(routers - floodfills)]
    return _Plan(
        testnet_id=testnet_id,
        subnet=subnet,
        directory=directory,
        routers=tuple(
            _router(
                directory, testnet_id, name, str(subnet.network_address + 2 + i), i < floodfills
            )
            for i, name in enumerate(names)
        ),
    )


# --------------------------------------------------------------------------- host commands


def check_host() -> Path:
    """Fail early, with the fix, when this host cannot run a testnet; return i2pd's path."""
    if os.geteuid() != 0:
        raise TestnetError("the testnet needs root for network namespaces; run it as root")
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("ip", path=search) is None:
        raise TestnetError("`ip` not found; install iproute2 (apt-get install iproute2)")
    i2pd = shutil.which("i2pd", path=search)
    if i2pd is None:
        raise TestnetError("i2pd not found; install Debian's i2pd (apt-get install i2pd)")
    return Path(i2pd)


def _run(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestnetError(f"`{' '.join(args)}` failed: {exc}") from exc
    if done.returncode != 0:
        raise TestnetError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _existing_namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _existing_links() -> list[str]:
    """Link names in the root namespace (without the ``@peer`` suffix of veths)."""
    return [entry["ifname"] for entry in json.loads(_run("ip", "-j", "link", "show") or "[]")]


def _used_subnets() -> set[str]:
    """The /24s of 198.18.0.0/15 that already carry an address in the root namespace."""
    used: set[str] = set()
    for entry in json.loads(_run("ip", "-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            net = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if not net.overlaps(_TESTNET_RANGE):
                continue
            if net.prefixlen >= 24:
                used.add(str(net.supernet(new_prefix=24)))
            else:
                used.update(str(s) for s in net.subnets(new_prefix=24))
    return used


def _disable_ipv6(link: str, namespace: str | None = None) -> None:
    """Keep IPv6 link-local chatter off our links: the testnet is IPv4 only."""
    if not Path("/proc/sys/net/ipv6").is_dir():
        return  # a kernel without IPv6 sends none
    setting = f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6"
    if namespace is None:
        Path(setting).write_text("1")
    else:
        _run("ip", "netns", "exec", namespace, "sh", "-c", f"echo 1 > {setting}")


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may never reap it)."""
    try:
        return not is_zombie(stat_fields(pid))
    except OSError:
        return False


def _end_processes(pids: set[int], graceful: bool = False, timeout: float = 15.0) -> None:
    """SIGKILL the processes and wait until they are gone; with ``graceful``, first give
    them ``timeout`` seconds to exit on SIGTERM."""
    if graceful and _signal_and_wait(pids, signal.SIGTERM, timeout):
        return
    if not _signal_and_wait(pids, signal.SIGKILL, timeout):
        raise TestnetError(f"processes {sorted(pids)} survived SIGKILL for {timeout:.0f}s")


def _signal_and_wait(pids: set[int], signum: signal.Signals, timeout: float) -> bool:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for(what: str, check: Callable[[], bool], timeout: float, hint: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TestnetError(f"timed out after {timeout:.0f}s waiting for {what}; {hint}")
        time.sleep(0.5)


# --------------------------------------------------------------------------- i2pd


def _i2pd_conf(router: TestnetRouter, logfile: Path, seed_zip: Path | None) -> str:
    """One router's i2pd.conf: the recipe proven with Debian's i2pd 2.45.1 (i2p-facts.md).

    Everything that could reach beyond the testnet (reseed servers, NTP, UPnP, address book
    subscriptions) is off; only NTCP2, I2CP and the console listen.
    """
    d = router.datadir
    return "\n".join(
        [
            "log = file",
            f"logfile = {logfile}",
            f"loglevel = {_I2PD_LOG_LEVEL}",
            "daemon = true",
            f"pidfile = {d / 'i2pd.pid'}",
            f"tunconf = {d / 'tunnels.conf'}",
            f"tunnelsdir = {d / 'tunnels.d'}",
            f"certsdir = {_CERTS_DIR}",
            f"host = {router.address}",
            "nat = false",
            "ipv4 = true",
            "ipv6 = false",
            "reservedrange = false",
            f"netid = {NETID}",
            f"floodfill = {str(router.floodfill).lower()}",
            # Every router high-bandwidth, else client tunnels pick only floodfills as gateways.
            "bandwidth = X",
            "[ntcp2]",
            "enabled = true",
            "published = true",
            f"port = {NTCP2_PORT}",
            "[ssu2]",
            "enabled = false",
            "published = false",
            "[http]",
            "enabled = true",
            f"address = {router.address}",
            f"port = {CONSOLE_PORT}",
            "strictheaders = false",
            "[httpproxy]",
            "enabled = false",
            "[socksproxy]",
            "enabled = false",
            "[sam]",
            "enabled = false",
            "[bob]",
            "enabled = false",
            "[i2cp]",
            "enabled = true",
            f"address = {router.address}",
            f"port = {I2CP_PORT}",
            "[i2pcontrol]",
            "enabled = false",
            "[upnp]",
            "enabled = false",
            "[nettime]",
            "enabled = false",
            "frompeers = false",
            "[meshnets]",
            "yggdrasil = false",
            "[addressbook]",
            "enabled = false",
            "subscriptions =",
            "[reseed]",
            "verify = false",
            "urls =",
            "yggurls =",
            f"zipfile = {seed_zip}" if seed_zip else "",
            "",
        ]
    )


def router_identity_hash(datadir: Path) -> str:
    """The router's identity hash in I2P base64, as the console shows lease gateways.

    Read from ``router.info`` (RouterIdentity = 256-byte public key, 128-byte signing key,
    certificate type u8 + length u16 + payload), so it works while the router is down.
    """
    data = (datadir / _ROUTER_INFO).read_bytes()
    if len(data) < 387:
        raise TestnetError(f"{datadir / _ROUTER_INFO} is truncated ({len(data)} bytes)")
    identity_len = 387 + int.from_bytes(data[385:387], "big")
    return i2p_base64(hashlib.sha256(data[:identity_len]).digest())


def i2p_base64(data: bytes) -> str:
    return base64.b64encode(data, altchars=b"-~").decode("ascii")


# --------------------------------------------------------------------------- testnet


class Testnet:
    """A testnet rooted at one directory; every method re-reads the state file there."""

    __test__ = False

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).resolve()

    @property
    def routers(self) -> list[TestnetRouter]:
        return list(self._require().routers)

    def router(self, name: str) -> TestnetRouter:
        for router in self._require().routers:
            if router.name == name:
                return router
        raise TestnetError(f"no router {name!r} in the testnet in {self.directory}")

    def log_file(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def identity_hash(self, name: str) -> str:
        return router_identity_hash(self.router(name).datadir)

    def is_running(self, name: str) -> bool:
        return self._pid(self.router(name)) is not None

    # ---- lifecycle

    def up(
        self, routers: int = 9, floodfills: int = 3, timeout: float = 300.0
    ) -> list[TestnetRouter]:
        """Create the network, bootstrap every router from a shared seed, wait for tunnels."""
        if not 1 <= floodfills <= routers <= 99:
            raise TestnetError("need 1 <= floodfills <= routers <= 99")
        i2pd = check_host()
        started = time.monotonic()
        with self._locked():
            if (old := self._load()) is not None:
                if any(ns.startswith(old.namespace_prefix) for ns in _existing_namespaces()):
                    raise TestnetError(
                        f"a testnet is already up in {self.directory}; "
                        f"run `i2p-multihome-dev testnet down --dir {self.directory}` first"
                    )
                self._teardown(old)
            plan = _plan(self.directory, routers, floodfills, _used_subnets())
            shutil.rmtree(self.directory / "routers", ignore_errors=True)
            # Saved before anything exists, so a crash at any point leaves `down` a way in.
            self._save(plan)
            try:
                self._create_network(plan)
                self._bootstrap(plan, i2pd, deadline=started + timeout)
                self._wait_ready(list(plan.routers), started + timeout)
            except BaseException:
                log.error("testnet up failed; removing it", extra=fields(dir=self.directory))
                self._teardown(plan)
                raise
        log.info(
            "testnet ready",
            extra=fields(
                dir=self.directory,
                routers=routers,
                floodfills=floodfills,
                subnet=plan.subnet,
                seconds=round(time.monotonic() - started, 1),
            ),
        )
        return list(plan.routers)

    def down(self) -> None:
        """Remove every process, namespace and link this testnet made; safe to repeat."""
        if not self.directory.is_dir():
            log.info("no testnet directory; nothing to remove", extra=fields(dir=self.directory))
            return
        with self._locked():
            plan = self._load()
            if plan is None:
                log.info("no testnet state; nothing to remove", extra=fields(dir=self.directory))
                return
            self._teardown(plan)

    def stop_router(self, name: str) -> None:
        """SIGKILL the router, as a crashing host would; its datadir and identity stay."""
        router = self.router(name)
        with self._locked():
            pid = self._pid(router)
            if pid is None:
                log.info("router already stopped", extra=fields(router=name))
                return
            _end_processes({pid})
            # A killed i2pd's main thread is reaped before its other threads exit and close
            # its sockets: "stopped" means its I2CP port refuses connections.
            _wait_for(
                f"router {name}'s I2CP port to close",
                lambda: not port_open(router.i2cp[1], router.i2cp[0]),
                15.0,
                f"see {self.log_file(name)}",
            )
        log.info("router stopped", extra=fields(router=name, pid=pid))

    def start_router(self, name: str, timeout: float = 60.0) -> None:
        """Restart a stopped router with its old identity; return once I2CP accepts."""
        router = self.router(name)
        i2pd = check_host()
        with self._locked():
            if self._pid(router) is not None:
                log.info("router already running", extra=fields(router=name))
                return
            self._start(router, i2pd)
            _wait_for(
                f"{name}'s I2CP port",
                lambda: port_open(router.i2cp[1], router.i2cp[0]),
                timeout,
                f"see {self.log_file(name)}",
            )
        log.info("router started", extra=fields(router=name, pid=self._pid(router)))

    def wait_ready(self, names: list[str] | None = None, timeout: float = 300.0) -> None:
        """Block until the named routers (default all) have built tunnels."""
        plan = self._require()
        chosen = [r for r in plan.routers if names is None or r.name in names]
        self._wait_ready(chosen, time.monotonic() + timeout)

    # ---- internals

    def _create_network(self, plan: _Plan) -> None:
        _run("ip", "link", "add", plan.bridge, "type", "bridge")
        _disable_ipv6(plan.bridge)
        _run("ip", "addr", "add", f"{plan.bridge_address}/24", "dev", plan.bridge)
        _run("ip", "link", "set", plan.bridge, "up")
        for router in plan.routers:
            ns, veth = router.namespace, plan.veth(router)
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _disable_ipv6(veth)
            _disable_ipv6("eth0", ns)
            _run("ip", "link", "set", veth, "master", plan.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{router.address}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        log.info(
            "testnet network created",
            extra=fields(bridge=plan.bridge, subnet=plan.subnet, routers=len(plan.routers)),
        )

    def _bootstrap(self, plan: _Plan, i2pd: Path, deadline: float) -> None:
        """Start each router once for its router.info, zip them all, restart from that seed."""
        (self.directory / "logs").mkdir(exist_ok=True)
        for router in plan.routers:
            (router.datadir / "tunnels.d").mkdir(parents=True, exist_ok=True)
            (router.datadir / "tunnels.conf").write_text("")
            self._write_conf(router, seed_zip=None)
            self._start(router, i2pd)
        for router in plan.routers:
            _wait_for(
                f"{router.name}'s router.info",
                (router.datadir / _ROUTER_INFO).is_file,
                max(deadline - time.monotonic(), 1.0),
                f"see {self.log_file(router.name)}",
            )
        # SIGTERM: i2pd may be rewriting router.info; a clean exit leaves it whole.
        running = {pid for r in plan.routers if (pid := self._pid(r)) is not None}
        _end_processes(running, graceful=True)
        seed_zip = self.directory / "seed.zip"
        with zipfile.ZipFile(seed_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for router in plan.routers:
                ident = router_identity_hash(router.datadir)
                archive.write(router.datadir / _ROUTER_INFO, f"routerInfo-{ident}.dat")
        for router in plan.routers:
            self._write_conf(router, seed_zip)
            self._start(router, i2pd)
        log.info("routers started from seed", extra=fields(seed=seed_zip))

    def _write_conf(self, router: TestnetRouter, seed_zip: Path | None) -> None:
        conf = _i2pd_conf(router, self.log_file(router.name), seed_zip)
        (router.datadir / "i2pd.conf").write_text(conf)

    def _start(self, router: TestnetRouter, i2pd: Path) -> None:
        """Launch i2pd inside the router's namespace; it daemonizes and writes its pidfile."""
        pidfile = router.datadir / "i2pd.pid"
        pidfile.unlink(missing_ok=True)
        console_log = self.directory / "logs" / f"{router.name}.stdout"
        argv = [
            "ip",
            "netns",
            "exec",
            router.namespace,
            str(i2pd),
            f"--datadir={router.datadir}",
            f"--conf={router.datadir / 'i2pd.conf'}",
        ]
        with console_log.open("ab") as out:
            code = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30, check=False
            ).returncode
        if code != 0:
            raise TestnetError(f"i2pd {router.name} exited with {code}; see {console_log}")
        _wait_for(
            f"{router.name}'s pidfile",
            lambda: self._pid(router) is not None,
            15.0,
            f"see {self.log_file(router.name)}",
        )

    def _pid(self, router: TestnetRouter) -> int | None:
        """The router's i2pd pid if it is alive and really ours (pidfiles outlive processes)."""
        try:
            pid = int((router.datadir / "i2pd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = f"--datadir={router.datadir}".encode() in cmdline
        return pid if ours and _pid_alive(pid) else None

    def _wait_ready(self, routers: list[TestnetRouter], deadline: float) -> None:
        """Poll every router's console until each has built tunnels through its peers."""
        expected = len(self._require().routers)
        waiting = {r.name: "not polled yet" for r in routers}
        by_name = {r.name: r for r in routers}
        while True:
            for name in list(waiting):
                console = by_name[name].console
                try:
                    status = fetch_router_status(console, timeout=2.0)
                    tunnels = fetch_tunnels(console, timeout=2.0)
                except (OSError, ConsoleParseError) as exc:
                    waiting[name] = f"console: {exc}"
                    continue
                reason = not_ready_reason(status, tunnels, expected)
                if reason is None:
                    del waiting[name]
                else:
                    waiting[name] = reason
            if not waiting:
                return
            if time.monotonic() > deadline:
                detail = "; ".join(f"{name}: {why}" for name, why in sorted(waiting.items()))
                raise TestnetError(
                    f"routers did not build tunnels in time ({detail}); "
                    f"see the logs in {self.directory / 'logs'}"
                )
            time.sleep(1.0)

    def _teardown(self, plan: _Plan) -> None:
        namespaces = [ns for ns in _existing_namespaces() if ns.startswith(plan.namespace_prefix)]
        pids = {pid for r in plan.routers if (pid := self._pid(r)) is not None}
        for ns in namespaces:
            pids.update(int(p) for p in _run("ip", "netns", "pids", ns).split())
        _end_processes(pids)
        # Links first: deleting a veth end removes its peer at once, whereas a deleted
        # namespace releases its veths later, in the kernel's own time.
        for link in _existing_links():
            if link.startswith(plan.link_prefix):
                _run("ip", "link", "del", link)
        for ns in namespaces:
            _run("ip", "netns", "del", ns)
        (self.directory / _STATE_FILE).unlink(missing_ok=True)
        log.info(
            "testnet removed",
            extra=fields(dir=self.directory, namespaces=len(namespaces), processes=len(pids)),
        )

    def _load(self) -> _Plan | None:
        try:
            data = json.loads((self.directory / _STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TestnetError(f"cannot read {self.directory / _STATE_FILE}: {exc}") from exc
        return _Plan.from_json(self.directory, data)

    def _require(self) -> _Plan:
        plan = self._load()
        if plan is None:
            raise TestnetError(
                f"no testnet in {self.directory}; "
                f"run `i2p-multihome-dev testnet up --dir {self.directory}` first"
            )
        return plan

    def _save(self, plan: _Plan) -> None:
        tmp = self.directory / f"{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
        tmp.replace(self.directory / _STATE_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise mutations by concurrent CLI processes acting on one directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / _LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def not_ready_reason(
    status: ConsoleStatus, tunnels: list[ConsoleTunnel], expected_routers: int
) -> str | None:
    """Why a router is not yet a working member of the testnet, or None if it is.

    Known routers come from the seed and zero-hop tunnels need no peers, so neither proves
    anything; an established inbound and outbound tunnel through other routers, plus a
    transit tunnel others built through this one, prove NTCP2 works both ways.
    """
    if status.routers < expected_routers - 1:
        return f"knows {status.routers} of {expected_routers} routers"
    built = [t for t in tunnels if t.state == "established" and t.hops]
    if not any(t.inbound for t in built):
        return "no inbound tunnel through other routers yet"
    if all(t.inbound for t in built):
        return "no outbound tunnel through other routers yet"
    if status.transit_tunnels < 1:
        return "no transit tunnels yet"
    return None


# --------------------------------------------------------------------------- web console
#
# Parsers for the i2pd 2.45.1 web console (daemon/HTTPServer.cpp). The page is generated
# HTML with a fixed shape, so each field is one anchored regular expression; every count is
# bounded so hostile input cannot make int() or the regex engine misbehave.

_B32 = r"([a-z2-7]{52,60})"
_B64_HASH = r"([A-Za-z0-9~-]{43}=)"


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
    """One of the router's own tunnels (``/?page=tunnels``).

    ``hops`` are the other routers in order from the far end for inbound tunnels (the first
    is the gateway) and from the near end for outbound ones, each as the console abbreviates
    it: the first four characters of the router's base64 identity hash.
    """

    inbound: bool
    tunnel_id: int
    hops: tuple[str, ...]
    state: str  # building, failed, expiring, established or unknown
    exploratory: bool


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
        ConsoleLease(gateway=m.group(1), tunnel_id=int(m.group(2)), end_date=m.group(3))
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


def parse_tunnels(page: str) -> list[ConsoleTunnel]:
    """The router's tunnels, inbound then outbound, as the Tunnels page lists them."""
    _require_page(page, "Tunnels")
    inbound_at = page.find("<b>Inbound tunnels:</b>")
    outbound_at = page.find("<b>Outbound tunnels:</b>")
    if not 0 <= inbound_at < outbound_at:
        raise ConsoleParseError("Tunnels page without inbound and outbound lists")
    tunnels = []
    for match in _TUNNEL_ITEM.finditer(page, inbound_at):
        path, state, label = match.groups()
        inbound = match.start() < outbound_at
        # Inbound: "⇒ hop ⇒ hop ⇒ ID:me"; outbound: "ID:me ⇒ hop ⇒ hop ⇒".
        ends = re.search(r"&#8658; (\d{1,10}):me" if inbound else r"(\d{1,10}):me &#8658;", path)
        if ends is None:
            raise ConsoleParseError(f"tunnel entry without an id: {path[:80]!r}")
        if inbound:
            hops = re.findall(f"&#8658; ({_HOP}) ", path[: ends.start()])
        else:
            hops = re.findall(f" ({_HOP}) &#8658;", path[ends.end() :])
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


def _get(console_url: str, page: str | None, timeout: float) -> str:
    """GET a console page, never through a proxy: only testnet addresses may be reached."""
    if not console_url.startswith("http://"):
        raise ValueError(f"console URL must be http://…, got {console_url!r}")
    url = console_url.rstrip("/") + "/" + (f"?page={page}" if page else "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


def fetch_router_status(console_url: str, timeout: float = 10.0) -> ConsoleStatus:
    return parse_router_status(_get(console_url, None, timeout))


def fetch_leasesets(console_url: str, timeout: float = 10.0) -> list[ConsoleLeaseSet]:
    return parse_leasesets(_get(console_url, "leasesets", timeout))


def fetch_tunnels(console_url: str, timeout: float = 10.0) -> list[ConsoleTunnel]:
    return parse_tunnels(_get(console_url, "tunnels", timeout))


def fetch_local_destinations(console_url: str, timeout: float = 10.0) -> list[ConsoleDestination]:
    return parse_local_destinations(_get(console_url, "local_destinations", timeout))


# --------------------------------------------------------------------------- CLI


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "testnet", help="run a private i2pd testnet in network namespaces (root only)"
    )
    commands = parser.add_subparsers(dest="testnet_command", required=True)

    up = commands.add_parser("up", help="create the testnet and wait until tunnels are built")
    up.add_argument("--routers", type=int, default=9)
    up.add_argument("--floodfills", type=int, default=3)
    up.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    up.set_defaults(
        func=_cli(lambda t, a: _print_routers(t.up(a.routers, a.floodfills, a.timeout)))
    )

    stop = commands.add_parser("stop-router", help="SIGKILL one router (keeps its identity)")
    stop.add_argument("name")
    stop.set_defaults(func=_cli(lambda t, a: t.stop_router(a.name)))

    start = commands.add_parser("start-router", help="restart a stopped router")
    start.add_argument("name")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    start.set_defaults(func=_cli(lambda t, a: t.start_router(a.name, a.timeout)))

    down = commands.add_parser("down", help="remove every process, namespace and link")
    down.set_defaults(func=_cli(lambda t, a: t.down()))

    status = commands.add_parser("status", help="print the routers as JSON")
    status.set_defaults(func=_cli(lambda t, a: _print_routers(t.routers)))

    for sub in (up, stop, start, down, status):
        sub.add_argument("--dir", required=True, type=Path, help="testnet state directory")


def _print_routers(routers: list[TestnetRouter]) -> None:
    print(json.dumps({"routers": [r.to_json() for r in routers]}, indent=2))


def _cli(
    action: Callable[[Testnet, argparse.Namespace], None],
) -> Callable[[argparse.Namespace], int]:
    """Run one subcommand; a TestnetError becomes one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            action(Testnet(args.dir), args)
        except (TestnetError, OSError) as exc:
            print(f"i2p-multihome-dev testnet: {exc}", file=sys.stderr)
            return 2
        return 0

    return run
