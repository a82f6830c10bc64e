"""A testnet's lifecycle: up, down, stopping and starting routers, and waiting until its
routers have built tunnels through each other.

State lives in ``DIR/testnet.json`` so separate CLI processes can act on one testnet.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from i2p_multihome.logs import fields
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.processes import port_open
from i2p_multihome_dev.statefile import load_state, save_state
from i2p_multihome_dev.testnet.console import (
    ConsoleParseError,
    ConsoleStatus,
    ConsoleTunnel,
    fetch_router_status,
    fetch_tunnels,
    run_console_command,
)
from i2p_multihome_dev.testnet.i2pd import (
    ADDRESS_BOOK_FILES,
    ROUTER_INFO,
    end_processes,
    i2pd_conf,
    i2pd_pid,
    router_identity_hash,
    start_i2pd,
)
from i2p_multihome_dev.testnet.network import (
    Plan,
    TestnetError,
    TestnetRouter,
    check_host,
    create_network,
    existing_namespaces,
    namespace_pids,
    plan,
    remove_network,
)
from i2p_multihome_dev.testnet.tunnels import (
    TunnelType,
    client_tunnel_settings,
    conf_path,
    destination_ready,
    has_udp_server,
    keys_file,
    read_keys_b32,
    server_tunnel_settings,
    tunnel_gone,
    tunnel_listed,
    tunnel_names,
    tunnel_section,
    tunnel_type,
)

log = logging.getLogger(__name__)

COMMAND = "i2p-multihome-dev testnet"
_STATE_FILE = "testnet.json"
_LOCK_FILE = "testnet.lock"
_PORT_TIMEOUT_S = 15.0


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
        return i2pd_pid(self.router(name)) is not None

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the testnet's bridge: every router reaches it.

        A backend that a router's server tunnel forwards to must listen here (or on 0.0.0.0),
        and SAM forwards streams and datagrams here."""
        return self._require().bridge_address

    def _see_log(self, name: str) -> Callable[[], str]:
        """Where a timeout's message sends the reader: the router's log."""
        return lambda: f"see {self.log_file(name)}"

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
                if any(ns.startswith(old.namespace_prefix) for ns in existing_namespaces()):
                    raise TestnetError(
                        f"a testnet is already up in {self.directory}; "
                        f"run `{COMMAND} down --dir {self.directory}` first"
                    )
                self._teardown(old)
            new = plan(self.directory, routers, floodfills)
            shutil.rmtree(self.directory / "routers", ignore_errors=True)
            # Saved before anything exists, so a crash at any point leaves `down` a way in.
            self._save(new)
            try:
                create_network(new)
                self._bootstrap(new, i2pd, deadline=started + timeout)
                self._wait_ready(list(new.routers), started + timeout, transit=True)
            except BaseException:
                log.error("testnet up failed; removing it", extra=fields(dir=self.directory))
                self._teardown(new)
                raise
        log.info(
            "testnet ready",
            extra=fields(
                dir=self.directory,
                routers=routers,
                floodfills=floodfills,
                subnet=new.subnet,
                seconds=round(time.monotonic() - started, 1),
            ),
        )
        return list(new.routers)

    def down(self) -> None:
        """Remove every process, namespace and link this testnet made; safe to repeat."""
        if not self.directory.is_dir():
            log.info("no testnet directory; nothing to remove", extra=fields(dir=self.directory))
            return
        with self._locked():
            current = self._load()
            if current is None:
                log.info("no testnet state; nothing to remove", extra=fields(dir=self.directory))
                return
            self._teardown(current)

    def stop_router(self, name: str) -> None:
        """SIGKILL the router, as a crashing host would; its datadir and identity stay."""
        router = self.router(name)
        with self._locked():
            pid = i2pd_pid(router)
            if pid is None:
                log.info("router already stopped", extra=fields(router=name))
                return
            end_processes({pid})
            # A killed i2pd's main thread is reaped before its other threads exit and close
            # its sockets: "stopped" means its I2CP port refuses connections.
            wait_until(
                f"router {name}'s I2CP port to close",
                _PORT_TIMEOUT_S,
                lambda: not port_open(router.i2cp[1], router.i2cp[0]),
                interval=0.5,
                explain=self._see_log(name),
                error=TestnetError,
            )
        log.info("router stopped", extra=fields(router=name, pid=pid))

    def start_router(self, name: str, timeout: float = 60.0) -> None:
        """Restart a stopped router with its old identity; return once I2CP accepts."""
        router = self.router(name)
        i2pd = check_host()
        with self._locked():
            if i2pd_pid(router) is not None:
                log.info("router already running", extra=fields(router=name))
                return
            self._start(router, i2pd)
            wait_until(
                f"{name}'s I2CP port",
                timeout,
                lambda: port_open(router.i2cp[1], router.i2cp[0]),
                interval=0.5,
                explain=self._see_log(name),
                error=TestnetError,
            )
        log.info("router started", extra=fields(router=name, pid=i2pd_pid(router)))

    def wait_ready(self, names: list[str] | None = None, timeout: float = 300.0) -> None:
        """Block until the named routers (default all) have built tunnels through others.

        Unlike `up`, this does not wait for transit tunnels: a router restarted in a settled
        testnet carries one only once another router next builds a tunnel and picks it, which
        can take minutes (others rebuild every ~10 minutes, and a router they failed to reach
        is skipped until their netdb's next save). Its own tunnels both ways already prove
        that it and its peers exchange messages."""
        chosen = [r for r in self._require().routers if names is None or r.name in names]
        self._wait_ready(chosen, time.monotonic() + timeout, transit=False)

    # ---- i2pd tunnels (see tunnels.py for what i2pd does with them)

    def add_client_tunnel(
        self,
        router: str,
        name: str,
        target_b32: str,
        port: int,
        options: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> tuple[str, int]:
        """An i2pd client tunnel on `router`: TCP connections to the returned address (the
        router's own, at `port`) become streams to `target_b32`. Returns once the port
        accepts and the tunnel's destination has tunnels."""
        node = self.router(router)
        settings = client_tunnel_settings(name, node.address, port, target_b32, options or {})
        b32 = self._add_tunnel(node, name, "client", settings, timeout)
        wait_until(
            f"{router}'s client tunnel {name} to accept on port {port}",
            timeout,
            lambda: port_open(port, node.address),
            interval=0.5,
            explain=self._see_log(router),
            error=TestnetError,
        )
        log.info(
            "client tunnel added",
            extra=fields(
                router=router,
                tunnel=name,
                listen=f"{node.address}:{port}",
                target=target_b32,
                b32=b32,
            ),
        )
        return (node.address, port)

    def add_server_tunnel(
        self,
        router: str,
        name: str,
        backend_host: str,
        backend_port: int,
        options: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> str:
        """An i2pd server tunnel on `router`: a destination the router hosts itself,
        single-homed, whose streams are connected to the TCP backend. Returns its b32 once
        the destination has tunnels (its LeaseSet reaches the floodfills soon after)."""
        return self._add_server_tunnel(
            router, name, "server", (backend_host, backend_port), options, timeout
        )

    def add_udp_server_tunnel(
        self,
        router: str,
        name: str,
        backend_host: str,
        backend_port: int,
        options: Mapping[str, str] | None = None,
        timeout: float = 240.0,
    ) -> str:
        """An i2pd udpserver tunnel on `router`: repliable datagrams to its destination go to
        the UDP backend, and the backend's answers go back to their sender (repliable only
        when sent 100 ms or more after the last datagram, see `UdpEchoBackend`). i2pd 2.45.1
        starts these only at router start, so this RESTARTS the router, as does every later
        tunnel change on it while it has one: every SAM and I2CP session on it ends. Add
        them before anything else on that router. Returns its b32."""
        return self._add_server_tunnel(
            router, name, "udpserver", (backend_host, backend_port), options, timeout
        )

    def _add_server_tunnel(
        self,
        router: str,
        name: str,
        kind: Literal["server", "udpserver"],
        backend: tuple[str, int],
        options: Mapping[str, str] | None,
        timeout: float,
    ) -> str:
        node = self.router(router)
        settings = server_tunnel_settings(name, kind, node.address, backend, options or {})
        b32 = self._add_tunnel(node, name, kind, settings, timeout)
        log.info(
            "server tunnel added",
            extra=fields(
                router=router, tunnel=name, kind=kind, b32=b32,
                backend=f"{backend[0]}:{backend[1]}",
            ),
        )  # fmt: skip
        return b32

    def remove_tunnel(self, router: str, name: str, timeout: float = 240.0) -> None:
        """Stop and forget a tunnel added here, keys file included; safe to repeat."""
        node = self.router(router)
        path = conf_path(node, name)
        if not path.exists():
            return
        kind = tunnel_type(node, name)
        with self._locked():
            path.unlink()
        if not self.is_running(router):  # it reads tunnels.d when it starts
            (node.datadir / keys_file(name)).unlink(missing_ok=True)
            return
        self._apply_tunnels(node, has_udp_server(node), timeout)
        wait_until(
            f"{router} to stop its tunnel {name}",
            timeout,
            lambda: tunnel_gone(node, name, kind),
            interval=0.5,
            explain=self._see_log(router),
            error=TestnetError,
        )
        (node.datadir / keys_file(name)).unlink(missing_ok=True)
        log.info("tunnel removed", extra=fields(router=router, tunnel=name))

    def tunnels(self, router: str) -> list[str]:
        """Names of the tunnels added to `router` and not removed."""
        return tunnel_names(self.router(router))

    def _add_tunnel(
        self,
        node: TestnetRouter,
        name: str,
        kind: TunnelType,
        settings: Mapping[str, str],
        timeout: float,
    ) -> str:
        if not self.is_running(node.name):
            raise TestnetError(f"router {node.name} is not running; start it first")
        path = conf_path(node, name)
        if path.exists():
            raise TestnetError(f"{node.name} already has a tunnel {name}; remove it first")
        with self._locked():
            path.write_text(tunnel_section(name, settings))
        try:
            self._apply_tunnels(node, has_udp_server(node), timeout)
            keys = node.datadir / keys_file(name)
            wait_until(
                f"{node.name} to write {keys.name}",
                timeout,
                keys.is_file,
                interval=0.2,
                explain=self._see_log(node.name),
                error=TestnetError,
            )
            b32 = read_keys_b32(keys)
            wait_until(
                f"{node.name} to run its {kind} tunnel {name}",
                timeout,
                lambda: tunnel_listed(node, name, kind),
                interval=0.5,
                explain=self._see_log(node.name),
                error=TestnetError,
            )
            wait_until(
                f"{node.name}'s tunnel {name} ({b32}) to have tunnels",
                timeout,
                lambda: destination_ready(node, b32),
                interval=0.5,
                explain=self._see_log(node.name),
                error=TestnetError,
            )
        except BaseException:
            # The original error is the one to report; a failed cleanup is in the log.
            with contextlib.suppress(TestnetError, OSError, ConsoleParseError):
                self.remove_tunnel(node.name, name, timeout)
            raise
        return b32

    def _apply_tunnels(self, node: TestnetRouter, restart: bool, timeout: float) -> None:
        """Make the router run what its tunnels.d says: a reload, or a restart where i2pd
        cannot reload (a udpserver tunnel on it)."""
        if not restart:
            with self._locked():
                run_console_command(node.console, "reload_tunnels_config")
            return
        self.stop_router(node.name)
        self.start_router(node.name, timeout=timeout)
        self.wait_ready([node.name], timeout=timeout)

    # ---- internals

    def _bootstrap(self, new: Plan, i2pd: Path, deadline: float) -> None:
        """Start each router once for its router.info, zip them all, restart from that seed."""
        (self.directory / "logs").mkdir(exist_ok=True)
        for router in new.routers:
            (router.datadir / "tunnels.d").mkdir(parents=True, exist_ok=True)
            (router.datadir / "tunnels.conf").write_text("")
            for file_name, text in ADDRESS_BOOK_FILES.items():
                (router.datadir / file_name).write_text(text)
            self._write_conf(router, seed_zip=None)
            self._start(router, i2pd)
        for router in new.routers:
            wait_until(
                f"{router.name}'s router.info",
                max(deadline - time.monotonic(), 1.0),
                (router.datadir / ROUTER_INFO).is_file,
                interval=0.5,
                explain=self._see_log(router.name),
                error=TestnetError,
            )
        # SIGTERM: i2pd may be rewriting router.info; a clean exit leaves it whole.
        running = {pid for r in new.routers if (pid := i2pd_pid(r)) is not None}
        end_processes(running, graceful=True)
        seed_zip = self.directory / "seed.zip"
        with zipfile.ZipFile(seed_zip, "w", zipfile.ZIP_DEFLATED) as archive:
            for router in new.routers:
                ident = router_identity_hash(router.datadir)
                archive.write(router.datadir / ROUTER_INFO, f"routerInfo-{ident}.dat")
        for router in new.routers:
            self._write_conf(router, seed_zip)
            self._start(router, i2pd)
        log.info("routers started from seed", extra=fields(seed=seed_zip))

    def _write_conf(self, router: TestnetRouter, seed_zip: Path | None) -> None:
        conf = i2pd_conf(router, self.log_file(router.name), seed_zip)
        (router.datadir / "i2pd.conf").write_text(conf)

    def _start(self, router: TestnetRouter, i2pd: Path) -> None:
        console_log = self.directory / "logs" / f"{router.name}.stdout"
        start_i2pd(router, i2pd, console_log, self._see_log(router.name))

    def _wait_ready(self, routers: list[TestnetRouter], deadline: float, *, transit: bool) -> None:
        """Poll every router's console until each has built tunnels through its peers (and,
        with `transit`, carries a tunnel another router built)."""
        expected = len(self._require().routers)
        waiting = {r.name: "not polled yet" for r in routers}
        by_name = {r.name: r for r in routers}

        def all_ready() -> bool | NotYet:
            for name in list(waiting):
                console = by_name[name].console
                try:
                    status = fetch_router_status(console, timeout=2.0)
                    tunnels = fetch_tunnels(console, timeout=2.0)
                except (OSError, ConsoleParseError) as exc:
                    waiting[name] = f"console: {exc}"
                    continue
                reason = not_ready_reason(status, tunnels, expected, transit=transit)
                if reason is None:
                    del waiting[name]
                else:
                    waiting[name] = reason
            if waiting:
                return NotYet("; ".join(f"{name}: {why}" for name, why in sorted(waiting.items())))
            return True

        wait_until(
            "routers to build tunnels",
            deadline - time.monotonic(),
            all_ready,
            interval=1.0,
            explain=lambda: f"see the logs in {self.directory / 'logs'}",
            error=TestnetError,
        )

    def _teardown(self, old: Plan) -> None:
        namespaces = [ns for ns in existing_namespaces() if ns.startswith(old.namespace_prefix)]
        pids = {pid for r in old.routers if (pid := i2pd_pid(r)) is not None}
        for ns in namespaces:
            pids.update(namespace_pids(ns))
        end_processes(pids)
        remove_network(old, namespaces)
        (self.directory / _STATE_FILE).unlink(missing_ok=True)
        log.info(
            "testnet removed",
            extra=fields(dir=self.directory, namespaces=len(namespaces), processes=len(pids)),
        )

    def _load(self) -> Plan | None:
        state_file = self.directory / _STATE_FILE
        return load_state(
            state_file, lambda raw: Plan.from_json(self.directory, state_file, raw), TestnetError
        )

    def _require(self) -> Plan:
        current = self._load()
        if current is None:
            raise TestnetError(
                f"no testnet in {self.directory}; run `{COMMAND} up --dir {self.directory}` first"
            )
        return current

    def _save(self, new: Plan) -> None:
        save_state(self.directory / _STATE_FILE, new.to_json())

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
    status: ConsoleStatus,
    tunnels: list[ConsoleTunnel],
    expected_routers: int,
    *,
    transit: bool = True,
) -> str | None:
    """Why a router is not yet a working member of the testnet, or None if it is.

    Known routers come from the seed and zero-hop tunnels need no peers, so neither proves
    anything; an established inbound and outbound tunnel through other routers, plus a
    transit tunnel others built through this one, prove NTCP2 works both ways and that
    others select this router. `transit=False` leaves out the last: see `Testnet.wait_ready`.
    """
    if status.routers < expected_routers - 1:
        return f"knows {status.routers} of {expected_routers} routers"
    built = [t for t in tunnels if t.state == "established" and t.hops]
    if not any(t.inbound for t in built):
        return "no inbound tunnel through other routers yet"
    if all(t.inbound for t in built):
        return "no outbound tunnel through other routers yet"
    if transit and status.transit_tunnels < 1:
        return "no transit tunnels yet"
    return None
