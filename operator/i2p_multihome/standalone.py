"""`i2p-multihome balance`: the balancer without Kubernetes, driven by the same manifest
the operator takes, reporting the same status shape into a JSON file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2p_multihome.balancer.engine import Balancer
from i2p_multihome.balancer.status import build_status
from i2p_multihome.logs import fields
from i2p_multihome.model.v1alpha1 import (
    Condition,
    MultihomedDestinationManifest,
)
from i2p_multihome.wire.keys import KeyFileError, load_or_create

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 5.0


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
                return MultihomedDestinationManifest.model_validate(document)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ManifestError(f"{path}: invalid MultihomedDestination: {problems}") from None
    kinds = sorted({str(d.get("kind")) for d in documents if isinstance(d, dict)})
    found = f" (found kind: {', '.join(kinds)})" if kinds else ""
    raise ManifestError(f"{path}: no document with kind: MultihomedDestination{found}")


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


async def run_standalone(
    manifest: MultihomedDestinationManifest, keys_path: str, status_path: Path | None
) -> None:
    keys = load_or_create(keys_path)
    changed = asyncio.Event()
    balancer = Balancer(manifest.metadata.name, manifest.spec, keys, on_change=changed.set)
    log.info(
        "standalone balancer",
        extra=fields(destination=keys.destination.b32, routers=len(manifest.spec.routers)),
    )
    conditions: list[Condition] = []

    async def write_status() -> None:
        nonlocal conditions
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), STATUS_REFRESH_S)
            changed.clear()
            status = build_status(balancer.snapshot(), time.time(), conditions)
            conditions = status.conditions
            if status_path is not None:
                try:
                    write_json_atomically(status_path, status.to_json_dict())
                except OSError as exc:  # a full or vanished disk must not stop the balancer
                    log.warning(
                        "status file not written", extra=fields(path=status_path, error=str(exc))
                    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(balancer.run())
    writer = asyncio.create_task(write_status())
    try:
        await stop.wait()
        log.info("stopping: destroying sessions", extra=fields(destination=keys.destination.b32))
        await balancer.stop(destroy_sessions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in (runner, writer):
            task.cancel()
        await asyncio.gather(runner, writer, return_exceptions=True)
        if status_path is not None:
            status = build_status(balancer.snapshot(), time.time(), conditions)
            write_json_atomically(status_path, status.to_json_dict())


def _command(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.manifest)
        asyncio.run(run_standalone(manifest, args.keys, args.status_file))
    except (ManifestError, KeyFileError) as exc:
        print(f"i2p-multihome balance: {exc}", file=sys.stderr)
        return 2
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
    parser.set_defaults(func=_command)
