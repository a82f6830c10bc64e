"""Routers found through a Service's EndpointSlices (spec.routersFrom): reading slices,
naming routers, choosing the ready ones, and the spec the balancer runs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from i2p_multihome.k8s.endpoints import (
    MAX_ROUTER_NAME,
    SliceEndpoint,
    SliceView,
    changes,
    found_routers,
    hosted_spec,
    read_slice,
    router_name,
)
from i2p_multihome.model.v1alpha1 import (
    MAX_ROUTERS,
    MultihomedDestinationSpec,
    RouterImplementation,
    RoutersFrom,
    RouterSpec,
)

SOURCE = RoutersFrom.model_validate({"service": {"name": "i2pd", "port": "i2cp"}})
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def endpoint(
    address: str,
    pod: str | None = None,
    ready: bool | None = True,
    hostname: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"addresses": [address]}
    if ready is not None:
        entry["conditions"] = {"ready": ready, "serving": ready, "terminating": not ready}
    if pod is not None:
        entry["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "ns"}
    if hostname is not None:
        entry["hostname"] = hostname
    return entry


def slice_body(*endpoints: dict[str, Any], port: int = 7654, name: str = "i2cp") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "i2pd-abc", "labels": {"kubernetes.io/service-name": "i2pd"}},
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
    }


def hosts(routers: tuple[RouterSpec, ...]) -> dict[str, tuple[str, int]]:
    return {r.name: (r.i2cp.host, r.i2cp.port) for r in routers}


# --------------------------------------------------------------------------- reading slices


def test_a_statefulset_slice_reads_as_its_pods() -> None:
    view = read_slice(
        slice_body(
            endpoint("10.0.0.1", "i2pd-0", hostname="i2pd-0"),
            endpoint("10.0.0.2", "i2pd-1", ready=False),
        )
    )
    assert view.ports == (("i2cp", 7654),)
    assert view.endpoints == (
        SliceEndpoint("i2pd-0", "10.0.0.1", True),
        SliceEndpoint("i2pd-1", "10.0.0.2", False),
    )
    assert view.skipped == 0


def test_readiness_left_unknown_counts_as_ready() -> None:
    """The EndpointSlice API: a nil `ready` is an unknown state, to be read as ready."""
    (found,) = read_slice(slice_body(endpoint("10.0.0.1", "a", ready=None))).endpoints
    assert found.ready


def test_malformed_entries_are_skipped_and_counted() -> None:
    body = slice_body(
        endpoint("10.0.0.1", "good"),
        {"addresses": []},
        {"addresses": [17]},
        {"addresses": ["x" * 300]},
        "not a mapping",
        {"conditions": {"ready": True}},
    )
    body["ports"] += [{"port": 80}, {"name": "http", "port": None}, {"name": "x", "port": 0}]
    view = read_slice(body)
    assert [e.name for e in view.endpoints] == ["good"]
    assert view.ports == (("i2cp", 7654),)
    assert view.skipped == 5 + 3


def test_a_body_of_the_wrong_shape_reads_as_empty() -> None:
    assert read_slice({}) == SliceView((), ())
    assert read_slice({"endpoints": "x", "ports": {"a": 1}}) == SliceView((), ())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


@given(
    st.dictionaries(
        st.sampled_from(["endpoints", "ports", "addressType", "metadata"]), JSON, max_size=4
    )
)
def test_any_json_body_reads_without_raising(body: dict[str, Any]) -> None:
    view = read_slice(body)
    for found in view.endpoints:
        assert 0 < len(found.address) <= 253
    for _, number in view.ports:
        assert 1 <= number <= 65535


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "addresses": st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=2),
                "targetRef": st.fixed_dictionaries({"name": st.text(max_size=300)}),
                "conditions": st.fixed_dictionaries({"ready": st.booleans() | st.none()}),
            }
        ),
        max_size=80,
    )
)
def test_routers_found_are_valid_unique_and_bounded(entries: list[dict[str, Any]]) -> None:
    routers = found_routers([read_slice(slice_body(*entries))], SOURCE)
    names = [r.name for r in routers]
    assert len(set(names)) == len(names) <= MAX_ROUTERS
    assert names == sorted(names)
    for router in routers:
        assert RouterSpec.model_validate(router.model_dump(by_alias=True)) == router


# --------------------------------------------------------------------------- naming


def test_names_come_from_the_pod_then_hostname_then_address() -> None:
    assert router_name("i2pd-0", "host", "10.0.0.1") == "i2pd-0"
    assert router_name(None, "i2pd-1", "10.0.0.1") == "i2pd-1"
    assert router_name(None, None, "10.0.0.1") == "10-0-0-1"
    assert router_name(None, None, "fd00::1") == "fd00--1"
    assert router_name("Web.Pod_1", None, "10.0.0.1") == "web-pod-1"
    assert router_name("", "", "::") == "endpoint-" + router_name(None, None, "::")[-8:]


def test_long_names_stay_apart_and_fit_a_label() -> None:
    first = router_name("a" * 80 + "-0", None, "10.0.0.1")
    second = router_name("a" * 80 + "-1", None, "10.0.0.1")
    assert first != second
    assert len(first) == len(second) == MAX_ROUTER_NAME


@given(st.text(max_size=300), st.text(max_size=300), st.text(min_size=1, max_size=253))
def test_every_name_is_a_router_name(target: str, hostname: str, address: str) -> None:
    name = router_name(target, hostname, address)
    RouterSpec.model_validate({"name": name, "i2cp": {"host": "h"}})


# --------------------------------------------------------------------------- choosing


def test_only_ready_endpoints_with_the_named_port_are_routers() -> None:
    slices = [
        read_slice(
            slice_body(
                endpoint("10.0.0.2", "i2pd-1"),
                endpoint("10.0.0.1", "i2pd-0"),
                endpoint("10.0.0.3", "i2pd-2", ready=False),
            )
        ),
        read_slice(slice_body(endpoint("10.0.1.1", "other"), name="http", port=80)),
    ]
    assert hosts(found_routers(slices, SOURCE)) == {
        "i2pd-0": ("10.0.0.1", 7654),
        "i2pd-1": ("10.0.0.2", 7654),
    }


def test_each_slice_has_its_own_port_number() -> None:
    slices = [
        read_slice(slice_body(endpoint("10.0.0.1", "a"), port=7654)),
        read_slice(slice_body(endpoint("10.0.0.2", "b"), port=17654)),
    ]
    assert hosts(found_routers(slices, SOURCE)) == {
        "a": ("10.0.0.1", 7654),
        "b": ("10.0.0.2", 17654),
    }


def test_an_endpoint_in_two_slices_is_one_router() -> None:
    """A dual-stack pod, or one slice being replaced by another: one router, same address
    whatever the order the slices come in."""
    v4 = read_slice(slice_body(endpoint("10.0.0.1", "i2pd-0")))
    v6 = read_slice(slice_body(endpoint("fd00::1", "i2pd-0")))
    assert hosts(found_routers([v4, v6], SOURCE)) == hosts(found_routers([v6, v4], SOURCE))
    assert hosts(found_routers([v4, v6], SOURCE)) == {"i2pd-0": ("10.0.0.1", 7654)}


def test_the_template_applies_to_every_router() -> None:
    source = RoutersFrom.model_validate(
        {
            "service": {"name": "java", "port": "i2cp"},
            "implementation": "java",
            "tls": True,
            "credentialsSecretRef": {"name": "auth"},
        }
    )
    (router,) = found_routers([read_slice(slice_body(endpoint("10.0.0.1", "j-0")))], source)
    assert router.implementation is RouterImplementation.JAVA
    assert router.i2cp.tls and router.i2cp.credentials_secret_ref is not None
    assert router.publish


def test_at_most_max_routers_first_by_name() -> None:
    entries = [endpoint(f"10.0.{i // 250}.{i % 250}", f"r-{i:03d}") for i in range(100)]
    routers = found_routers([read_slice(slice_body(*entries))], SOURCE)
    assert [r.name for r in routers] == [f"r-{i:03d}" for i in range(MAX_ROUTERS)]


def test_hosted_spec_keeps_a_listed_spec_and_fills_a_found_one() -> None:
    listed = MultihomedDestinationSpec.model_validate(
        {"routers": [{"name": "a", "i2cp": {"host": "h"}}]}
    )
    assert hosted_spec(listed, []) is listed
    declared = MultihomedDestinationSpec.model_validate(
        {"routersFrom": {"service": {"name": "i2pd", "port": "i2cp"}}}
    )
    assert hosted_spec(declared, []).routers == []
    hosted = hosted_spec(declared, [read_slice(slice_body(endpoint("10.0.0.1", "i2pd-0")))])
    assert [r.name for r in hosted.routers] == ["i2pd-0"]
    assert hosted.routers_from == declared.routers_from
    assert hosted.tunnels == declared.tunnels


def test_changes_name_who_joined_and_who_left() -> None:
    def named(*names: str) -> list[RouterSpec]:
        return [RouterSpec.model_validate({"name": n, "i2cp": {"host": "h"}}) for n in names]

    assert changes(named("a", "b"), named("b", "c", "d")) == (["c", "d"], ["a"])
    assert changes(named("a"), named("a")) == ([], [])
