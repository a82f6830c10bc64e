"""Background processes the test bed starts (etcd, kube-apiserver, the operator, the Java
router): started detached, told apart from a later process reusing their PID, stopped by
process group, their loopback ports checked free, and their resources read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from i2p_multihome_dev.polling import wait_until

# SIGKILL cannot be ignored: a process still there after this is stuck in the kernel.
_KILL_GRACE_S = 5.0


class _StillThere(Exception):
    """A process or port outlived the wait for it to go (the callers answer False)."""


# Children this interpreter started, kept so `poll()` reaps them: otherwise they linger as
# zombies (PID 1 here may never reap them) or warn when garbage-collected while running.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn_detached(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a process in its own session, so it outlives the command that started it."""
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _children[process.pid] = process
    return process.pid


def stat_fields(pid: int) -> list[str]:
    """Fields 3 onward of /proc/PID/stat (state, ppid, pgrp, ...; index = field - 3).
    The command name before them may contain spaces and parentheses. Raises OSError
    once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def is_zombie(fields: list[str]) -> bool:
    """A dead process not yet reaped by its parent (PID 1 here may never reap it): it
    holds no port, file or memory any more."""
    return fields[0] in ("Z", "X")


def live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process on the machine that is not a zombie."""
    for entry in Path("/proc").glob("[0-9]*"):
        # A process may exit between listing and reading.
        with contextlib.suppress(OSError):
            fields = stat_fields(int(entry.name))
            if not is_zombie(fields):
                yield int(entry.name), fields


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat: tells our process from a later one reusing its PID."""
    return int(stat_fields(pid)[19])


def process_alive(pid: int, ticks: int) -> bool:
    """True while that very process runs (not exited, not a zombie, PID not reused)."""
    if pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        fields = stat_fields(pid)
    except OSError:
        return False
    return not is_zombie(fields) and int(fields[19]) == ticks


def signal_group(pid: int, ticks: int, signum: signal.Signals, grace_s: float) -> bool:
    """Send `signum` to the process group `spawn_detached` made; True once the process is
    gone, within `grace_s`."""
    if process_alive(pid, ticks):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
    try:
        wait_until(
            f"pid {pid} to exit on {signum.name}",
            grace_s,
            lambda: not process_alive(pid, ticks),
            interval=0.1,
            error=_StillThere,
        )
    except _StillThere:
        return False
    _children.pop(pid, None)
    return True


def stop_process_group(pid: int, ticks: int, term_grace_s: float) -> bool:
    """SIGTERM the process group, SIGKILL it if it lingers; True once the process is gone."""
    return signal_group(pid, ticks, signal.SIGTERM, term_grace_s) or signal_group(
        pid, ticks, signal.SIGKILL, _KILL_GRACE_S
    )


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports the kernel hands out (held together while choosing)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True while `host`:`port` accepts TCP connections."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def wait_port_closed(port: int, timeout_s: float = 5.0) -> bool:
    """True once 127.0.0.1:`port` refuses connections, False if it still accepts."""
    try:
        wait_until(
            f"port {port} to close",
            timeout_s,
            lambda: not port_open(port),
            interval=0.1,
            error=_StillThere,
        )
    except _StillThere:
        return False
    return True


@dataclass(frozen=True)
class Usage:
    """One process's resources from /proc: resident memory and CPU time so far."""

    rss_bytes: int
    cpu_s: float
    wall_s: float  # since the process started


def process_usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
    )
    # utime and stime are fields 14 and 15, the start time field 22.
    rest = stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(rest[11]) + int(rest[12])) / ticks
    start_s = int(rest[19]) / ticks
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return Usage(rss_kib * 1024, cpu_s, uptime_s - start_s)


def started_at(pid: int) -> float:
    """When the process started, in epoch seconds (to a clock tick)."""
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + start_ticks(pid) / os.sysconf("SC_CLK_TCK")
