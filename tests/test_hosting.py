"""A hosted destination keeps its balancer's peer profiles: loaded at start, saved on a timer
and when handed back, not when the destination is deleted; a failing save never stops it."""

from __future__ import annotations

import pytest

from fakerouter import FakeRouter, eventually, make_leases
from i2p_multihome.balancer.engine import Timing
from i2p_multihome.balancer.profiles import PeerProfile, PeerProfiles
from i2p_multihome.hosting import HostedDestination
from i2p_multihome.model.v1alpha1 import MultihomedDestinationSpec, MultihomedDestinationStatus
from i2p_multihome.wire.keys import DestinationKeys
from virtualclock import ManualClock

SAVE_EVERY_S = 300.0
WALL = 1_700_000_000.0
# Seen an hour before the start: within the 48 h the profiles remember.
KNOWN = PeerProfile(bytes(32), WALL - 3600, built=2.0, last_seen_s=WALL - 3600)


class Sink:
    async def write(self, status: MultihomedDestinationStatus) -> None:
        pass


class Saves:
    def __init__(self) -> None:
        self.saved: list[PeerProfiles] = []
        self.fail_next = False

    async def __call__(self, profiles: PeerProfiles) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("API server unreachable")
        self.saved.append(profiles)


async def hosted_on(router: FakeRouter, clock: ManualClock, saves: Saves) -> HostedDestination:
    spec = MultihomedDestinationSpec.model_validate(
        {"routers": [{"name": router.name, "i2cp": {"host": "127.0.0.1", "port": router.port}}]}
    )
    hosted = HostedDestination(
        "dest",
        spec,
        DestinationKeys.generate(),
        Sink(),
        timing=Timing(ramp_first_s=3600, heartbeat_s=3600),
        clock=clock,
        peer_profiles=PeerProfiles({KNOWN.peer: KNOWN}),
        save_profiles=saves,
        profile_save_interval_s=SAVE_EVERY_S,
    )
    hosted.start()
    return hosted


@pytest.mark.parametrize("deleted", [False, True])
async def test_profiles_are_saved_on_a_timer_and_when_handed_back(
    deleted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(wall=WALL)
    saves = Saves()
    async with FakeRouter("r1", leases=make_leases("r1", 3), clock=clock.monotonic) as router:
        hosted = await hosted_on(router, clock, saves)
        await eventually(lambda: router.last_lease_set is not None, 5.0, "a LeaseSet")
        assert hosted.balancer.peer_profiles.get(KNOWN.peer) == KNOWN  # loaded, kept
        gateways = {lease.gateway for lease in router.leases}

        await clock.advance(SAVE_EVERY_S - 1)
        assert saves.saved == []
        await clock.advance(1)
        await eventually(lambda: len(saves.saved) == 1, 2.0, "the first save")
        assert gateways | {KNOWN.peer} == set(saves.saved[0].peers)

        saves.fail_next = True
        await clock.advance(SAVE_EVERY_S)
        await eventually(lambda: "peer profiles not saved" in caplog.text, 2.0, "a warning")
        (warning,) = [r for r in caplog.records if r.getMessage() == "peer profiles not saved"]
        assert "API server unreachable" in warning.fields["error"]  # type: ignore[attr-defined]
        await clock.advance(SAVE_EVERY_S)
        await eventually(lambda: len(saves.saved) == 2, 2.0, "saving again")

        await hosted.stop(destroy_sessions=True, keep_profiles=not deleted)
        assert len(saves.saved) == (2 if deleted else 3)


async def test_a_destination_without_a_store_saves_nothing() -> None:
    clock = ManualClock()
    async with FakeRouter("r1", leases=make_leases("r1", 1), clock=clock.monotonic) as router:
        spec = MultihomedDestinationSpec.model_validate(
            {"routers": [{"name": "r1", "i2cp": {"host": "127.0.0.1", "port": router.port}}]}
        )
        hosted = HostedDestination("d", spec, DestinationKeys.generate(), Sink(), clock=clock)
        hosted.start()
        assert await hosted.save_profiles() is False
        await hosted.stop(destroy_sessions=False)
