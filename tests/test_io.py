"""Reading images and keypoints: every accepted form, and one clear error for each kind of bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from corrmark.errors import ImageReadError, InvalidKeypointsError
from corrmark.io import check_keypoints, points_inside, read_image, read_points_file, write_json_atomic


@pytest.fixture
def rgb_array():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)


def test_reads_path_pil_and_array_identically(tmp_path, rgb_array):
    path = tmp_path / "image.png"
    Image.fromarray(rgb_array).save(path)
    for image in (path, str(path), Image.open(path), rgb_array):
        result = read_image(image)
        assert result.dtype == np.uint8 and result.shape == (12, 20, 3)
        np.testing.assert_array_equal(result, rgb_array)


def test_grayscale_and_rgba_become_rgb(tmp_path, rgb_array):
    gray = rgb_array[:, :, 0]
    np.testing.assert_array_equal(read_image(gray), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.concatenate([rgb_array, np.full((12, 20, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(rgba), rgb_array)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (12, 20, 3)


def test_float_arrays_in_unit_range(rgb_array):
    np.testing.assert_array_equal(read_image(rgb_array / 255.0), rgb_array)
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        read_image(rgb_array.astype(np.float32))


@pytest.mark.parametrize("shape", [(4, 5, 2), (4,), (0, 5, 3), (2, 3, 4, 5)])
def test_wrong_array_shapes(shape):
    with pytest.raises(ImageReadError, match="shape"):
        read_image(np.zeros(shape, np.uint8))


def test_missing_empty_truncated_and_non_image_files(tmp_path, rgb_array):
    with pytest.raises(ImageReadError, match="not found: .*missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty: .*empty.jpg"):
        read_image(tmp_path / "empty.jpg")
    Image.fromarray(np.repeat(np.repeat(rgb_array, 20, 0), 20, 1)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated.jpg"):
        read_image(tmp_path / "truncated.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot decode image .*notes.png"):
        read_image(tmp_path / "notes.png")


def test_unsupported_object():
    with pytest.raises(ImageReadError, match="dict"):
        read_image({"a": 1})


def test_keypoint_checks_name_the_offending_points():
    points = check_keypoints([[0, 0], [19.5, 11.5]], (12, 20))
    assert points.dtype == np.float64
    with pytest.raises(InvalidKeypointsError, match=r"#1 \(nan, 2\)"):
        check_keypoints([[1, 1], [np.nan, 2]])
    with pytest.raises(InvalidKeypointsError, match=r"#0 \(25, 3\) lie outside the 20x12 image"):
        check_keypoints([[25, 3], [1, 1]], (12, 20))
    with pytest.raises(InvalidKeypointsError, match=r"shape \(N, 2\)"):
        check_keypoints([1, 2, 3])


def test_points_inside_uses_pixel_edges():
    points = np.array([[-0.5, 0], [-0.51, 0], [19.5, 11.5], [19.6, 0], [np.nan, 1]])
    np.testing.assert_array_equal(points_inside(points, (12, 20)), [True, False, True, False, False])


def test_points_files(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"points": [[1, 2], [3.5, 4]]}))
    np.testing.assert_array_equal(read_points_file(tmp_path / "p.json"), [[1, 2], [3.5, 4]])
    (tmp_path / "p.csv").write_text("1,2\n3.5, 4\n")
    np.testing.assert_array_equal(read_points_file(tmp_path / "p.csv"), [[1, 2], [3.5, 4]])
    (tmp_path / "bad.csv").write_text("1,x\n")
    with pytest.raises(InvalidKeypointsError, match="bad.csv"):
        read_points_file(tmp_path / "bad.csv")
    with pytest.raises(InvalidKeypointsError, match="not found"):
        read_points_file(tmp_path / "nope.json")


def test_atomic_json_leaves_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "sub" / "out.json", {"a": 1})
    assert json.loads((tmp_path / "sub" / "out.json").read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.json"]


def test_exif_orientation_is_applied_like_a_viewer(tmp_path):
    """A phone photo stored landscape with orientation 6 (turn 90 degrees clockwise to view) reads upright."""
    stored = np.zeros((20, 30, 3), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0)  # stored top-left: after the clockwise turn it is the viewer's top-right
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    image.save(path, exif=exif, quality=100, subsampling=0)
    upright = read_image(path)
    assert upright.shape == (30, 20, 3)
    assert upright[0, -1, 0] > 200 and upright[0, -1, 1] < 60 and upright[0, 0, 0] < 60
    from corrmark.data.base import image_shape

    assert image_shape(path) == (30, 20)  # the header size a dataset checks points against, upright too
    from corrmark.io import check_keypoints

    check_keypoints([[19, 29]], upright.shape[:2])  # a point in viewer orientation is inside


@pytest.mark.parametrize("mode,dtype,peak", [("I;16", np.uint16, 65535), ("I", np.int32, 65535),
                                             ("F", np.float32, 1.0)])
def test_high_bit_depth_files_are_scaled_to_8_bits(tmp_path, mode, dtype, peak):
    ramp = (np.linspace(0, 1, 64).reshape(8, 8) * peak).astype(dtype)
    image = Image.fromarray(ramp)  # uint16 -> "I;16", int32 -> "I", float32 -> "F"
    assert image.mode == mode
    path = tmp_path / ("ramp.png" if mode == "I;16" else "ramp.tif")
    image.save(path)
    array = read_image(path)
    assert array.shape == (8, 8, 3) and array.dtype == np.uint8
    expected = np.round(np.linspace(0, 1, 64).reshape(8, 8) * 255)
    assert np.abs(array[..., 0].astype(float) - expected).max() <= 1  # not all white, not all black


def test_float_tiff_above_one_is_scaled_by_its_maximum(tmp_path):
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.full((4, 4), 4.0, dtype=np.float32).clip(0, None) * np.eye(4, dtype=np.float32), mode="F").save(path)
    array = read_image(path)
    assert array[0, 0, 0] == 255 and array[0, 1, 0] == 0


def test_torch_tensors_read_like_arrays(rgb_array):
    import torch

    chw = torch.from_numpy(rgb_array).permute(2, 0, 1)
    assert np.array_equal(read_image(chw), rgb_array)
    assert np.array_equal(read_image(chw.float() / 255), rgb_array)
    assert read_image(chw[:1]).shape == rgb_array.shape  # one channel -> grey RGB
    with pytest.raises(ImageReadError):
        read_image(chw.float())  # floats beyond [0, 1]
