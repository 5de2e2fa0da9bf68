"""`--set key=value` pairs from the command line, as the plan overrides topologies.catalog takes.

Here, low in the layers, so that the CLI, the runner and the scenarios share one parser
without importing the CLI.
"""
from __future__ import annotations


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """{key: value} of "key=value" pairs (both stripped); SystemExit names a pair without "="."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"ocalab: --set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
