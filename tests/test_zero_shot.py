"""The zero-shot matcher on controlled inputs: identity, known shifts, mirror images, input forms and errors."""

import numpy as np
import pytest
from PIL import Image

from corrmark import load_matcher
from corrmark.errors import InvalidKeypointsError, UnknownNameError
from corrmark.io import read_image


@pytest.fixture(scope="module")
def dog(shared_data):
    path = next(iter(sorted((shared_data / "stanfordextra-sample" / "sample_imgs").rglob("*.jpg"))))
    image = read_image(path)
    return image[: 224, : 280].copy()


def test_image_matched_to_itself_transfers_points_in_place(nn_matcher, dog):
    points = np.array([[40.0, 50.0], [150.0, 100.0], [250.0, 200.0]])
    moved = nn_matcher.transfer_keypoints(dog, dog, points)
    assert moved.shape == (3, 2)
    # one DINOv2 cell spans 280 / 20 = 14 pixels; self-matches must land within one cell
    assert np.abs(moved - points).max() < 14


def test_shifted_crop_moves_points_by_the_shift(nn_matcher, dog):
    source, target = dog[:, :252], dog[:, 28:]  # target = source content moved 28 px to the left
    points = np.array([[100.0, 60.0], [150.0, 120.0], [200.0, 160.0]])
    moved = nn_matcher.transfer_keypoints(source, target, points)
    error = np.linalg.norm(moved - (points - [28, 0]), axis=1)
    assert np.median(error) < 14


def test_dense_mapping_shape_and_range(nn_matcher, dog):
    source, target = dog, dog[:200, :150]
    mapping = nn_matcher.estimate_mapping(source, target)
    assert mapping.shape == (200, 150, 2)
    assert np.isfinite(mapping).all()
    assert mapping[..., 0].min() >= -0.5 and mapping[..., 0].max() <= source.shape[1] - 0.5
    assert mapping[..., 1].min() >= -0.5 and mapping[..., 1].max() <= source.shape[0] - 0.5
    # target is a crop of the source at the same place: the mapping should be close to the identity
    ys, xs = np.mgrid[0:200, 0:150]
    error = np.hypot(mapping[..., 0] - xs, mapping[..., 1] - ys)
    assert np.median(error) < 14


def test_automatic_flip_recovers_a_mirrored_target(dog):
    matcher = load_matcher("nn", preset="dinov2-block8-soft", flip="auto")
    mirrored = np.ascontiguousarray(dog[:, ::-1])
    points = np.array([[60.0, 60.0], [140.0, 110.0], [220.0, 170.0]])
    moved = matcher.transfer_keypoints(dog, mirrored, points)
    expected = np.stack([dog.shape[1] - 1 - points[:, 0], points[:, 1]], axis=1)
    assert np.median(np.linalg.norm(moved - expected, axis=1)) < 14


def test_accepts_paths_pil_and_arrays(nn_matcher, dog, tmp_path):
    Image.fromarray(dog).save(tmp_path / "dog.png")
    points = np.array([[50.0, 60.0]])
    by_array = nn_matcher.transfer_keypoints(dog, dog, points)
    by_path = nn_matcher.transfer_keypoints(tmp_path / "dog.png", str(tmp_path / "dog.png"), points)
    by_pil = nn_matcher.transfer_keypoints(Image.open(tmp_path / "dog.png"), dog, points)
    np.testing.assert_allclose(by_array, by_path, atol=1e-4)
    np.testing.assert_allclose(by_array, by_pil, atol=1e-4)


def test_match_points_reports_similarity(nn_matcher, dog):
    points, similarity = nn_matcher.match_points(dog, dog, [[50.0, 60.0], [100, 100]])
    assert points.shape == (2, 2) and similarity.shape == (2,)
    assert (similarity > 0.5).all() and (similarity <= 1.0 + 1e-5).all()


def test_bad_keypoints_are_errors_not_clamped(nn_matcher, dog):
    with pytest.raises(InvalidKeypointsError, match="outside"):
        nn_matcher.transfer_keypoints(dog, dog, [[10.0, 10.0], [500.0, 10.0]])
    with pytest.raises(InvalidKeypointsError, match="NaN"):
        nn_matcher.transfer_keypoints(dog, dog, [[np.nan, 10.0]])


def test_empty_point_list(nn_matcher, dog):
    assert nn_matcher.transfer_keypoints(dog, dog, np.zeros((0, 2))).shape == (0, 2)
    assert nn_matcher.transfer_keypoints(dog, dog, []).shape == (0, 2)


def test_tensors_and_batches(nn_matcher, dog):
    import torch

    from corrmark.errors import CorrmarkError

    points = np.array([[50.0, 60.0], [120.0, 90.0]])
    single = nn_matcher.transfer_keypoints(dog, dog[:, ::-1], points)
    as_tensor = nn_matcher.transfer_keypoints(torch.from_numpy(dog).permute(2, 0, 1), dog[:, ::-1], points)
    np.testing.assert_allclose(as_tensor, single, atol=1e-4)
    # one source, two targets: a list of results, each what the single call gives
    batch = nn_matcher.transfer_keypoints(dog, [dog[:, ::-1], dog], [points, points[:1]])
    assert len(batch) == 2 and batch[1].shape == (1, 2)
    np.testing.assert_allclose(batch[0], single, atol=1e-6)
    mappings = nn_matcher.estimate_mapping([dog, dog[:100]], dog)
    assert [mapping.shape for mapping in mappings] == [dog.shape[:2] + (2,)] * 2
    with pytest.raises(CorrmarkError, match="one point list per pair"):
        nn_matcher.transfer_keypoints(dog, [dog, dog], points[:1])
    with pytest.raises(CorrmarkError, match="2 source and 3 target images"):
        nn_matcher.estimate_mapping([dog, dog], [dog, dog, dog])


def test_unknown_names_and_options():
    with pytest.raises(UnknownNameError, match="unknown matcher 'magic'"):
        load_matcher("magic")
    with pytest.raises(UnknownNameError, match="unknown nn-matcher option 'colour'"):
        load_matcher("nn", colour="red")
    with pytest.raises(UnknownNameError, match="no_such_net"):
        load_matcher("nn", backbone="no_such_net")


def test_describe_records_settings(nn_matcher):
    settings = nn_matcher.describe()
    assert settings["name"] == "nn" and settings["backbone"] == "dinov2_vits14" and settings["layers"] == [8]
