"""The Argo CD health check (charts/i2p-multihome/argocd/health.lua) run by a real Lua
interpreter (Debian's lua5.4): on the fixtures of tests/data/argocd (Argo CD's
resource_customizations layout), and on statuses the operator's own status builder makes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from i2p_multihome.balancer.policy import SelectedLease
from i2p_multihome.balancer.snapshot import BalancerSnapshot, RouterSnapshot
from i2p_multihome.balancer.status import build_status
from i2p_multihome.model.v1alpha1 import MultihomedDestinationStatus, RouterState
from i2p_multihome.wire.encoding import b64encode
from i2p_multihome.wire.keys import DestinationKeys
from i2p_multihome.wire.structures import Lease

ROOT = Path(__file__).resolve().parent.parent
HEALTH_LUA = ROOT / "charts" / "i2p-multihome" / "argocd" / "health.lua"
FIXTURES = Path(__file__).resolve().parent / "data" / "argocd"
CASES = yaml.safe_load((FIXTURES / "health_test.yaml").read_text())["tests"]
NOW_S = 1_800_000_000.0


@pytest.fixture(scope="session")
def lua() -> Path:
    """lua5.4, installed from Debian when missing (scripts/bootstrap normally has done so)."""
    found = shutil.which("lua5.4")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "lua5.4"],
        ):
            subprocess.run(argv, env=env, capture_output=True, timeout=600, check=True)
        found = shutil.which("lua5.4")
    assert found, "lua5.4 is missing: apt-get install lua5.4 (scripts/bootstrap does)"
    return Path(found)


def lua_literal(value: Any) -> str:
    """A Lua table constructor for JSON-like data, as Argo CD hands `obj` to the script."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (
            f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None
        )
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def health(lua: Path, obj: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Run health.lua with `obj` as Argo CD does (a global `obj`, the chunk returns `hs`)."""
    runner = tmp_path / "run.lua"
    runner.write_text(
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({lua_literal(str(HEALTH_LUA))})\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    done = subprocess.run(
        [str(lua), str(runner)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\n")
    return {"status": status, "message": message}


@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c["inputPath"]).stem)
def test_fixture(lua: Path, case: dict[str, Any], tmp_path: Path) -> None:
    obj = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
    assert health(lua, obj, tmp_path) == case["healthStatus"]


def test_fixtures_are_valid_statuses() -> None:
    """The fixtures hold statuses the CRD accepts, so the cases stay realistic."""
    for case in CASES:
        obj = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
        if "status" in obj:
            MultihomedDestinationStatus.model_validate(obj["status"])
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded"}


def test_lua_literal_round_trips_through_lua(lua: Path, tmp_path: Path) -> None:
    runner = tmp_path / "echo.lua"
    table = lua_literal({"a": [1, 'x"y'], "b": {"c": True}, "n": None})
    runner.write_text(
        f"local t = {table}\nio.write(t.a[1] + 1, t.a[2], tostring(t.b.c), tostring(t.n))\n"
    )
    out = subprocess.run(
        [str(lua), str(runner)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert out == '2x"ytruenil'


# ------------------------------------------------------------ statuses the operator writes

KEYS = DestinationKeys.generate(lambda n: hashlib.sha256(b"argocd %d" % n).digest()[:n])


def _lease(router: str, tunnel_id: int) -> Lease:
    gateway = hashlib.sha256(f"{router}-{tunnel_id}".encode()).digest()
    return Lease(gateway, tunnel_id, int((NOW_S + 400) * 1000))


def _router(
    name: str, state: RouterState, error: str | None = None, leases: int = 2
) -> RouterSnapshot:
    owned = (
        tuple(_lease(name, i) for i in range(leases)) if state is RouterState.ESTABLISHED else ()
    )
    return RouterSnapshot(name, state, "0.9.57", owned, error, NOW_S - 60)


def _object(routers: tuple[RouterSnapshot, ...], published_from: tuple[str, ...]) -> dict[str, Any]:
    published = tuple(
        SelectedLease(r.name, lease)
        for r in routers
        if r.name in published_from
        for lease in r.leases
    )
    snapshot = BalancerSnapshot(
        b32=KEYS.destination.b32,
        hash_b64=b64encode(KEYS.destination.hash),
        routers=routers,
        published=published,
        published_s=int(NOW_S) - 5 if published else None,
        expires_s=int(NOW_S) + 400 if published else None,
        publishes=1 if published else 0,
    )
    status = build_status(snapshot, NOW_S, (), 4).to_json_dict()
    return {"metadata": {"name": "web", "generation": 4}, "status": status}


E, C, D = RouterState.ESTABLISHED, RouterState.CONNECTING, RouterState.DISCONNECTED


@pytest.mark.parametrize(
    ("routers", "published_from", "expected"),
    [
        ((("r1", C, None), ("r2", C, None)), (), "Progressing"),
        ((("r1", E, None), ("r2", E, None)), (), "Progressing"),
        ((("r1", E, None), ("r2", E, None)), ("r1",), "Healthy"),
        ((("r1", E, None), ("r2", E, None)), ("r1", "r2"), "Healthy"),
        ((("r1", E, None), ("r2", D, "Connection refused")), ("r1",), "Degraded"),
        ((("r1", E, None), ("r2", C, "session lost")), ("r1",), "Degraded"),
        ((("r1", D, "refused"), ("r2", D, "refused")), (), "Degraded"),
    ],
)
def test_statuses_built_by_the_operator(
    lua: Path,
    tmp_path: Path,
    routers: tuple[tuple[str, RouterState, str | None], ...],
    published_from: tuple[str, ...],
    expected: str,
) -> None:
    obj = _object(tuple(_router(*r) for r in routers), published_from)
    assert health(lua, obj, tmp_path)["status"] == expected
