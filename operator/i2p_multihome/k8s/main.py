"""`i2p-multihome operator`: the kopf operator process (also the container's command)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from i2p_multihome.k8s import handlers, metrics
from i2p_multihome.logs import fields

log = logging.getLogger(__name__)


def kubernetes_api_client() -> client.ApiClient:
    """KUBECONFIG (or ~/.kube/config) when present, else the in-cluster ServiceAccount."""
    if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def run_operator(args: argparse.Namespace) -> int:
    # A liveness probe every few seconds is not news: keep aiohttp's access log quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    api = kubernetes_api_client()
    memo: Any = kopf.Memo(
        state=handlers.OperatorState(client.CoreV1Api(api), client.CustomObjectsApi(api))
    )
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=metrics.REGISTRY)
    log.info(
        "operator starting",
        extra=fields(
            namespaces=",".join(args.namespace) or "*",
            peering=args.peering or "standalone",
            metrics_port=args.metrics_port,
        ),
    )
    settings = kopf.OperatorSettings()
    # How long peers trust this replica's keep-alive: a SIGKILLed active replica is taken
    # over by a standby about this many seconds later.
    settings.peering.lifetime = args.peering_lifetime
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=settings,
            memo=memo,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator", help="run the Kubernetes operator (kopf) for MultihomedDestinations"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    parser.add_argument(
        "--peering",
        help="KopfPeering name for active/passive HA; without it, run one replica only",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
    parser.add_argument(
        "--peering-lifetime",
        type=_positive_int,
        default=60,
        help="seconds a replica's peering keep-alive stays valid; a standby takes over from a "
        "crashed active replica about this long after its last keep-alive (kopf's default: 60)",
    )
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint URL"
    )
    parser.add_argument("--metrics-port", type=int, default=9090, help="0 disables metrics")
    parser.add_argument("--metrics-address", default="0.0.0.0")
    parser.set_defaults(func=run_operator)
