"""Backbone specs for fused descriptors, and evaluation experiments merged from YAML and the command line."""

import pytest
import torch

from corrmark.errors import CorrmarkError
from corrmark.config import load_config_file, load_yaml
from corrmark.eval.experiment import PROTOCOL_DEFAULTS, protocol_of, resolve_eval_experiment
from corrmark.backbones.descriptors import DescriptorExtractor, parse_backbone_spec
from corrmark.preprocess import Preprocess


def test_parse_single_and_fused_specs():
    assert parse_backbone_spec("dinov2_vits14", [8]) == [("dinov2_vits14", [8], 1.0)]
    assert parse_backbone_spec("dinov2_vits14", [[8, 9]]) == [("dinov2_vits14", [8, 9], 1.0)]
    assert parse_backbone_spec("dinov2_vits14+efficientnet_lite0*1.5", [[8], [3, 4]]) == [
        ("dinov2_vits14", [8], 1.0), ("efficientnet_lite0", [3, 4], 1.5)]
    assert parse_backbone_spec("a+b", None) == [("a", None, 1.0), ("b", None, 1.0)]
    with pytest.raises(CorrmarkError, match="one layer list per backbone"):
        parse_backbone_spec("a+b", [8])


def test_fused_descriptor_is_unit_length_on_the_first_grid():
    extractor = DescriptorExtractor([("dinov2_vits14", [8], 1.0), ("efficientnet_lite0", [3, 4], 1.5)])
    assert extractor.size_multiple == 14 and extractor.stride == 14
    images = torch.rand(1, 3, 224, 308)
    descriptors = extractor(images)
    assert descriptors.shape == (1, 384 + 112 + 320, 16, 22)
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(1, 16, 22))


def test_preprocess_keeps_aspect_and_rounds_to_the_multiple():
    import numpy as np

    image = np.zeros((300, 200, 3), np.uint8)
    keep_aspect = Preprocess(224, 14, keep_aspect=True)
    # the area of a 224 square at 3:2, each side rounded up to 14: 274.3 x 182.9 -> 280 x 196 (20 x 14 >= 16 x 16 cells)
    assert keep_aspect.to_input(image).shape == (1, 3, 280, 196)
    assert Preprocess(224, 14).to_input(image).shape == (1, 3, 224, 224)
    assert keep_aspect.to_input(np.zeros((50, 50, 3), np.uint8)).shape == (1, 3, 224, 224)
    # a 1 x 5000 strip: the longer side is capped at 4 x 224
    assert keep_aspect.to_input(np.zeros((1, 5000, 3), np.uint8)).shape == (1, 3, 14, 896)
    for height, width in [(480, 640), (333, 500), (375, 500), (1000, 1500), (97, 211)]:
        shape = Preprocess(336, 14, keep_aspect=True).to_input(np.zeros((height, width, 3), np.uint8)).shape
        assert (shape[2] // 14) * (shape[3] // 14) >= 24 * 24  # never fewer cells than the 336 square


def test_experiment_merges_file_defaults_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("dataset: pf-willow\nroot: /data/willow\nprotocol: {direction: s2t, alphas: [0.1]}\n"
                    "matcher: {name: nn, options: {backbone: dinov2_vits14, layers: [8]}}\n")
    experiment = resolve_eval_experiment(load_yaml(path), {
        "root": "/elsewhere", "protocol": {"direction": None, "averaging": "keypoint"},
        "matcher_options": {"image_size": 336, "layers": None}})
    assert experiment["root"] == "/elsewhere" and experiment["dataset"] == "pf-willow"
    assert experiment["protocol"] == {**PROTOCOL_DEFAULTS, "direction": "s2t", "alphas": [0.1], "averaging": "keypoint"}
    assert experiment["matcher"]["options"] == {"backbone": "dinov2_vits14", "layers": [8], "image_size": 336}
    protocol = protocol_of(experiment)
    assert protocol.alphas == (0.1,) and protocol.direction == "s2t"


def test_experiment_errors(tmp_path):
    with pytest.raises(CorrmarkError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("dataset: [unclosed\n")
    with pytest.raises(CorrmarkError, match="cannot parse config"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(CorrmarkError, match="unknown config keys: colour"):
        resolve_eval_experiment({"colour": 1, "dataset": "x", "root": "y"}, {})
    with pytest.raises(CorrmarkError, match="no root given"):
        resolve_eval_experiment({"dataset": "pf-willow"}, {})


def test_checked_in_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "zero_shot").glob("*.yaml"))
    assert configs, "configs/zero_shot/ should hold the benchmark configs"
    for path in configs:
        experiment = resolve_eval_experiment(load_config_file(path), {"root": "/any"})
        protocol_of(experiment)  # raises on an invalid protocol
        assert experiment["matcher"]["name"] == "nn"
