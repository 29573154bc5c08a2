"""benchmarks/keypoint_cost.py writes through benchmarks/common.write_script_result: its metrics keep the keys of the
committed result (no measurement is run here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results" / "speed" / "keypoint_cost.json"


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_keypoint_cost", REPO / "benchmarks" / "keypoint_cost.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_record_keeps_the_metrics_and_names_protocol_and_matchers(monkeypatch, tmp_path):
    script = load_script(monkeypatch)
    committed = json.loads(COMMITTED.read_text())
    committed = committed.get("metrics", committed)  # the hand-written layout had them at the top level
    memory = [{"mode": "whole_call", "call_peak_increase_mb": 1.0}]
    rows = [{"matcher": "nn (best)", "describe": {"name": "nn"}, "ratio": 1.0}]
    metrics, protocol, model = script.result_parts(memory, rows, ["a.jpg -> b.jpg"])
    for part in ("keypoint_transfer", "mapping_memory"):
        assert set(metrics[part]) == set(committed[part])
    assert metrics["keypoint_transfer"]["rows"] == rows and metrics["mapping_memory"]["rows"] == memory
    assert "transfer_keypoints" in protocol["description"]
    assert protocol["repeats"] == script.REPEATS and protocol["goal_ratio"] == script.GOAL_RATIO
    assert model == ["nn (best)"]

    from common import write_script_result

    record = write_script_result(tmp_path / "keypoint_cost.json", metrics, protocol, model, argv=[])
    assert json.loads((tmp_path / "keypoint_cost.json").read_text())["metrics"] == record["metrics"]
    assert record["schema_version"] >= 1 and record["model"] == ["nn (best)"]
