"""The JSON state files by which separate test-bed commands find what an earlier one started
(testnet.json, cluster.json, demo.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_state(
    path: Path, parse: Callable[[dict[str, Any]], T], error: Callable[[str], Exception]
) -> T | None:
    """`parse` of the JSON object in `path`; None when there is no file; `error` when it
    cannot be read or `parse` finds it damaged (KeyError, TypeError, ValueError)."""
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON object expected, got {type(raw).__name__}")
        return parse(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise error(f"unreadable {path}: {exc!r}") from exc


def save_state(path: Path, document: dict[str, Any]) -> None:
    """Write `document` whole or not at all: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
