"""One writer for every result JSON: ``corrmark eval``, ``corrmark eval-landmarks`` and the ``benchmarks/`` scripts.

Every record names where its numbers come from, in the same keys:

- ``schema_version``: ``RESULT_SCHEMA_VERSION``; a reader can tell the layouts apart by it (files written before it
  existed have none);
- ``command``: the command line that wrote the file;
- ``model``: what was evaluated (its name, checkpoint and options, or a model's ``describe()``);
- ``config``: the config file or dict behind it (None when there is none);
- ``protocol``: how the metrics were measured;
- the metrics: under ``metrics`` (the benchmarks/ scripts), or at the top level with ``metrics_key=None`` (the layout
  of ``corrmark eval`` and ``eval-landmarks`` files: ``pck``, ``pairs``, ``mean_error`` ... which
  ``benchmarks/make_table.py``, ``sfnet_table.py`` and the docs read there);
- the caller's ``extra`` keys;
- ``seconds`` (when given) and ``machine`` (:func:`corrmark.provenance.machine_info`).

The file is written through a temporary file and a rename (a reader never sees half a file); numpy numbers and
arrays, tensors and paths become JSON numbers, lists and strings.
"""

from __future__ import annotations

import os
import shlex
import sys

import numpy as np
import torch

from ..errors import CorrmarkError
from ..io import write_json_atomic
from ..provenance import machine_info

RESULT_SCHEMA_VERSION = 1
HEADER_KEYS = ("schema_version", "command", "model", "config", "protocol", "seconds", "machine")


def record_result(path: str | os.PathLike, metrics: dict, protocol: dict | None, model, command: str, *,
                  config=None, seconds: float | None = None, extra: dict | None = None,
                  metrics_key: str | None = "metrics") -> dict:
    """Write one result record (module docstring) to ``path`` and return it.

    ``metrics_key=None`` merges ``metrics`` into the top level; a metric or ``extra`` key that is one of the record's
    own keys (``HEADER_KEYS``) is an error rather than silently replaced, except ``seconds`` when the argument is
    not given (``corrmark eval`` results time themselves).
    """
    record = {"schema_version": RESULT_SCHEMA_VERSION, "command": str(command), "model": model, "config": config,
              "protocol": protocol}
    own = {key for key in HEADER_KEYS if key != "seconds" or seconds is not None}
    if metrics_key is None:
        _add(record, metrics, own, "metrics")
    else:
        record[metrics_key] = metrics
    _add(record, extra or {}, own, "extra")
    if seconds is not None:
        record["seconds"] = round(float(seconds), 2)
    record["machine"] = machine_info()
    record = json_ready(record)
    write_json_atomic(path, record)
    return record


def script_command(argv: list[str] | None = None) -> str:
    """The command line of the running Python script, as a ``benchmarks/`` record names it:
    ``PYTHONPATH=src python benchmarks/x.py ARGS`` (``argv`` = the script's arguments, default ``sys.argv[1:]``)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return "PYTHONPATH=src python " + shlex.join([sys.argv[0], *arguments])


def json_ready(value):
    """``value`` with numpy scalars and arrays, tensors, paths and tuples turned into JSON types (recursively)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, torch.Tensor):
        return json_ready(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def record_metrics(record: dict) -> dict:
    """The metrics of a record in either layout (``metrics`` or the top level)."""
    metrics = record.get("metrics")
    return metrics if isinstance(metrics, dict) else record


def _add(record: dict, values: dict, own: set, what: str) -> None:
    clashes = sorted(set(values) & own)
    if clashes:
        raise CorrmarkError(f"result {what} may not hold the record's own key(s) {', '.join(clashes)}")
    record.update(values)


__all__ = ["RESULT_SCHEMA_VERSION", "json_ready", "record_metrics", "record_result", "script_command"]
