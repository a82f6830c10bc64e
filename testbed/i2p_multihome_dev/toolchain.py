"""Binaries for the local control plane, built from the Go module proxy and cached per machine.

No registry ships kube-apiserver or a current helm here, and the machine has no container
engine, so both are compiled once from source and kept outside the repository, keyed by
version. etcd and kubectl come from Debian packages.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from i2p_multihome.logs import fields

log = logging.getLogger(__name__)

# 1.33 is the newest minor whose kube-apiserver still links the etcd 3.5 client (1.34+ link
# the 3.6 client, built for 3.5/3.6 servers) and the newest within kubectl's +/-1 skew of
# Debian's kubectl 1.32; its storage layer detects etcd 3.4 and falls back where needed.
KUBE_VERSION = "v1.33.13"
HELM_VERSION = "v3.21.4"
# The chart's outside scanner (tests/test_chart.py). It pins dozens of libraries of its own,
# so it lives in a virtualenv of its own rather than beside the product's dependencies.
CHECKOV_VERSION = "3.3.30"

_CACHE_ENV = "I2P_MULTIHOME_CACHE"
_DEFAULT_CACHE = Path("/var/cache/i2p-multihome")
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/\1\s*$", re.M)


class ToolchainError(RuntimeError):
    """A binary could not be found or built; the message says which and why."""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the executables a local control plane needs."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path


def cache_dir() -> Path:
    """Cache root; an env override lets CI and unprivileged users pick a writable place."""
    return Path(os.environ.get(_CACHE_ENV) or _DEFAULT_CACHE)


def debian_tool(name: str) -> Path:
    """A binary installed from a Debian package (etcd-server, kubectl)."""
    found = shutil.which(name)
    if found is None:
        raise ToolchainError(f"{name} not found on PATH; install its Debian package")
    return Path(found)


def ensure_tools() -> Tools:
    return Tools(
        etcd=debian_tool("etcd"),
        kube_apiserver=ensure_kube_apiserver(),
        kubectl=debian_tool("kubectl"),
    )


def ensure_kube_apiserver(version: str = KUBE_VERSION) -> Path:
    """Path of a cached kube-apiserver for `version`, building it on the first call."""
    target = cache_dir() / "bin" / f"kube-apiserver-{version}"
    with _cached_build(target) as missing:
        if missing:
            _build_kube_apiserver(version, target)
    return target


def ensure_helm(version: str = HELM_VERSION) -> Path:
    """Path of a cached helm v3 for `version`, installing it on the first call."""
    target = cache_dir() / "bin" / f"helm-{version}"
    with _cached_build(target) as missing:
        if missing:
            with tempfile.TemporaryDirectory(dir=target.parent) as gobin:
                _go(
                    [
                        "install",
                        "-trimpath",
                        "-ldflags",
                        f"-s -w -X helm.sh/helm/v3/internal/version.version={version}",
                        f"helm.sh/helm/v3/cmd/helm@{version}",
                    ],
                    cwd=Path(gobin),
                    env={"GOBIN": gobin},
                )
                Path(gobin, "helm").replace(target)
    return target


def ensure_checkov(version: str = CHECKOV_VERSION) -> Path:
    """Path of a cached checkov `version` (PyPI) in its own virtualenv, installed on the
    first call."""
    target = cache_dir() / "bin" / f"checkov-{version}"
    with _cached_build(target) as missing:
        if missing:
            venv = cache_dir() / f"checkov-{version}-venv"
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], "create checkov's virtualenv")
            _run(
                [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                 f"checkov=={version}"],
                f"pip install checkov=={version}",
            )  # fmt: skip
            target.unlink(missing_ok=True)  # a link left by a crashed install
            target.symlink_to(venv / "bin" / "checkov")
    return target


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise ToolchainError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextmanager
def _cached_build(target: Path) -> Iterator[bool]:
    """Hold a per-binary file lock; yield whether `target` still has to be built.

    The lock makes concurrent test sessions wait for one build instead of racing; builders
    write elsewhere and rename into place, so a crashed build never leaves a half binary.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(f".{target.name}.lock")
    started = time.monotonic()
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = not os.access(target, os.X_OK)
        yield missing
    seconds = round(time.monotonic() - started, 1)
    log.info(
        "binary built" if missing else "binary cached",
        extra=fields(path=target, seconds=seconds),
    )


def _build_kube_apiserver(version: str, target: Path) -> None:
    """Build through a wrapper module, since k8s.io/kubernetes can't be `go install`ed.

    Its go.mod replaces every staging module (k8s.io/api, k8s.io/apiserver, ...) with a local
    path; the wrapper replaces each with its published v0.Y.Z tag instead.
    """
    major, minor, _ = version.removeprefix("v").split(".")
    module_dir = cache_dir() / "src" / f"kube-apiserver-{version}"
    module_dir.mkdir(parents=True, exist_ok=True)
    upstream = _download_gomod(f"k8s.io/kubernetes@{version}", module_dir)
    (module_dir / "go.mod").write_text(wrapper_gomod(upstream, version))
    _go(["mod", "tidy"], cwd=module_dir)
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    partial = target.with_name(f".{target.name}.partial")
    _go(
        [
            "build",
            "-trimpath",
            "-ldflags",
            ldflags,
            "-o",
            str(partial),
            "k8s.io/kubernetes/cmd/kube-apiserver",
        ],
        cwd=module_dir,
    )
    partial.replace(target)


def wrapper_gomod(upstream_gomod: str, version: str) -> str:
    """go.mod text for a module that builds k8s.io/kubernetes `version` from published modules.

    The `go` and `godebug` lines are copied because the main module's settings decide runtime
    defaults (TLS, x509) of the resulting binary, and upstream builds with its own.
    """
    staging = _STAGING_REPLACE.findall(upstream_gomod)
    if not staging:
        raise ToolchainError(f"no staging replaces in k8s.io/kubernetes@{version} go.mod")
    staging_version = "v0." + version.removeprefix("v").split(".", 1)[1]
    keep = [line for line in upstream_gomod.splitlines() if line.startswith(("go ", "godebug "))]
    lines = ["module i2p-multihome.local/kube-apiserver", "", *keep, ""]
    lines += [f"require k8s.io/kubernetes {version}", ""]
    lines += ["tool k8s.io/kubernetes/cmd/kube-apiserver", ""]
    lines += ["replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in sorted(staging)]
    lines += [")", ""]
    return "\n".join(lines)


def _download_gomod(module_at_version: str, cwd: Path) -> str:
    """The go.mod of a module version, fetched through the module proxy."""
    out = _go(["mod", "download", "-json", module_at_version], cwd=cwd)
    info = json.loads(out)
    if "Error" in info:
        raise ToolchainError(f"go mod download {module_at_version}: {info['Error']}")
    return Path(info["GoMod"]).read_text()


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError("go not found on PATH; it is needed to build kube-apiserver and helm")
    full_env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", **(env or {})}
    log.info("running go", extra=fields(args=" ".join(args), cwd=cwd))
    done = subprocess.run(
        [go, *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise ToolchainError(f"go {args[0]} failed: {' | '.join(tail)}")
    return done.stdout
