"""Helpers shared by the benchmarks/sfnet_*.py scripts: result files with command, config, protocol, metrics, seconds
and machine (one JSON file per result row, under benchmarks/results/)."""

import json
import shlex
import sys
from pathlib import Path

from corrmark.provenance import machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    return " ".join(shlex.quote(part) for part in ["python", *sys.argv])


def write_result(name: str, *, config, protocol, metrics, seconds, extra=None, out_dir=None) -> Path:
    row = {"command": command_line(), "config": config, "protocol": protocol, "metrics": metrics,
           "seconds": round(float(seconds), 2), "machine": machine_info()}
    row.update(extra or {})
    path = Path(out_dir or RESULTS) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
