"""A hosted destination keeps its balancer's peer profiles: loaded at start, saved on a timer
and when handed back, not when the destination is deleted; a failing save never stops it.
It keeps its recent clients too: those of the previous run are pinged through a router once
the first LeaseSet is out and their old sessions can be replaced."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from fakerouter import FakeRouter, eventually, make_leases
from i2p_multihome.balancer.engine import Timing
from i2p_multihome.balancer.profiles import PeerProfile, PeerProfiles
from i2p_multihome.hosting import HostedDestination
from i2p_multihome.model.v1alpha1 import MultihomedDestinationSpec, MultihomedDestinationStatus
from i2p_multihome.streaming.routes import RememberedClient
from i2p_multihome.wire import messages
from i2p_multihome.wire import streaming as sp
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


async def test_clients_of_the_previous_run_are_pinged_once_their_sessions_can_be_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="i2p_multihome.hosting")
    clock = ManualClock(wall=WALL)
    old = RememberedClient(DestinationKeys.generate().destination, WALL - 300, WALL - 20)
    young = RememberedClient(DestinationKeys.generate().destination, WALL - 60, WALL - 10)
    expired = RememberedClient(DestinationKeys.generate().destination, WALL - 2000, WALL - 700)
    saved: list[list[RememberedClient]] = []

    async def save(clients: Sequence[RememberedClient]) -> None:
        saved.append(list(clients))

    async with FakeRouter("r1", leases=make_leases("r1", 3), clock=clock.monotonic) as router:
        sent: list[messages.SendMessage | messages.SendMessageExpires] = []
        router.send_listeners.append(sent.append)
        spec = MultihomedDestinationSpec.model_validate(
            {"routers": [{"name": "r1", "i2cp": {"host": "127.0.0.1", "port": router.port}}]}
        )
        keys = DestinationKeys.generate()
        hosted = HostedDestination(
            "dest", spec, keys, Sink(), timing=Timing(ramp_first_s=3600, heartbeat_s=3600),
            clock=clock, recent_clients=[old, young, expired], save_clients=save,
            client_save_interval_s=60.0,
        )  # fmt: skip
        # Saved before the first LeaseSet: the previous run's clients are not forgotten.
        assert await hosted.save_clients()
        assert {c.address for c in saved[-1]} == {old.address, young.address, expired.address}
        hosted.start()
        await eventually(lambda: len(sent) == 1, 5.0, "a ping to the client with an old session")
        assert router.last_lease_set is not None
        assert sent[0].destination == old.address
        payload = messages.Payload.decode(sent[0].payload)
        assert payload.protocol == messages.PROTOCOL_STREAMING
        ping = sp.StreamPacket.decode(payload.data, keys.destination)
        assert ping.has(sp.ECHO) and ping.has(sp.SIGNATURE_INCLUDED)
        [restored] = [r for r in caplog.records if r.getMessage().startswith("recent clients")]
        assert restored.fields["restored"] == 2  # type: ignore[attr-defined]
        # The young client's session was 60 s old at the start: replaceable at 125 s.
        await clock.advance(64.0)
        assert len(sent) == 1
        await clock.advance(2.0)
        await eventually(lambda: len(sent) == 2, 5.0, "the young client's ping")
        assert sent[1].destination == young.address
        await clock.advance(60.0)
        await eventually(lambda: len(saved) == 2, 5.0, "the timed save")
        assert {c.address for c in saved[-1]} == {old.address, young.address}
        await clock.advance(60.0)  # the same clients: not saved again
        assert len(saved) == 2
        await hosted.stop(destroy_sessions=False)
        assert len(saved) == 3
        assert len(sent) == 2
        assert old.address.b32 not in caplog.text
