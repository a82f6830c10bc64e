"""Background processes the test bed starts (etcd, kube-apiserver, the demo's operator):
started detached, told apart from a later process reusing their PID, stopped by process
group, and their loopback ports checked free."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

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


def stop_process_group(pid: int, ticks: int, term_grace_s: float) -> bool:
    """SIGTERM the process group, SIGKILL it if it lingers; True once the process is gone."""
    for signum, grace in ((signal.SIGTERM, term_grace_s), (signal.SIGKILL, 5.0)):
        if not process_alive(pid, ticks):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
        deadline = time.monotonic() + grace
        while process_alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
    if process_alive(pid, ticks):
        return False
    _children.pop(pid, None)
    return True


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
    deadline = time.monotonic() + timeout_s
    while port_open(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
