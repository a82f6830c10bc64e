"""How e2e tests show what they measured: one `MEASURED what key=value ...` line each, on
stdout (visible with `pytest -s`), floats rounded to milliseconds."""

from __future__ import annotations


def report(what: str, **values: object) -> None:
    shown = " ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in values.items())
    print(f"MEASURED {what} {shown}", flush=True)
