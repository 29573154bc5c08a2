"""benchmarks/speed_vs_official_sfnet.py and its default adapter: the HARNESS ONLY.

The "official" folders below are FAKES written into tmp_path (a model.py with a trivial SFNet-like module): they test
the harness's mechanics (arguments, one-line errors, adapters, interleaving, the result JSON), not the official
SFNet code, which is not in this repository and which no test runs. Nothing here is timed or compares speeds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

FAKE_MODEL = '''
import torch
import torch.nn.functional as F
import torchvision.models as models
from torch import nn


class SFNet(nn.Module):
    """FAKE: a trivial stand-in with the constructor and call the default adapter assumes."""

    def __init__(self, feature_h, feature_w, beta=50, kernel_sigma=5):
        super().__init__()
        self.grid_hw = (feature_h, feature_w)
        self.backbone = models.resnet101(pretrained=BACKBONE_PRETRAINED) if BUILD_BACKBONE else None
        self.flow = nn.Conv2d(6, 2, 1)

    def forward(self, src_img, tgt_img, train=True):
        assert not train
        both = F.adaptive_avg_pool2d(torch.cat([src_img, tgt_img], 1), self.grid_hw)
        return {"grid_T2S": torch.tanh(self.flow(both)).permute(0, 2, 3, 1)}
'''

TINY_ADAPTER = '''
import importlib.util
from pathlib import Path

CALLS = []


def build(size, device, official):
    spec = importlib.util.spec_from_file_location("fake_official_model", Path(official) / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.SFNet(size // 16, size // 16).eval()
    return lambda source, target: model(source, target, train=False)["grid_T2S"]


def dense_to_keypoints(flow, points, source_hw, target_hw):
    CALLS.append(len(points))
    return points
'''


def fake_official(folder: Path, build_backbone: bool = False, pretrained: bool = True) -> Path:
    folder.mkdir()
    header = f"BUILD_BACKBONE = {build_backbone}\nBACKBONE_PRETRAINED = {pretrained}\n"
    (folder / "model.py").write_text(header + FAKE_MODEL)
    return folder


def load_script(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script(monkeypatch):
    return load_script(monkeypatch, "speed_vs_official_sfnet")


@pytest.fixture
def adapter(monkeypatch):
    return load_script(monkeypatch, "official_sfnet_adapter")


def one_line_error(call) -> str:
    with pytest.raises(SystemExit) as raised:
        call()
    message = str(raised.value.code)
    assert "\n" not in message and message.startswith("speed_vs_official_sfnet.py: error: ")
    return message


def test_harness_writes_speedups_and_rows_with_a_fake_official_folder(script, tmp_path):
    official = fake_official(tmp_path / "SFNet")
    adapter_file = tmp_path / "tiny_adapter.py"
    adapter_file.write_text(TINY_ADAPTER)
    out = tmp_path / "out.json"
    script.main(["--official", str(official), "--adapter", str(adapter_file), "--size", "64", "--backbone",
                 "resnet18", "--repetitions", "2", "--threads", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    for key in ("speedup_dense", "speedup_keypoints", "speedup_dense_paper_kernels", "speedup_keypoints_paper_kernels"):
        assert metrics[key] > 0
    assert metrics["official_compared"] is True
    rows = {row["contestant"]: row for row in metrics["rows"]}
    assert set(rows) == {"official SFNet", "corrmark SFNet [3,3]", "corrmark SFNet [5,3]"}
    for row in rows.values():
        assert len(row["seconds_dense_each"]) == len(row["seconds_keypoints_each"]) == 2
        assert row["peak_rss_mb"] > 0 and row["dense_per_backbone"] > 0
    assert len(metrics["backbone_seconds_each"]) == 2
    assert record["protocol"]["size"] == 64 and record["protocol"]["repetitions"] == 2
    assert [model["contestant"] for model in record["model"]][0] == "official SFNet"
    kernels = {model["contestant"]: model.get("kernel_sizes") for model in record["model"]}
    assert kernels["corrmark SFNet [3,3]"] == [3, 3] and kernels["corrmark SFNet [5,3]"] == [5, 3]
    adapter_module = next(module for name, module in sys.modules.items() if name.startswith("sfnet_adapter_tiny"))
    assert adapter_module.CALLS and set(adapter_module.CALLS) == {10}  # the adapter's dense_to_keypoints was used


def test_corrmark_only_measures_without_the_official_rows_and_never_writes_the_result(script, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "RESULT", tmp_path / "speed_vs_official_sfnet.json")
    arguments = ["--corrmark-only", "--size", "64", "--backbone", "resnet18", "--repetitions", "1", "--threads", "1"]
    assert script.main(arguments) is None
    assert not (tmp_path / "speed_vs_official_sfnet.json").exists()
    metrics = script.main([*arguments, "--json", str(tmp_path / "rows.json")])["metrics"]
    assert metrics["official_compared"] is False and not any(key.startswith("speedup") for key in metrics)
    assert {row["contestant"] for row in metrics["rows"]} == {"corrmark SFNet [3,3]", "corrmark SFNet [5,3]"}
    message = one_line_error(lambda: script.main(["--corrmark-only", "--json", str(script.RESULT)]))
    assert "official rows would be missing" in message


def test_a_missing_official_folder_is_one_clear_line(script, tmp_path):
    message = one_line_error(lambda: script.main(["--official", str(tmp_path / "nope")]))
    assert str(tmp_path / "nope") in message and "cvlab-yonsei/SFNet" in message and "fetched by you" in message
    assert "--corrmark-only" in one_line_error(lambda: script.main([]))


def test_the_default_adapter_without_model_py_is_one_clear_line(script, tmp_path):
    (tmp_path / "empty").mkdir()
    message = one_line_error(lambda: script.main(["--official", str(tmp_path / "empty"), "--size", "64"]))
    assert "assumption 1" in message and "model.py does not exist" in message and "--adapter FILE.py" in message


def test_the_default_adapter_runs_a_fake_model_with_a_random_resnet101(adapter, tmp_path):
    # pretrained=True would download without the adapter's patch; nothing can be downloaded here
    forward = adapter.build(64, "cpu", fake_official(tmp_path / "SFNet", build_backbone=True))
    flow = forward(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    assert flow.shape == (1, 4, 4, 2)


def test_the_default_adapter_names_the_failed_assumption(adapter, tmp_path):
    with pytest.raises(adapter.AssumptionFailed, match=r"assumption 4 .* never called torchvision's resnet101"):
        adapter.build(64, "cpu", fake_official(tmp_path / "no_backbone"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.py").write_text("import a_module_that_is_not_there\n")
    with pytest.raises(adapter.AssumptionFailed, match=r"assumption 2 .*a_module_that_is_not_there.*--adapter"):
        adapter.build(64, "cpu", broken)


def test_the_official_flow_becomes_pixels_with_corrmarks_conventions(script):
    # an identity flow on a 4 x 5 grid (cell centres in [-1, 1]) maps every interior pixel onto itself
    h, w = 4, 5
    xs, ys = (torch.arange(w) * 2 + 1) / w - 1, (torch.arange(h) * 2 + 1) / h - 1
    flow = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]  # (1, h, w, 2)
    mapping = script.flow_to_mapping(flow, (40, 50), (40, 50))
    assert mapping.shape == (40, 50, 2) and mapping.dtype == np.float32
    pixels = np.stack(np.meshgrid(np.arange(50.0), np.arange(40.0)), -1)
    assert np.allclose(mapping[5:-5, 5:-5], pixels[5:-5, 5:-5], atol=1e-4)
    points = np.array([[10.0, 12.0], [30.5, 20.0]])
    assert np.allclose(script.read_flow_at_points(flow, points, (40, 50), (80, 100)), 2 * points + 0.5, atol=1e-4)


def test_speedups_are_medians_of_per_repetition_ratios(script):
    def runs(*seconds):
        return [{"seconds": s, "peak_rss_mb": 1.0, "peak_rss_increase_mb": 0.0} for s in seconds]

    timings = {"official SFNet": {"dense": runs(1, 4, 10), "keypoints": runs(2, 2, 2)},
               "corrmark SFNet [3,3]": {"dense": runs(1, 1, 5), "keypoints": runs(1, 1, 1)},
               "corrmark SFNet [5,3]": {"dense": runs(2, 2, 2), "keypoints": runs(2, 2, 2)},
               "backbone": {"backbone": runs(1, 2, 5)}}
    metrics = script.summarise(timings)
    assert metrics["speedup_dense"] == 2.0  # ratios 1, 4, 2; the ratio of the medians would be 4
    assert metrics["speedup_keypoints"] == 2.0 and metrics["speedup_dense_paper_kernels"] == 2.0
    assert metrics["meets_goal"] is True
    rows = {row["contestant"]: row for row in metrics["rows"]}
    assert rows["corrmark SFNet [3,3]"]["dense_per_backbone"] == 1.0  # ratios 1, 0.5, 1; of the medians: 0.5
