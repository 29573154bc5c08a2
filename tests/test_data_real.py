"""Loaders on the real data in ../shared/data (skipped when absent; CORRMARK_SHARED_DATA overrides the location)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from corrmark.data import MTFL, CUBUnlabeled, PFWillow
from corrmark.eval import PCKAccumulator, PCKProtocol, evaluation_side

# `shared_data` comes from conftest.py (skips when ../shared/data is absent).


@pytest.fixture(scope="module")
def willow(shared_data):
    return PFWillow(shared_data / "pf-willow", load_images=False)


def test_pf_willow_counts(willow):
    assert len(willow) == 900
    assert len(willow.categories) == 10
    assert all(sample["valid"].sum() == 10 for sample in willow)  # every keypoint present and on its image


def test_pf_willow_splits(shared_data):
    root = shared_data / "pf-willow"
    train, test = PFWillow(root, "train", load_images=False), PFWillow(root, "test", load_images=False)
    assert len(train) == len(test) == 200
    train_images = {s["source_path"] for s in train}
    test_images = {s["source_path"] for s in test}
    assert len(train_images) == len(test_images) == 50 and not train_images & test_images


def test_pf_willow_first_pair_matches_mat_minus_one(willow):
    sample = willow[0]
    for side in ("source", "target"):
        mat = scipy.io.loadmat(Path(sample[f"{side}_path"]).with_suffix(".mat"))["pts_coord"]  # 2 x 10, 1-based
        np.testing.assert_allclose(sample[f"{side}_points"], mat.T - 1, atol=1e-6)


def test_pf_willow_identity_prediction_scores_one(shared_data):
    # A perfect matcher (prediction = ground truth) must give PCK 1 in both directions.
    dataset = PFWillow(shared_data / "pf-willow", "test")
    for direction in ("s2t", "t2s"):
        accumulator = PCKAccumulator(PCKProtocol(direction, "kp-bbox", "pair"))
        for sample in dataset[:5]:
            side = evaluation_side(sample, direction)
            assert side["query_image"].ndim == 3 and side["query_points"].shape == (10, 2)
            pred = side["reference_points"][side["valid"]]
            accumulator.add(pred, side["reference_points"], side["valid"], side["reference_shape"],
                            side["reference_bbox"], side["category"])  # fmt: skip
        result = accumulator.result()
        assert result["pck"] == {"0.05": 1.0, "0.1": 1.0, "0.15": 1.0} and result["pairs"] == 5


def test_mtfl_counts(shared_data):
    train = MTFL(shared_data / "mtfl", "train", load_images=False)
    test = MTFL(shared_data / "mtfl", "test", load_images=False)
    assert len(train) == 10000 and len(test) == 2995
    first = train[0]
    assert first["path"].endswith("lfw_5590/Aaron_Eckhart_0001.jpg")
    np.testing.assert_allclose(first["points"][0], [107.25, 108.75])  # x1, then y1 (the 6th number)
    np.testing.assert_allclose(first["points"][4], [140.75, 162.75])
    assert first["shape"] == (250, 250)
    image = MTFL(shared_data / "mtfl", "test")[0]["image"]
    assert image.shape == (150, 150, 3)


def test_cub_counts(shared_data):
    root = shared_data / "cub-birds-unlabeled"
    everything = CUBUnlabeled(root, load_images=False)
    assert len(everything) == 5902 and len(everything.categories) == 100
    train, test = CUBUnlabeled(root, "train", load_images=False), CUBUnlabeled(root, "test", load_images=False)
    # train_test_split.txt marks 2,903 images with is_train = 1 (its README quotes the two counts the other way round)
    assert len(train) + len(test) == 5902 and len(train) == 2903
    sample = CUBUnlabeled(root)[0]
    assert sample["image"].shape == (227, 227, 3) and sample["category"] == "Black_footed_Albatross"
