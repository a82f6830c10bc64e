"""`i2p-multihome balance`: the balancer without Kubernetes, driven by the same manifest
the operator takes, reporting the same status shape into a JSON file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2p_multihome.balancer.profiles import (
    PeerProfiles,
    ProfileDocumentError,
    from_json_text,
    to_json_text,
)
from i2p_multihome.balancer.reporter import StatusSink
from i2p_multihome.dataplane import remembered
from i2p_multihome.hosting import ClientSaver, HostedDestination, ProfileSaver, TaskEnded
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import (
    MultihomedDestinationManifest,
    MultihomedDestinationStatus,
)
from i2p_multihome.streaming.routes import RememberedClient
from i2p_multihome.wire.keys import KeyFileError, load_or_create

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    pass


def load_manifest(path: str) -> MultihomedDestinationManifest:
    """The first MultihomedDestination in a YAML file, validated; errors name the field."""
    try:
        with open(path, encoding="utf-8") as handle:
            documents = [d for d in yaml.safe_load_all(handle) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "MultihomedDestination":
            try:
                manifest = MultihomedDestinationManifest.model_validate(document)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ManifestError(f"{path}: invalid MultihomedDestination: {problems}") from None
            if manifest.spec.routers_from is not None:
                raise ManifestError(
                    f"{path}: spec.routersFrom finds routers through a Kubernetes Service, "
                    "which only the operator reads; list them in spec.routers for balance"
                )
            return manifest
    kinds = sorted({str(d.get("kind")) for d in documents if isinstance(d, dict)})
    found = f" (found kind: {', '.join(kinds)})" if kinds else ""
    raise ManifestError(f"{path}: no document with kind: MultihomedDestination{found}")


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def write_text_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)  # an older file keeps its mode through O_CREAT
    os.replace(tmp, path)


class StatusFileSink:
    """The status, as the CRD status subresource would hold it, in a JSON file replaced
    atomically (a reader never sees half a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def write(self, status: MultihomedDestinationStatus) -> None:
        await asyncio.to_thread(write_json_atomically, self.path, status.to_json_dict())


class NoStatus:
    async def write(self, status: MultihomedDestinationStatus) -> None:
        pass


class BalancerFailed(Exception):
    """A task of the standalone balancer ended on its own."""


def load_profiles_file(path: Path, now_s: float, log_fields: dict[str, object]) -> PeerProfiles:
    """The profiles a previous run saved in `path`; none when there is no such file or it
    cannot be read (logged: the balancer learns them again)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return PeerProfiles()
    except OSError as exc:
        log.warning("peer profiles not read", extra=fields(**log_fields, error=str(exc)))
        return PeerProfiles()
    try:
        return from_json_text(text, now_s)
    except ProfileDocumentError as exc:
        log.warning(
            "peer profiles unreadable, starting afresh", extra=fields(**log_fields, error=str(exc))
        )
        return PeerProfiles()


def load_clients_file(path: Path, log_fields: dict[str, object]) -> list[RememberedClient]:
    """The recent clients a previous run saved in `path`; none when there is no such file
    or it cannot be read (logged: those clients recover on their own, as without it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("recent clients not read", extra=fields(**log_fields, error=str(exc)))
        return []
    try:
        return remembered.from_json_text(text)
    except remembered.ClientDocumentError as exc:
        log.warning("recent clients unreadable, starting without them",
                    extra=fields(**log_fields, error=str(exc)))  # fmt: skip
        return []


async def run_standalone(
    manifest: MultihomedDestinationManifest,
    keys_path: str,
    status_path: Path | None,
    profiles_path: Path | None = None,
    clients_path: Path | None = None,
) -> None:
    """Host the destination until SIGINT or SIGTERM, then reset its streams and destroy
    every session. Raises BalancerFailed if a task of it ends on its own."""
    keys = load_or_create(keys_path)
    log_fields: dict[str, object] = {"destination": keys.destination.b32}
    sink: StatusSink = StatusFileSink(status_path) if status_path is not None else NoStatus()
    saver: ProfileSaver | None = None
    profiles = None
    if profiles_path is not None:
        profiles = load_profiles_file(profiles_path, time.time(), log_fields)
        target = profiles_path

        async def saver(current: PeerProfiles) -> None:
            await asyncio.to_thread(write_text_atomically, target, to_json_text(current))

    client_saver: ClientSaver | None = None
    clients: list[RememberedClient] = []
    if clients_path is not None:
        clients = load_clients_file(clients_path, log_fields)
        clients_target = clients_path

        async def client_saver(current: Sequence[RememberedClient]) -> None:
            # Who talks to the service: readable by the balancer's user only.
            text = remembered.to_json_text(current)
            await asyncio.to_thread(write_text_atomically, clients_target, text, 0o600)

    hosted = HostedDestination(
        manifest.metadata.name,
        manifest.spec,
        keys,
        sink,
        namespace=manifest.metadata.namespace or "default",
        log_fields=log_fields,
        peer_profiles=profiles,
        save_profiles=saver,
        recent_clients=clients,
        save_clients=client_saver,
    )
    log.info(
        "standalone balancer",
        extra=fields(
            **log_fields, routers=len(manifest.spec.routers), ports=len(manifest.spec.ports)
        ),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hosted.start()
    stopping = asyncio.create_task(stop.wait())
    failing = asyncio.create_task(hosted.failed())
    failure: TaskEnded | None = None
    try:
        await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
        if failing.done():
            failure = failing.result()
        # Stopping ends the tasks on purpose: no longer a failure to watch for.
        for task in (stopping, failing):
            task.cancel()
        await asyncio.gather(stopping, failing, return_exceptions=True)
        log.info("stopping: destroying sessions", extra=fields(**log_fields))
        # The profiles are saved once, by the stop below that every way out takes.
        await hosted.stop(destroy_sessions=True, keep_profiles=False)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in (stopping, failing):
            task.cancel()
        # Cancelled from outside: the sessions close without DestroySession.
        await hosted.stop(destroy_sessions=False)
        if not await hosted.report():
            log.warning("final status not written", extra=fields(**log_fields))
    if failure is not None:
        raise BalancerFailed(str(failure))


def _command(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.manifest)
        asyncio.run(
            run_standalone(
                manifest, args.keys, args.status_file, args.profiles_file, args.clients_file
            )
        )
    except (ManifestError, KeyFileError) as exc:
        print(f"i2p-multihome balance: {exc}", file=sys.stderr)
        return 2
    except BalancerFailed as exc:
        print(f"i2p-multihome balance: {exc}", file=sys.stderr)
        return 1
    return 0


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "balance",
        help="run the balancer for one MultihomedDestination manifest, without Kubernetes",
    )
    parser.add_argument("-f", "--manifest", required=True, help="MultihomedDestination YAML")
    parser.add_argument(
        "--keys",
        required=True,
        help="key file (created if missing); an i2pd private key .dat is imported",
    )
    parser.add_argument("--status-file", type=Path, help="JSON status, rewritten on change")
    parser.add_argument(
        "--profiles-file",
        type=Path,
        help="peer profiles (JSON), read at start and saved every 5 minutes and at exit",
    )
    parser.add_argument(
        "--clients-file",
        type=Path,
        help="recent clients (JSON, mode 0600), read at start and saved every minute and at "
        "exit: after a restart each is pinged through a router, which gives it a new session",
    )
    parser.set_defaults(func=_command)
