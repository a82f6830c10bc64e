"""The status reporter: level-based writes, throttled, and retried with backoff after any
failure of its sink until one succeeds (an API server that is down raises urllib3 errors,
not ApiException). Time is a ManualClock."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client
from urllib3.exceptions import MaxRetryError

from i2p_multihome.balancer.engine import plain_endpoint
from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.balancer.reporter import (
    MIN_INTERVAL_S,
    REFRESH_S,
    RETRY_MAX_S,
    StatusReporter,
    retry_delay_s,
)
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.k8s.runtime import ApiServerStatusSink, DestinationRuntime
from i2p_multihome.model.v1alpha1 import (
    MultihomedDestinationSpec,
    MultihomedDestinationStatus,
    RouterState,
)
from i2p_multihome.supervision import first_to_end
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease
from virtualclock import ManualClock, settle

KEYS = DestinationKeys.generate()


def lease(name: str, end_s: float) -> Lease:
    return Lease(hashlib.sha256(name.encode()).digest(), 1, int(end_s * 1000))


class World:
    """What the reporter reads: one router's fate, on the test's clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.r2 = RouterState.ESTABLISHED
        self.started = clock.wall()

    def snapshot(self) -> BalancerSnapshot:
        now = self.started  # the facts don't age: only what the test changes changes
        leases = {name: (lease(name, now + 300),) for name in ("r1", "r2")}
        up = self.r2 is RouterState.ESTABLISHED
        return BalancerSnapshot(
            b32=KEYS.destination.b32,
            hash_b64=b64encode(KEYS.destination.hash),
            routers=(
                RouterSnapshot("r1", RouterState.ESTABLISHED, "0.9.67", leases["r1"], None, now),
                RouterSnapshot(
                    "r2", self.r2, "0.9.67" if up else None, leases["r2"] if up else (),
                    None if up else "router lost", now if up else None,
                ),
            ),
            published=tuple(
                SelectedLease(name, leases[name][0]) for name in (("r1", "r2") if up else ("r1",))
            ),
            published_s=int(now) - 5,
            expires_s=int(now) + 300,
            publishes=1,
        )  # fmt: skip


