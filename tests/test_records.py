"""One writer for every result JSON (``corrmark.eval.records``): the record's keys, both metric layouts, JSON types,
an atomic write, and the errors a caller can make."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from corrmark.errors import CorrmarkError
from corrmark.eval.records import (RESULT_SCHEMA_VERSION, json_ready, record_metrics, record_result,
                                   script_command)
from corrmark.provenance import machine_info

PROTOCOL = {"direction": "t2s", "threshold": "kp-bbox"}
MODEL = {"name": "nn", "checkpoint": None}


def test_a_record_names_its_source_and_keeps_metrics_under_metrics(tmp_path):
    path = tmp_path / "deep" / "row.json"
    returned = record_result(path, {"pck": {"0.1": 0.5}}, PROTOCOL, MODEL, "corrmark eval pf-willow",
                             config="configs/x.yaml", seconds=1.234, extra={"label": "row"})
    written = json.loads(path.read_text())
    assert written == returned
    assert list(written) == ["schema_version", "command", "model", "config", "protocol", "metrics", "label",
                             "seconds", "machine"]
    assert written["schema_version"] == RESULT_SCHEMA_VERSION == 1
    assert written["command"] == "corrmark eval pf-willow" and written["model"] == MODEL
    assert written["metrics"] == {"pck": {"0.1": 0.5}} and written["seconds"] == 1.23
    assert written["machine"] == machine_info()
    assert [entry.name for entry in path.parent.iterdir()] == ["row.json"], "no temporary file is left behind"


def test_top_level_metrics_keep_the_layout_the_tables_read(tmp_path):
    record = record_result(tmp_path / "r.json", {"pck": {"0.1": 0.5}, "pairs": 3, "seconds": 9.0}, PROTOCOL, MODEL,
                           "corrmark eval", metrics_key=None)
    assert record["pck"] == {"0.1": 0.5} and record["pairs"] == 3 and "metrics" not in record
    assert record["seconds"] == 9.0, "the evaluation's own time stays when no seconds are given"
    assert record["config"] is None, "config is always named, None when there is none"
    assert record_metrics(record) is record
    nested = record_result(tmp_path / "n.json", {"pairs": 3}, PROTOCOL, MODEL, "x")
    assert record_metrics(nested) == {"pairs": 3}


@pytest.mark.parametrize("metrics, extra", [({"machine": 1}, None), ({"protocol": 1}, None), ({}, {"command": 1}),
                                            ({"model": 1}, None)])
def test_metrics_may_not_replace_the_records_own_keys(tmp_path, metrics, extra):
    with pytest.raises(CorrmarkError, match="record's own key"):
        record_result(tmp_path / "r.json", metrics, PROTOCOL, MODEL, "x", extra=extra, metrics_key=None)
    assert not (tmp_path / "r.json").exists()


def test_numpy_tensors_and_paths_become_json(tmp_path):
    values = {"a": np.float32(0.5), "b": np.arange(3), "c": torch.tensor([1.5, 2.0]),
              "d": (np.int64(2), np.bool_(True)), "e": tmp_path / "f.png"}
    assert json_ready(values) == {"a": 0.5, "b": [0, 1, 2], "c": [1.5, 2.0], "d": [2, True],
                                  "e": str(tmp_path / "f.png")}
    record = record_result(tmp_path / "r.json", values, PROTOCOL, MODEL, "x")
    assert json.loads((tmp_path / "r.json").read_text())["metrics"] == record["metrics"]


def test_script_command_names_the_script_and_quotes_its_arguments(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/jlad_mtfl.py", "--config", "a b.yaml"])
    assert script_command() == "PYTHONPATH=src python benchmarks/jlad_mtfl.py --config 'a b.yaml'"
    assert script_command(["--x", "1"]) == "PYTHONPATH=src python benchmarks/jlad_mtfl.py --x 1"
