"""The real `i2p-multihome operator` as a process, for the demo, the e2e tests and the
operator benchmark alike.

It runs in a session of its own with credentials from one kubeconfig only, so it outlives
the command that started it (`demo up` records it in demo.json, and `demo down` finds it
there again by pid and start time). Liveness and metrics listen on free loopback ports, so
several operators run side by side. It is observed as a user would: its liveness endpoint,
its metrics, its log, and /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import (
    Usage,
    free_ports,
    process_alive,
    process_usage,
    signal_group,
    spawn_detached,
    start_ticks,
    wait_port_closed,
)

START_TIMEOUT_S = 60.0
# kopf finishes its handlers and the operator destroys every I2CP session on SIGTERM; the
# peering keep-alive is removed last.
STOP_TIMEOUT_S = 45.0
_KILL_GRACE_S = 5.0
_LOG_TAIL = 4000


class OperatorError(RuntimeError):
    """The operator did not start, exited, or did not stop; the message quotes its log."""


@dataclass(frozen=True)
class OperatorProcess:
    """One operator process, as DIR/demo.json records it."""

    label: str
    pid: int
    start_ticks: int
    healthz_port: int
    metrics_port: int
    kubeconfig: str
    log: str

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OperatorProcess:
        """The record `to_json` wrote; KeyError, TypeError or ValueError when damaged."""
        return cls(
            label=str(raw["label"]),
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            healthz_port=int(raw["healthz_port"]),
            metrics_port=int(raw["metrics_port"]),
            kubeconfig=str(raw["kubeconfig"]),
            log=str(raw["log"]),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def healthz(self) -> str:
        return f"http://127.0.0.1:{self.healthz_port}/healthz"

    @property
    def ports(self) -> tuple[int, int]:
        return (self.healthz_port, self.metrics_port)

    @property
    def log_path(self) -> Path:
        return Path(self.log)

    def running(self) -> bool:
        """True while this very process runs (not exited, not a zombie, PID not reused)."""
        return process_alive(self.pid, self.start_ticks)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def assert_running(self) -> None:
        if not self.running():
            raise OperatorError(
                f"operator {self.label} (pid {self.pid}) exited; its log ends:\n"
                + self.log_text()[-_LOG_TAIL:]
            )

    def healthy(self) -> bool:
        """Running, and kopf's liveness endpoint answers 200."""
        if not self.running():
            return False
        try:
            with _opener().open(self.healthz, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with _opener().open(url, timeout=10) as response:
            body: bytes = response.read()
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the sample `name` whose labels include `labels`; None if absent."""
        found = samples(self.metrics_text(), name, **labels)
        return found[0] if found else None

    def usage(self) -> Usage:
        return process_usage(self.pid)

    def stop(
        self, signum: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S
    ) -> float:
        """Send `signum` to the operator's process group and wait until it has exited and
        its ports are closed; returns the seconds that took.

        An operator that ignores SIGTERM for `timeout` seconds is killed, and that is an
        OperatorError: the sessions it should have destroyed were dropped instead.
        """
        started = time.monotonic()
        if not signal_group(self.pid, self.start_ticks, signum, timeout):
            killed = signal_group(self.pid, self.start_ticks, signal.SIGKILL, _KILL_GRACE_S)
            raise OperatorError(
                f"operator {self.label} (pid {self.pid}) ignored {signum.name} for "
                f"{timeout:.0f}s; " + ("killed" if killed else "it survived SIGKILL too")
            )
        elapsed = time.monotonic() - started
        for port in self.ports:
            if not wait_port_closed(port):
                raise OperatorError(f"127.0.0.1:{port} still accepts connections")
        return elapsed


def start_operator(
    kubeconfig: Path,
    log_path: Path,
    namespaces: Sequence[str] | None = None,
    *,
    label: str = "operator",
    peering: str | None = None,
    priority: int | None = None,
    peering_lifetime: int | None = None,
    log_level: str = "INFO",
) -> OperatorProcess:
    """Start `i2p-multihome operator` serving `namespaces` (None: all) with `kubeconfig`'s
    credentials only; return once kopf's liveness endpoint answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    healthz_port, metrics_port = free_ports(2)
    scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
    options = {"peering": peering, "priority": priority, "peering-lifetime": peering_lifetime}
    argv = [
        sys.executable, "-m", "i2p_multihome.cli", "--log-level", log_level, "operator",
        *scope,
        f"--liveness=http://127.0.0.1:{healthz_port}/healthz",
        f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1",
        *(f"--{name}={value}" for name, value in options.items() if value is not None),
    ]  # fmt: skip
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "KUBECONFIG"))
    }
    env |= {"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    pid = spawn_detached(argv, log_path, env)
    process = OperatorProcess(
        label=label,
        pid=pid,
        start_ticks=start_ticks(pid),
        healthz_port=healthz_port,
        metrics_port=metrics_port,
        kubeconfig=str(kubeconfig),
        log=str(log_path),
    )

    def live() -> bool:
        process.assert_running()
        return process.healthy()

    try:
        wait_until(
            f"operator {label}'s liveness endpoint {process.healthz}",
            START_TIMEOUT_S,
            live,
            interval=0.3,
            explain=lambda: "its log ends:\n" + process.log_text()[-_LOG_TAIL:],
            error=OperatorError,
        )
    except BaseException:
        with contextlib.suppress(OperatorError):
            process.stop(signal.SIGKILL)
        raise
    return process


@contextlib.contextmanager
def operator_running(
    kubeconfig: Path,
    log_path: Path,
    namespaces: Sequence[str] | None = None,
    **options: Any,
) -> Iterator[OperatorProcess]:
    """An operator for the duration of a `with` block, stopped with SIGTERM after it (a stop
    that fails there does not hide what failed inside the block)."""
    process = start_operator(kubeconfig, log_path, namespaces, **options)
    try:
        yield process
    finally:
        with contextlib.suppress(OperatorError):
            process.stop()


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples `name` in Prometheus text whose labels include `labels`."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def _opener() -> urllib.request.OpenerDirector:
    """Loopback only: never through a proxy the environment may name."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))
