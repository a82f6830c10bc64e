"""A real Java I2P router for interoperability tests: I2CP over TLS with password auth.

The router runs with I2CP only: no transports, no reseed, no clock sync, so it talks to
nothing but its I2CP clients. It also runs inside a testnet router's network namespace,
which has no route beyond the testnet's bridge, so even a setting overlooked here cannot
reach any other address. Its client tunnels are zero-hop: built at once, without peers.

The jars come from Maven Central (`net.i2p:i2p`, `net.i2p:router`), pinned by SHA-1 (the
checksum Maven Central publishes), and are cached outside the repository.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from i2p_multihome.logs import fields
from i2p_multihome_dev.polling import wait_until
from i2p_multihome_dev.processes import (
    port_open,
    process_alive,
    spawn_detached,
    start_ticks,
    stop_process_group,
)
from i2p_multihome_dev.testnet import TestnetRouter
from i2p_multihome_dev.toolchain import cache_dir

log = logging.getLogger(__name__)

JAVA_I2P_VERSION = "2.7.0"
# SHA-1 of each jar as Maven Central publishes it (`<jar>.sha1`), checked after download.
_JAR_SHA1 = {
    "i2p": "1f26273b3fd35d8dc60070b8bc593ff2a7274dd6",
    "router": "c9b4dbf26f8aae55bff7923a3e80c415e1bbf9d7",
}
_MAVEN = "https://repo1.maven.org/maven2/net/i2p"
# Java's PasswordManager: 16-byte salt, SHA-256 iterated 1000 times (KeyGenerator's PBE).
_SALT_BYTES = 16
_PBE_ROUNDS = 1000


class JavaRouterError(RuntimeError):
    """The Java router cannot be fetched or started; the message says what to do."""


def ensure_jars(version: str = JAVA_I2P_VERSION) -> list[Path]:
    """The router's class path, downloaded once into the cache and checked by SHA-1."""
    if version != JAVA_I2P_VERSION:
        raise JavaRouterError(f"only Java I2P {JAVA_I2P_VERSION} is pinned, not {version}")
    directory = cache_dir() / "java-i2p" / version
    directory.mkdir(parents=True, exist_ok=True)
    jars = []
    for artifact, sha1 in _JAR_SHA1.items():
        jar = directory / f"{artifact}-{version}.jar"
        if not jar.is_file() or _sha1(jar) != sha1:
            _download(f"{_MAVEN}/{artifact}/{version}/{jar.name}", jar, sha1)
        jars.append(jar)
    return jars


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()


def _download(url: str, target: Path, sha1: str) -> None:
    partial = target.with_suffix(".part")
    log.info("downloading Java I2P", extra=fields(url=url))
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
            partial.write_bytes(response.read())
    except OSError as exc:
        raise JavaRouterError(f"downloading {url}: {exc}") from exc
    if _sha1(partial) != sha1:
        partial.unlink()
        raise JavaRouterError(f"{url} does not have the pinned SHA-1 {sha1}")
    partial.replace(target)


def password_hash(password: str, salt: bytes) -> str:
    """`i2cp.auth.<user>.shash` as Java's PasswordManager checks it: I2P base64 of
    salt || SHA-256^1000(salt || password)."""
    if len(salt) != _SALT_BYTES:
        raise ValueError(f"salt must be {_SALT_BYTES} bytes")
    digest = hashlib.sha256(salt + password.encode()).digest()
    for _ in range(_PBE_ROUNDS - 1):
        digest = hashlib.sha256(digest).digest()
    return base64.b64encode(salt + digest, altchars=b"-~").decode()


def router_config(host: str, port: int, users: Mapping[str, str], tls: bool) -> str:
    """router.config for an I2CP-only router that reaches out to nobody."""
    lines = [
        "router.reseedDisable=true",
        "time.disabled=true",
        "i2np.ntcp.enable=false",
        "i2np.udp.enable=false",
        "i2np.upnp.enable=false",
        f"i2cp.hostname={host}",
        f"i2cp.port={port}",
        f"i2cp.SSL={str(tls).lower()}",
        f"i2cp.auth={str(bool(users)).lower()}",
    ]
    lines += [
        f"i2cp.auth.{user}.shash={password_hash(password, os.urandom(_SALT_BYTES))}"
        for user, password in sorted(users.items())
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class JavaRouter:
    """A running Java I2P router; `i2cp` is where clients connect."""

    pid: int
    ticks: int
    i2cp: tuple[str, int]
    directory: Path
    version: str = JAVA_I2P_VERSION

    @classmethod
    def start(
        cls,
        host: TestnetRouter,
        directory: Path,
        users: Mapping[str, str],
        tls: bool = True,
        port: int = 17654,
        timeout_s: float = 90.0,
    ) -> JavaRouter:
        """Start it in `host`'s namespace, listening for I2CP on `host`'s address."""
        java = shutil.which("java")
        if java is None:
            raise JavaRouterError("java not found; install a JRE (apt-get install default-jre)")
        classpath = os.pathsep.join(str(jar) for jar in ensure_jars())
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "router.config").write_text(router_config(host.address, port, users, tls))
        (directory / "router.config").chmod(0o600)
        dirs = [f"-Di2p.dir.{d}={directory}" for d in ("base", "config", "router", "app")]
        argv = [
            "ip", "netns", "exec", host.namespace,
            java, "-Xmx192m", "-Djava.awt.headless=true", *dirs,
            "-cp", classpath, "net.i2p.router.RouterLaunch",
        ]  # fmt: skip
        pid = spawn_detached(argv, directory / "java-router.log")
        router = cls(pid, start_ticks(pid), (host.address, port), directory)

        def listening() -> bool:
            if not process_alive(router.pid, router.ticks):
                raise JavaRouterError(f"the Java router exited; see {directory / 'logs'}")
            return port_open(port, host.address)

        try:
            wait_until(
                f"the Java router's I2CP on {host.address}:{port}",
                timeout_s,
                listening,
                interval=0.5,
                error=JavaRouterError,
            )
        except JavaRouterError:
            router.stop()
            raise
        log.info("Java router up", extra=fields(i2cp=f"{host.address}:{port}", tls=tls))
        return router

    def stop(self) -> None:
        if not stop_process_group(self.pid, self.ticks, term_grace_s=15.0):
            raise JavaRouterError(f"Java router {self.pid} survived SIGKILL")
