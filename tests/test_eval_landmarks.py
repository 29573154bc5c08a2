"""The landmark evaluator on hand-computed cases (linear regression without bias, normalised errors)."""

import json
import os

import numpy as np
import pytest
import torch

from corrmark.errors import InvalidKeypointsError, UnknownNameError
from corrmark.eval.landmark_detection import detect_landmarks, export_landmarks
from corrmark.eval.landmarks import (apply_landmark_regressor, evaluate_landmark_points, evaluate_landmarks,
                                     fit_landmark_regressor, normalized_errors)
from corrmark.models.base import LandmarkModel


def faces(count, seed):
    """(N, 5, 2) face-like annotations: eyes about 40 px apart, random position, scale and per-landmark jitter (so
    the 10 coordinates are linearly independent across images and the least-squares fit is unique)."""
    rng = np.random.default_rng(seed)
    template = np.array([[-20.0, 0.0], [20.0, 0.0], [0.0, 20.0], [-15.0, 40.0], [15.0, 40.0]])
    scale = rng.uniform(0.8, 1.2, size=(count, 1, 1))
    centre = rng.uniform(60, 90, size=(count, 1, 2))
    return centre + scale * template + rng.normal(0, 2.0, size=(count, 5, 2))


def test_exact_linear_function_of_the_annotations_gives_zero_error():
    train, test = faces(40, 0), faces(20, 1)
    mixing = np.random.default_rng(2).normal(size=(10, 20))  # K = 10 discovered from 5 annotated, linearly
    discover = lambda points: (points.reshape(len(points), -1) @ mixing).reshape(len(points), 10, 2)
    result = evaluate_landmark_points(discover(train), train, discover(test), test)
    assert result["mean_error"] == pytest.approx(0.0, abs=1e-8)
    assert all(value == pytest.approx(0.0, abs=1e-8) for value in result["per_landmark"])
    assert result["train_images"] == 40 and result["test_images"] == 20


def test_discovered_equal_to_annotations_gives_the_identity_map():
    train = faces(30, 3)
    weights = fit_landmark_regressor(train, train)
    np.testing.assert_allclose(weights, np.eye(10), atol=1e-9)


def test_a_known_offset_gives_a_known_error():
    # the regression is fitted on exact landmarks; the test landmarks are all shifted by (3, 4) px -> 5 px error,
    # inter-ocular distance 40 px -> 12.5 % for every landmark
    template = np.array([[-20.0, 0.0], [20.0, 0.0], [0.0, 20.0], [-15.0, 40.0], [15.0, 40.0]])
    train = faces(30, 4)
    test = np.stack([template + [70.0, 70.0], template + [80.0, 60.0]])
    result = evaluate_landmark_points(train, train, test + [3.0, 4.0], test)
    assert result["mean_error"] == pytest.approx(12.5)
    assert result["per_landmark"] == pytest.approx([12.5] * 5)


def test_inter_ocular_normalisation_uses_landmarks_1_and_2():
    annotated = np.array([[[0.0, 0.0], [30.0, 40.0], [10.0, 10.0]]])  # eyes 50 px apart
    predicted = annotated + np.array([[[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]]])
    errors = normalized_errors(predicted, annotated, "inter-ocular")
    np.testing.assert_allclose(errors, [[0.0, 0.0, 0.1]])
    errors = normalized_errors(predicted, annotated, "inter-ocular", eyes=(0, 2))  # other eye indices
    np.testing.assert_allclose(errors, [[0.0, 0.0, 5.0 / np.hypot(10, 10)]])


def test_kp_bbox_normalisation_and_missing_annotations():
    annotated = np.array([[[0.0, 0.0], [20.0, 10.0], [np.nan, np.nan]]])  # box 20 x 10 -> length 20
    predicted = np.array([[[2.0, 0.0], [20.0, 10.0], [500.0, 500.0]]])
    errors = normalized_errors(predicted, annotated, "kp-bbox")
    np.testing.assert_allclose(errors[0, :2], [0.1, 0.0])
    assert np.isnan(errors[0, 2])


def test_missing_training_annotations_are_left_out_of_the_fit():
    train = faces(30, 5)
    corrupted = train.copy()
    corrupted[:10, 3] = np.nan  # landmark 3 missing in a third of the images
    weights = fit_landmark_regressor(train, corrupted)
    np.testing.assert_allclose(weights, np.eye(10), atol=1e-9)
    predicted = apply_landmark_regressor(weights, train)
    np.testing.assert_allclose(predicted, train, atol=1e-9)


