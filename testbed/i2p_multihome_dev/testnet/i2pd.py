"""One testnet router's i2pd: its configuration, its process, and its identity."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from i2p_multihome.wire.encoding import b64encode, sha256
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import is_zombie, stat_fields
from i2p_multihome_dev.testnet.network import (
    CONSOLE_PORT,
    I2CP_PORT,
    NTCP2_PORT,
    SAM_PORT,
    TestnetError,
    TestnetRouter,
)

NETID = 7
ROUTER_INFO = "router.info"
# The address book stays enabled because i2pd 2.45.1's SAM bridge dereferences its storage,
# which exists only when it is: a NAMING LOOKUP of a b32, a STREAM CONNECT to a base64
# destination and every STREAM ACCEPTed stream end in a null pointer and the router dies
# (AddressBook.cpp 436-446 GetFullAddress/InsertFullAddress, AddressBook::Start 312-324).
# These files in the datadir keep it from reaching out: an empty hosts.txt makes the book
# count as loaded (so the default subscription is never fetched), and a subscriptions.txt
# with no URL in it leaves no subscription, where an empty `subscriptions =` would be read
# as one subscription with an empty URL (LoadSubscriptions, StartSubscriptions 545-575, 653).
ADDRESS_BOOK_FILES = {
    "hosts.txt": "",
    "subscriptions.txt": "# none: testnet routers subscribe to nothing\n",
}
_LOG_LEVEL = "info"
_CERTS_DIR = Path("/usr/share/i2pd/certificates")
# RouterIdentity: 256-byte public key, 128-byte signing key, certificate type (1 byte) and
# length (2 bytes), then the certificate's payload.
_IDENTITY_FIXED = 387
_PIDFILE_TIMEOUT_S = 15.0


def i2pd_conf(router: TestnetRouter, logfile: Path, seed_zip: Path | None) -> str:
    """One router's i2pd.conf: the recipe proven with Debian's i2pd 2.45.1 (i2p-facts.md).

    Everything that could reach beyond the testnet (reseed servers, NTP, UPnP, address book
    subscriptions) is off, though the address book itself is on (see `ADDRESS_BOOK_FILES`);
    only NTCP2, I2CP, SAM (TCP and UDP) and the console listen.
    """
    d = router.datadir
    return "\n".join(
        [
            "log = file",
            f"logfile = {logfile}",
            f"loglevel = {_LOG_LEVEL}",
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
            "enabled = true",
            f"address = {router.address}",
            f"port = {SAM_PORT}",
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
            "enabled = true",
            "defaulturl =",
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

    Read from ``router.info``, so it works while the router is down.
    """
    data = (datadir / ROUTER_INFO).read_bytes()
    if len(data) < _IDENTITY_FIXED:
        raise TestnetError(f"{datadir / ROUTER_INFO} is truncated ({len(data)} bytes)")
    identity_len = _IDENTITY_FIXED + int.from_bytes(data[385:387], "big")
    if len(data) < identity_len:
        raise TestnetError(f"{datadir / ROUTER_INFO} is truncated ({len(data)} bytes)")
    return b64encode(sha256(data[:identity_len]))


def start_i2pd(
    router: TestnetRouter, i2pd: Path, console_log: Path, see_log: Callable[[], str]
) -> None:
    """Launch i2pd inside the router's namespace; it daemonizes and writes its pidfile."""
    pidfile = router.datadir / "i2pd.pid"
    pidfile.unlink(missing_ok=True)
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
    wait_until(
        f"{router.name}'s pidfile",
        _PIDFILE_TIMEOUT_S,
        lambda: i2pd_pid(router) is not None,
        interval=0.5,
        explain=see_log,
        error=TestnetError,
    )


def i2pd_pid(router: TestnetRouter) -> int | None:
    """The router's i2pd pid if it is alive and really ours (pidfiles outlive processes)."""
    try:
        pid = int((router.datadir / "i2pd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = f"--datadir={router.datadir}".encode() in cmdline
    return pid if ours and _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may never reap it)."""
    try:
        return not is_zombie(stat_fields(pid))
    except OSError:
        return False


def end_processes(pids: set[int], graceful: bool = False, timeout: float = 15.0) -> None:
    """SIGKILL the processes and wait until they are gone; with ``graceful``, first give
    them ``timeout`` seconds to exit on SIGTERM."""
    if graceful:
        _signal(pids, signal.SIGTERM)
        with contextlib.suppress(TestnetError):
            _wait_gone(pids, timeout, "SIGTERM")
            return
    _signal(pids, signal.SIGKILL)
    _wait_gone(pids, timeout, "SIGKILL")


def _signal(pids: set[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_gone(pids: set[int], timeout: float, signal_name: str) -> None:
    wait_until(
        f"processes {sorted(pids)} to exit on {signal_name}",
        timeout,
        lambda: not any(_pid_alive(pid) for pid in pids),
        interval=0.05,
        error=TestnetError,
    )
