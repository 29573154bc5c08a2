"""benchmarks/descriptor_cost.py: one row per descriptor with the grid it gives and positive seconds per image (a
tiny run on the efficientnet backbone only; the measurement itself is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_descriptor_cost", REPO / "benchmarks" / "descriptor_cost.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_rows_name_the_grid_and_the_seconds(monkeypatch, tmp_path):
    script = load_script(monkeypatch)
    monkeypatch.setattr(script, "DESCRIPTORS", [("stride 8", "efficientnet_lite0", [2], 64),
                                                ("stride 16", "efficientnet_lite0", [3], 64)])
    out = tmp_path / "cost.json"
    script.main(["--batch", "1", "--repeats", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    rows = record["metrics"]["rows"]
    assert [row["grid"] for row in rows] == [[8, 8], [4, 4]]
    assert all(row["seconds_per_image"] > 0 for row in rows)
    assert record["protocol"]["threads"] == 1 and record["model"] == {"descriptors": ["stride 8", "stride 16"]}