class FlakySink:
    """Fails with the given exceptions, one per write, then stores what it is given."""

    def __init__(self, clock: ManualClock, failures: list[BaseException]) -> None:
        self.clock = clock
        self.failures = failures
        self.attempts: list[float] = []
        self.written: list[MultihomedDestinationStatus] = []

    async def write(self, status: MultihomedDestinationStatus) -> None:
        self.attempts.append(self.clock.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        self.written.append(status)


def unreachable_api_error() -> MaxRetryError:
    """What the kubernetes client raises for an API server that is not there: real."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    try:
        api.patch_namespaced_custom_object_status(
            "multihome.i2p", "v1alpha1", "ns", "multihomeddestinations", "x", {"status": {}},
            _request_timeout=2,
        )  # fmt: skip
    except MaxRetryError as exc:
        return exc
    raise AssertionError("a closed port answered")


def degraded(status: MultihomedDestinationStatus) -> str:
    return next(c.status for c in status.conditions if c.type == "Degraded").value


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[StatusReporter], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(reporter: StatusReporter) -> None:
        tasks.append(asyncio.create_task(reporter.run()))

    yield start
    for task in tasks:
        assert not task.done(), "the reporter ended on its own"
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def reporting(
    clock: ManualClock, running: Callable[[StatusReporter], None]
) -> tuple[World, FlakySink, StatusReporter]:
    """A running reporter over a World and a sink that never fails, one report written."""
    world = World(clock)
    sink = FlakySink(clock, [])
    reporter = StatusReporter(world.snapshot, sink, clock=clock)
    running(reporter)
    reporter.changed()
    await settle()
    return world, sink, reporter


async def test_written_on_change_at_most_every_interval_and_not_when_unchanged(
    clock: ManualClock, running: Callable[[StatusReporter], None]
) -> None:
    world, sink, reporter = await reporting(clock, running)
    assert len(sink.written) == 1 and degraded(sink.written[0]) == "False"

    world.r2 = RouterState.DISCONNECTED
    reporter.changed()
    await clock.advance(MIN_INTERVAL_S - 0.1)
    assert len(sink.written) == 1  # throttled
    await clock.advance(0.1)
    assert len(sink.written) == 2 and degraded(sink.written[1]) == "True"

    await clock.advance(REFRESH_S * 3)  # looked at, unchanged: not written again
    assert len(sink.written) == 2


async def test_any_write_failure_is_retried_with_backoff_until_it_succeeds(
    clock: ManualClock, running: Callable[[StatusReporter], None], caplog: pytest.LogCaptureFixture
) -> None:
    """The API server goes away (urllib3's MaxRetryError, as the kubernetes client raises
    it), comes back broken (OSError, a bug's RuntimeError), then works: the reporter keeps
    trying, backing off to RETRY_MAX_S, and writes the state as it is by then."""
    caplog.set_level(logging.INFO)
    world = World(clock)
    outage = [unreachable_api_error() for _ in range(5)] + [OSError("reset"), RuntimeError("x")]
    sink = FlakySink(clock, list(outage))
    reporter = StatusReporter(world.snapshot, sink, clock=clock, log_fields={"name": "web"})
    running(reporter)
    start = clock.monotonic()
    reporter.changed()
    await settle()
    world.r2 = RouterState.DISCONNECTED  # a router dies during the outage
    while not sink.written:
        await clock.advance(0.5)
        assert clock.monotonic() - start < 120

    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    assert gaps == [pytest.approx(retry_delay_s(n), abs=0.5) for n in range(1, len(outage) + 1)]
    assert max(gaps) <= RETRY_MAX_S + 0.5
    assert len(sink.written) == 1 and degraded(sink.written[0]) == "True"
    assert reporter.failures == 0
    warnings = [r for r in caplog.records if r.getMessage() == "status not written; will retry"]
    assert len(warnings) == len(outage)
    assert "MaxRetryError" in warnings[0].fields["error"]  # type: ignore[attr-defined]
    assert "status written again" in caplog.text


async def test_transition_times_come_from_what_was_written(
    clock: ManualClock, running: Callable[[StatusReporter], None]
) -> None:
    world, sink, reporter = await reporting(clock, running)
    first = {c.type: c.last_transition_time for c in sink.written[0].conditions}
    await clock.advance(100)
    world.r2 = RouterState.DISCONNECTED
    reporter.changed()
    await clock.advance(MIN_INTERVAL_S)
    later = {c.type: c.last_transition_time for c in sink.written[-1].conditions}
    assert later["Ready"] == first["Ready"]  # still True: unchanged since
    assert later["Degraded"] != first["Degraded"]


async def test_api_server_sink_raises_what_an_absent_server_raises() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    sink = ApiServerStatusSink(client.CustomObjectsApi(client.ApiClient(configuration)), "n", "x")
    with pytest.raises(MaxRetryError):
        await sink.write(MultihomedDestinationStatus())


# --- supervision ------------------------------------------------------------------------------


async def test_first_to_end_names_the_task_and_its_error() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def crash() -> None:
        raise RuntimeError("bug")

    tasks = {"a": asyncio.create_task(forever()), "b": asyncio.create_task(crash())}
    name, error = await first_to_end(tasks)
    assert name == "b" and isinstance(error, RuntimeError)
    tasks["a"].cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_crashed_task_of_a_destination_is_reported_not_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = MultihomedDestinationSpec.model_validate(
        {"routers": [{"name": "r1", "i2cp": {"host": "127.0.0.1", "port": 9}}]}
    )
    runtime = DestinationRuntime(
        "ns", "web", spec, KEYS, 1, [], None,  # type: ignore[arg-type]
        post_event=lambda *_: None, resolve_endpoint=plain_endpoint,
    )  # fmt: skip

    async def broken_run() -> None:
        raise RuntimeError("status bug")

    runtime.reporter = _Stub(broken_run)  # type: ignore[assignment]
    runtime.start()
    ended = await asyncio.wait_for(runtime.failed(), 5)
    assert "status task ended unexpectedly (RuntimeError: status bug)" in str(ended)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    await runtime.stop(destroy_sessions=False)


class _Stub:
    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run
        self.generation: int | None = None

    def changed(self) -> None:
        pass
