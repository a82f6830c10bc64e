"""Invisible multihoming on a real private i2pd testnet, observed from the floodfills: a
floodfill counts only while it serves the destination (a lease a client would still use),
and every lease's router is checked against the routers' own consoles. The 15-minute soak
is `make soak` (benchmarks/soak.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from i2p_multihome_dev.balancer_process import destination_manifest, run_balancer
from i2p_multihome_dev.observe import serving
from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import Testnet

pytestmark = pytest.mark.testnet

HOSTS4 = ["r1", "r2", "r3", "r4"]
HOSTS6 = ["r1", "r2", "r3", "r4", "r5", "r6"]


def test_four_routers_one_leaseset_on_every_floodfill(testnet: Testnet, tmp_path: Path) -> None:
    document = destination_manifest("four", testnet, HOSTS4, inbound=3, length=1)
    with run_balancer(tmp_path, testnet, document) as run:
        started = time.monotonic()

        def merged_everywhere() -> dict[str, set[str]] | None:
            run.assert_running()
            views = run.floodfill_views()
            seen = {}
            for floodfill, lease_set in views.items():
                if not serving(lease_set, time.time()):
                    return None
                if (lease_set.non_expired_leases or 0) < 10:
                    return None
                seen[floodfill] = run.routers_of(lease_set)
                if not set(HOSTS4) <= seen[floodfill]:
                    return None
            return seen

        seen = wait_until(
            "every floodfill to hold >= 10 leases from all 4 routers",
            120,
            merged_everywhere,
            explain=run.explain_floodfills,
        )
        print(f"merged LeaseSet on all floodfills after {time.monotonic() - started:.0f}s: {seen}")
        print(f"lease owners by the routers' consoles: {run.watch.counts}")

        def status_agrees() -> bool:
            status = run.status()
            published = {(t["gateway"], t["tunnelId"]) for t in status["tunnels"] if t["published"]}
            for lease_set in run.floodfill_views().values():
                assert lease_set is not None
                if {(lease.gateway, lease.tunnel_id) for lease in lease_set.leases} != published:
                    return False
            ready = {c["type"]: c["status"] for c in status["conditions"]}
            return (
                ready["Ready"] == "True"
                and status["leaseSet"]["leases"] == len(published)
                and sorted(status["leaseSet"]["routers"]) == HOSTS4
                # The first of the spec that had reported tunnels at the first publish.
                and status["leaseSet"].get("publisher") in HOSTS4
                and all(r["state"] == "Established" for r in status["routers"])
            )

        wait_until(
            "the status file to agree with the floodfills",
            60,
            status_agrees,
            explain=run.explain_floodfills,
        )
    # SIGTERM destroyed the sessions: no router hosts the destination any more.
    wait_until(
        "routers to drop the destination after the balancer stopped",
        30,
        lambda: not any(run.hosted_on(r) for r in HOSTS4),
    )


def test_dead_publisher_leaves_and_rejoins_as_a_standby(
    testnet: Testnet, tmp_path: Path, restore_routers: None
) -> None:
    """The one router that publishes is killed: the first other router of the spec (none of
    them has stored) publishes a LeaseSet without its leases, and the killed one comes back
    as a standby (the publisher does not move back)."""
    document = destination_manifest("failover", testnet, HOSTS4, inbound=3, length=1)
    with run_balancer(tmp_path, testnet, document) as run:
        # Over two refresh intervals: a floodfill that missed a flood catches up at the next.
        wait_until(
            "all 4 routers' leases on every floodfill",
            240,
            lambda: all(
                serving(ls, time.time()) and set(HOSTS4) <= run.routers_of(ls)
                for ls in run.floodfill_views().values()
            ),
            explain=run.explain_floodfills,
        )
        victim = run.status()["leaseSet"].get("publisher")
        assert victim in HOSTS4
        standby = next(r for r in HOSTS4 if r != victim)
        killed_at = time.monotonic()  # stop_router returns once the I2CP port is closed
        testnet.stop_router(victim)

        def victim_gone() -> bool:
            run.assert_running()
            return all(
                serving(ls, time.time()) and victim not in run.routers_of(ls)
                for ls in run.floodfill_views().values()
            )

        wait_until(
            f"{victim}'s leases to leave every floodfill",
            30,
            victim_gone,
            interval=1.0,
            explain=run.explain_floodfills,
        )
        gone_after = time.monotonic() - killed_at

        def status_shows_the_loss() -> dict[str, Any] | NotYet:
            # The status file is written by the reporter after the LeaseSet went out.
            found = run.status()
            state = {r["name"]: r for r in found.get("routers", [])}.get(victim, {}).get("state")
            return found if state not in (None, "Established") else NotYet(f"{victim}: {state}")

        status = wait_until("the status to show the loss", 15, status_shows_the_loss, interval=0.5)
        routers = {r["name"]: r for r in status["routers"]}
        assert routers[victim]["state"] != "Established"
        assert routers[victim]["lastError"]
        degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
        assert degraded["status"] == "True" and victim in degraded["message"]
        assert status["leaseSet"].get("publisher") == standby
        print(f"{victim}'s leases gone from all floodfills {gone_after:.1f}s after SIGKILL")

        testnet.start_router(victim)
        wait_until(
            f"{victim}'s leases to return to every floodfill",
            240,
            lambda: all(
                serving(ls, time.time()) and victim in run.routers_of(ls)
                for ls in run.floodfill_views().values()
            ),
            explain=run.explain_floodfills,
        )
        assert run.status()["leaseSet"].get("publisher") == standby
        print(f"lease owners by the routers' consoles: {run.watch.counts}")


def test_six_routers_never_more_than_sixteen_leases(testnet: Testnet, tmp_path: Path) -> None:
    document = destination_manifest("six", testnet, HOSTS6, inbound=4, length=0)
    with run_balancer(tmp_path, testnet, document) as run:
        largest = 0

        def all_represented() -> bool:
            nonlocal largest
            run.assert_running()
            status = run.status()
            if status.get("leaseSet"):
                assert status["leaseSet"]["leases"] <= 16
            ok = True
            for lease_set in run.floodfill_views().values():
                if not serving(lease_set, time.time()):
                    ok = False
                    continue
                largest = max(largest, len(lease_set.leases))
                assert len(lease_set.leases) <= 16, "a floodfill holds a LeaseSet over 16 leases"
                ok = ok and set(HOSTS6) <= run.routers_of(lease_set)
            return ok

        wait_until(
            "all 6 routers represented on every floodfill",
            150,
            all_represented,
            explain=run.explain_floodfills,
        )
        # 6 x 4 = 24 tunnels on offer: the LeaseSet fills to exactly 16, never more.
        wait_until(
            "a full 16-lease LeaseSet with every router on every floodfill",
            150,
            lambda: all_represented() and largest == 16,
            explain=run.explain_floodfills,
        )
        available = sum(r["leases"] for r in run.status()["routers"])
        print(f"6 routers offer {available} live leases; floodfills hold at most {largest}")
        print(f"lease owners by the routers' consoles: {run.watch.counts}")
