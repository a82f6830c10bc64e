"""Pytest plugin: one private i2pd testnet (9 routers, 3 floodfills) shared by the session.

Bringing a testnet up costs about 20 s and tests only need a few routers each, so every test
of the session shares one. Tests that stop a router also request `restore_routers`, which
brings every router back (tunnels built) before the next test.

A host that cannot run the testnet fails the tests that need it: a run that skipped them
would pass without having tested multihoming at all. Setting I2P_MULTIHOME_SKIP_TESTBED=1
is the one way to skip them (and the control plane's tests) on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import pytest

from e2e.measured import report
from i2p_multihome_dev.sam import SamError
from i2p_multihome_dev.testnet import Testnet, TestnetError, check_host

ROUTERS = 9
FLOODFILLS = 3  # leaves 6 non-floodfill routers to host a destination
UP_TIMEOUT = 300.0
RESTART_TIMEOUT = 180.0
SKIP_TESTBED_ENV = "I2P_MULTIHOME_SKIP_TESTBED"


def skip_if_testbed_opted_out() -> None:
    """Skip the calling test when the user opted out of the test bed, and only then."""
    if os.environ.get(SKIP_TESTBED_ENV) == "1":
        pytest.skip(f"test bed opted out ({SKIP_TESTBED_ENV}=1)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs testnet routers, so `-m "not testnet"` leaves them out."""
    for item in items:
        if {"testnet", "testnet_host"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.testnet)


@pytest.fixture(scope="session")
def testnet_host() -> None:
    """Fail unless this host can run a testnet (root, ip and i2pd on PATH)."""
    skip_if_testbed_opted_out()
    try:
        check_host()
    except TestnetError as exc:
        pytest.fail(
            f"the testnet cannot run on this host: {exc} "
            f"(set {SKIP_TESTBED_ENV}=1 to skip the tests that need it)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def testnet(testnet_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    net = Testnet(tmp_path_factory.mktemp("testnet"))
    try:
        net.up(routers=ROUTERS, floodfills=FLOODFILLS, timeout=UP_TIMEOUT)
        yield net
    finally:
        net.down()


@pytest.fixture(autouse=True)
def routers_alive(request: pytest.FixtureRequest) -> None:
    """Before a testnet test, restart any router that died since the last one: i2pd
    2.45.1's SAM thread now and then segfaults seconds after a test's SAM sessions have
    closed (see `rerun_after_router_crash`), and what the next test judges is not that
    crash. Each restart is reported as a MEASURED line."""
    if "testnet" in request.fixturenames:
        revive_routers(request.getfixturevalue("testnet"), before=request.node.name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Again once the test's fixtures are set up, just before its body runs: such a crash
    can also come during a long setup (a balancer waiting for the floodfills), and no
    fixture stops a router."""
    testnet = getattr(item, "funcargs", {}).get("testnet")
    if isinstance(testnet, Testnet):
        revive_routers(testnet, before=f"{item.name} (after its setup)")


def revive_routers(testnet: Testnet, before: str) -> None:
    dead = restart_dead_routers(testnet)
    if dead:
        report("router-crash", routers=",".join(dead), before=before)
        testnet.wait_ready(timeout=RESTART_TIMEOUT)


@pytest.fixture
def restore_routers(testnet: Testnet) -> Iterator[None]:
    """After the test, restart every router it stopped, then wait until every router,
    including any the test restarted itself, has built tunnels again."""
    yield
    restart_dead_routers(testnet)
    testnet.wait_ready(timeout=RESTART_TIMEOUT)


def restart_dead_routers(testnet: Testnet) -> list[str]:
    """Start every router whose process is gone; return their names."""
    dead = [r.name for r in testnet.routers if not testnet.is_running(r.name)]
    for name in dead:
        testnet.start_router(name)
    return dead


def remove_every_tunnel(testnet: Testnet) -> None:
    """Remove every client and server tunnel added to the testnet's routers."""
    for router in testnet.routers:
        for name in testnet.tunnels(router.name):
            remove_tunnel(testnet, router.name, name)


def remove_tunnel(testnet: Testnet, router: str, name: str) -> None:
    """Remove a tunnel a test added, after what the test judges: i2pd 2.45.1 frees a
    removed tunnel's destination while its streams may still run, and now and then dies
    of it (kernel log `Destination[...]: segfault at 0`, the console request unanswered).
    That crash is reported as a MEASURED line and the router restarted by the next
    testnet test (`routers_alive`); any other failure is raised."""
    try:
        testnet.remove_tunnel(router, name)
    except Exception as exc:
        if testnet.is_running(router):
            raise
        report("router-crash", routers=router, removing_tunnel=name, error=repr(str(exc)[:160]))


P = ParamSpec("P")
T = TypeVar("T")


def rerun_after_router_crash(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a SAM test once more if a testnet router died under it, after restarting it.

    i2pd 2.45.1's SAM thread segfaults now and then when a session is created or a lookup
    made while an earlier session's sockets are still closing (seen twice in 2026-12: a
    NULL dereference, `SAM[...]: segfault at 20` in the kernel log, the bridge closing
    every connection). That is the router's bug, not what these tests judge; a second
    crash fails the test. The crash is reported as a MEASURED line."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        net = kwargs.get("testnet") or kwargs.get("tunnels")
        assert isinstance(net, Testnet), "rerun_after_router_crash needs the testnet fixture"
        try:
            return await test(*args, **kwargs)
        except (SamError, TimeoutError, ConnectionError) as exc:
            dead = restart_dead_routers(net)
            if not dead:
                raise
            report("router-crash", routers=",".join(dead), error=repr(str(exc)[:160]))
            if "tunnels" in kwargs:  # what the first attempt added, as its fixture would
                remove_every_tunnel(net)
            await asyncio.to_thread(net.wait_ready, timeout=RESTART_TIMEOUT)
        return await test(*args, **kwargs)

    return run
