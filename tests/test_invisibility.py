"""The invisibility benchmark's parts: features an observer computes, the classifier's
advantage and its bound, and the gateway simulator driving the product's policy code."""

from __future__ import annotations

import hashlib
import random

import pytest

from i2p_multihome_dev.invisibility.classify import advantage, tpr_minus_fpr
from i2p_multihome_dev.invisibility.features import (
    FEATURE_GROUPS,
    Observation,
    ObservedLease,
    Sample,
    end_clusters,
    entropy,
    hourly_samples,
    order_violations,
)
from i2p_multihome_dev.invisibility.simulate import EPOCH_S, Scenario, simulate


def gw(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def lease(gateway: str, end_s: int, tunnel_id: int = 1) -> ObservedLease:
    return ObservedLease(gw(gateway), tunnel_id, end_s)


def test_end_clusters_split_where_ends_are_more_than_30_s_apart() -> None:
    assert end_clusters([]) == 0
    assert end_clusters([lease("a", 100), lease("b", 130), lease("c", 161)]) == 2
    assert end_clusters([lease("a", 100), lease("b", 400), lease("c", 700)]) == 3


def test_order_violations_count_pairs_not_latest_end_first() -> None:
    assert order_violations([lease("a", 300), lease("b", 200), lease("c", 100)]) == 0
    assert order_violations([lease("a", 100), lease("b", 300), lease("c", 200)]) == 0.5
    assert order_violations([lease("a", 1)]) == 0


def test_entropy_in_bits() -> None:
    assert entropy([4]) == 0
    assert entropy([1, 1, 1, 1]) == 2
    assert entropy([]) == 0


def test_hourly_samples_skip_the_warm_up_and_count_new_gateways() -> None:
    start = 1_000_000.0
    observations = [
        # Hour 0 (warm-up) shows a; hour 1 shows a and b, published twice.
        Observation(start + 10, (lease("a", 2_000_000),), 1),
        Observation(start + 3600, (lease("a", 2_000_000), lease("b", 2_000_100, 2)), 2),
        Observation(start + 3660, (lease("a", 2_000_000), lease("b", 2_000_100, 2)), 2),
        Observation(start + 4300, (lease("b", 2_000_100, 2),), 3),
    ]
    (sample,) = hourly_samples("d", "p", observations, start, hours=2)
    assert sample.hour == 1
    f = sample.features
    assert set(f) == set(FEATURE_GROUPS["gateway"]) | set(FEATURE_GROUPS["timing"])
    assert f["distinct_gateways_hour"] == 2
    assert f["new_gateways_hour"] == 1  # a was seen in the warm-up
    assert f["distinct_gateways_10min"] == 1.5  # two windows: {a, b} and {b}
    assert f["versions_10min"] == pytest.approx(2 / 6)
    assert f["published_interval_median"] == 1
    assert f["order_violations"] == pytest.approx(2 / 3)  # a before the later-ending b


def _samples(population: str, destinations: int, mean: float, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(f"{population}{d}", population, h, {"x": rng.gauss(mean, 1), "y": rng.random()})
        for d in range(destinations)
        for h in range(6)
    ]


def test_advantage_of_separable_populations_is_near_one() -> None:
    found = advantage(_samples("a", 20, 10, 1), _samples("b", 20, 0, 2), ["x", "y"], rounds=200)
    assert found.advantage > 0.95
    assert found.upper95 >= found.advantage
    assert found.destinations == 40 and found.samples == 240


def test_advantage_of_one_population_against_itself_is_near_zero() -> None:
    found = advantage(_samples("a", 40, 0, 1), _samples("b", 40, 0, 2), ["x", "y"], rounds=200)
    assert abs(found.advantage) < 0.15
    assert found.upper95 < 0.25
    assert set(found.per_model) == {"logistic", "boosted_trees"}


def test_tpr_minus_fpr() -> None:
    assert tpr_minus_fpr([1, 1, 0, 0], [1, 0, 0, 0]) == 0.5
    assert tpr_minus_fpr([1, 1], [1, 1]) == 0.0  # one class only: no evidence


@pytest.mark.parametrize("implementation", ["java", "i2pd"])
def test_simulated_populations_publish_what_their_policy_says(implementation: str) -> None:
    scenario = Scenario(implementation, fast_tier=40)  # type: ignore[arg-type]
    single = simulate(scenario, "single", hours=1, seed=3)
    native = simulate(scenario, "native", hours=1, seed=3)
    shared = simulate(scenario, "shared", hours=1, seed=3)
    late = [o for o in (*single, *native, *shared) if o.at_s > EPOCH_S + 900]
    assert late and all(o.leases for o in late)
    # Every population shows about the 12 leases the spec asks for between the routers.
    for population in (single, native, shared):
        counts = [len(o.leases) for o in population if o.at_s > EPOCH_S + 900]
        assert 9 <= sum(counts) / len(counts) <= 16
    # shared publishes no more than the spec's 4 x 3 though its routers build twice that.
    assert max(len(o.leases) for o in shared) <= 12
    if implementation == "java":
        # A single Java router with 3-hop tunnels draws from a quarter of its tier.
        assert len({x.gateway for o in single for x in o.leases}) <= 40 // 4 + 6