def test_bad_inputs():
    with pytest.raises(InvalidKeypointsError):
        fit_landmark_regressor(np.zeros((3, 2, 2)), np.zeros((4, 5, 2)))
    with pytest.raises(InvalidKeypointsError):
        fit_landmark_regressor(np.full((3, 2, 2), np.nan), np.zeros((3, 5, 2)))
    with pytest.raises(UnknownNameError):
        evaluate_landmark_points(faces(5, 0), faces(5, 0), faces(5, 0), faces(5, 0), normalisation="bbox")


class CornerModel(LandmarkModel):
    """A fake model: landmark k sits at a fixed fraction of the image size (so it scales with the image)."""

    name = "corners"
    num_landmarks = 3
    FRACTIONS = np.array([[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])

    def detect(self, images):
        batch, _, height, width = images.shape
        points = torch.tensor(self.FRACTIONS, dtype=torch.float32) * torch.tensor([width, height])
        return torch.zeros(batch, 3, 4, 4), points.expand(batch, 3, 2).clone()


class FakeDataset:
    name = "fake"

    def __init__(self, records):
        self._records = records

    def __len__(self):
        return len(self._records)


def _write_images(tmp_path, sizes, prefix):
    from PIL import Image

    records = []
    for index, (height, width) in enumerate(sizes):
        path = tmp_path / f"{prefix}{index}.png"
        Image.fromarray(np.full((height, width, 3), 80, dtype=np.uint8)).save(path)
        # annotations at the same fractions as the model's landmarks, plus two more
        points = np.array([[0.25 * width, 0.25 * height], [0.75 * width, 0.25 * height], [0.5 * width, 0.75 * height]])
        records.append({"path": str(path), "points": points, "valid": np.ones(3, dtype=bool)})
    return FakeDataset(records)


def test_evaluate_landmarks_end_to_end_with_a_fake_model(tmp_path):
    train = _write_images(tmp_path, [(40, 40), (40, 40), (60, 50), (30, 70)], "train")
    test = _write_images(tmp_path, [(50, 50), (20, 30)], "test")
    figure = tmp_path / "figure.png"
    result = evaluate_landmarks(CornerModel(), train, test, figure=figure)
    assert result["mean_error"] == pytest.approx(0.0, abs=1e-4)
    assert result["num_landmarks"] == 3 and result["test_images"] == 2
    assert result["protocol"]["normalisation"] == "inter-ocular"
    assert figure.is_file()
    json.dumps(result)  # JSON-ready


def test_detect_landmarks_batches_by_image_size(tmp_path):
    images = [np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20, 3), np.uint8), np.zeros((30, 30, 3), np.uint8)]
    points, heatmaps = detect_landmarks(CornerModel(), images, batch_size=8)
    assert points.shape == (3, 3, 2) and len(heatmaps) == 3
    np.testing.assert_allclose(points[0, 0], [5.0, 2.5])
    np.testing.assert_allclose(points[2, 2], [15.0, 22.5])


