"""Where benchmarks write their results: benchmarks/results/KIND-DATE[-N].json, committed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def results_path(kind: str, date: str) -> Path:
    """The first free KIND-DATE.json, KIND-DATE-2.json, ... (a day may have several runs)."""
    path = RESULTS / f"{kind}-{date}.json"
    number = 2
    while path.exists():
        path = RESULTS / f"{kind}-{date}-{number}.json"
        number += 1
    return path


def write_results(kind: str, result: dict[str, Any]) -> Path:
    """Write `result` (which holds its "date") as the next free file of its day."""
    RESULTS.mkdir(exist_ok=True)
    path = results_path(kind, result["date"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
