"""What the benchmarks/ scripts share: where their results go and how a run is recorded.

Results live in ``benchmarks/results/<method>/`` (``METHODS``); every result JSON is written by
``corrmark.eval.records.record_result`` (schema version, command, model, config, protocol, metrics, seconds, machine),
the writer of ``corrmark eval --json`` and ``corrmark eval-landmarks --json`` too. Importing this module puts the
checkout's ``src/`` first on ``sys.path``, so the scripts run without installing corrmark.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corrmark.eval.records import record_result, script_command  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("sfnet", "scorrsan", "jlad", "c3", "zero_shot", "propagate", "speed")
SHARED_DATA = ROOT.parent / "shared" / "data"


def results_dir(method: str) -> Path:
    """``benchmarks/results/<method>``: the folder of one method's (or benchmark family's) result files."""
    if method not in METHODS:
        raise ValueError(f"unknown results folder {method!r}; one of: {', '.join(METHODS)}")
    return RESULTS / method


def write_script_result(path: str | os.PathLike, metrics: dict, protocol, model, *, config=None, seconds=None,
                        extra: dict | None = None, argv: list[str] | None = None,
                        metrics_key: str | None = "metrics") -> dict:
    """One result row of the running script (``record_result``; metrics under ``metrics`` unless ``metrics_key``
    says otherwise); prints where it went."""
    record = record_result(path, metrics, protocol, model, script_command(argv), config=config, seconds=seconds,
                           extra=extra, metrics_key=metrics_key)
    print(f"wrote {path}")
    return record