def test_export_landmarks_writes_json_and_pictures(tmp_path):
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(path)
    summary = export_landmarks(CornerModel(), [path], tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert payload["num_landmarks"] == 3
    assert payload["images"][0]["points"][0] == [15.0, 10.0]
    assert payload["images"][0]["shape"] == [40, 60]
    assert len(summary["images"]) == 1 and (tmp_path / "out" / "overview.png").is_file()
    coco = json.loads((tmp_path / "out" / "landmarks.coco.json").read_text())
    assert coco["images"] == [{"id": 1, "file_name": "in.png", "height": 40, "width": 60}]
    assert coco["categories"][0]["keypoints"] == ["landmark0", "landmark1", "landmark2"]
    assert coco["annotations"][0]["keypoints"][:3] == [15.0, 10.0, 2]
    from corrmark.propagate import read_annotation

    points, visible, names = read_annotation(tmp_path / "out" / "landmarks.coco.json", path)  # reads back as input
    assert points.shape == (3, 2) and visible.all() and names == coco["categories"][0]["keypoints"]


def test_per_category_regression_fits_each_category_on_its_own():
    # category "a": discovered = annotations; category "b": discovered = 2 x annotations (a different linear map);
    # one regressor for both cannot be exact, one per category is
    train_a, train_b = faces(20, 6), faces(20, 7)
    test_a, test_b = faces(5, 8), faces(5, 9)
    train_discovered = np.concatenate([train_a, 2 * train_b])
    train_annotated = np.concatenate([train_a, train_b])
    test_discovered = np.concatenate([test_a, 2 * test_b])
    test_annotated = np.concatenate([test_a, test_b])
    categories_train, categories_test = ["a"] * 20 + ["b"] * 20, ["a"] * 5 + ["b"] * 5
    result = evaluate_landmark_points(train_discovered, train_annotated, test_discovered, test_annotated, "kp-bbox",
                                      train_categories=categories_train, test_categories=categories_test)
    assert result["mean_error"] == pytest.approx(0.0, abs=1e-8)
    assert set(result["per_category"]) == {"a", "b"}
    pooled = evaluate_landmark_points(train_discovered, train_annotated, test_discovered, test_annotated, "kp-bbox")
    assert pooled["mean_error"] > 1.0


def test_pfwillow_landmark_images_follow_the_image_split():
    from conftest import shared_path

    from corrmark.eval.landmark_images import pfwillow_landmark_images

    root = shared_path("pf-willow")
    train, test = pfwillow_landmark_images(root, "train"), pfwillow_landmark_images(root, "test")
    assert len(train) == 50 and len(test) == 50
    assert not {r["path"] for r in train._records} & {r["path"] for r in test._records}
    assert train[0]["points"].shape == (10, 2) and train[0]["category"]


def test_coco_landmark_images_reads_points_visibility_and_categories(tmp_path):
    from corrmark.eval import coco_landmark_images

    coco = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 3, "file_name": "c.jpg"}],
            "annotations": [{"image_id": 1, "category_id": 5, "keypoints": [1, 2, 2, 3, 4, 0]},
                            {"image_id": 2, "category_id": 6, "keypoints": [5, 6, 1, 7, 8, 2]}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 6, "name": "dog"}]}
    (tmp_path / "points.json").write_text(json.dumps(coco))
    records = coco_landmark_images(tmp_path / "points.json")
    assert len(records) == 2  # c.jpg has no annotation
    first, second = records[0], records[1]
    assert first["path"] == str(tmp_path / "a.jpg") and first["category"] == "cat" and second["category"] == "dog"
    np.testing.assert_array_equal(first["valid"], [True, False])
    assert first["points"][0].tolist() == [1, 2] and np.isnan(first["points"][1]).all()
    assert coco_landmark_images(tmp_path / "points.json", "elsewhere")[0]["path"] == os.path.join("elsewhere", "a.jpg")
    with pytest.raises(InvalidKeypointsError, match="not found"):
        coco_landmark_images(tmp_path / "missing.json")
    (tmp_path / "plain.json").write_text("[[1, 2]]")
    with pytest.raises(InvalidKeypointsError, match="COCO"):
        coco_landmark_images(tmp_path / "plain.json")


class BrightestPixel(LandmarkModel):
    """One landmark at the brightest pixel: follows any warp exactly (up to the pixel grid)."""

    name = "brightest"

    def detect(self, images):
        flat = images.sum(1).flatten(1).argmax(1)
        width = images.shape[-1]
        points = torch.stack([flat % width, flat // width], -1).double()[:, None]
        return torch.zeros(len(images), 1, 1, 1), points

    def describe(self):
        return {"name": self.name}


class FixedPoint(BrightestPixel):
    """One landmark at a fixed image position: ignores the image, so a warp moves it by the warp's displacement."""

    name = "fixed"

    def detect(self, images):
        return torch.zeros(len(images), 1, 1, 1), torch.full((len(images), 1, 2), 20.0, dtype=torch.float64)


def dot_images(count):
    images = []
    for index in range(count):
        image = np.zeros((48, 48, 3), np.uint8)
        image[18 + index % 10:21 + index % 10, 16 + index:19 + index] = 255
        images.append(image)
    return images


def test_equivariance_of_a_landmark_that_follows_the_image_is_small():
    from corrmark.eval.landmarks import landmark_equivariance

    follows = landmark_equivariance(BrightestPixel(), dot_images(12), size=48, seed=1)
    fixed = landmark_equivariance(FixedPoint(), dot_images(12), size=48, seed=1)
    assert follows["images"] == 12 and follows["compared"] == 1.0 and len(follows["per_landmark"]) == 1
    assert follows["median_error"] < 5.0  # a 3-pixel dot: within about two pixels of 48
    assert fixed["mean_error"] > 2 * follows["mean_error"]  # a point that ignores the image moves with the warp
    identity = landmark_equivariance(FixedPoint(), dot_images(4), size=48,
                                     warp={"rotation": 0, "scale": (1, 1), "aspect": 0, "shear": 0, "translation": 0,
                                           "tps_probability": 0})
    assert identity["mean_error"] < 1e-6  # no warp: nothing moves
