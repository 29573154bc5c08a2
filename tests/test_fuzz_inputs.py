"""Generated bad and odd inputs (issue 18): every case must end in a clear error (a CorrmarkError subclass with a
one-line message) or a correct result; anything else (a raw exception, or an answer that is silently wrong) is a
defect. The cases are small and run in seconds. ``test_fuzz_summary`` counts them and asserts zero defects.

Categories: points files of every accepted format, keypoints given to the API, image arrays and tensors, image files
(modes, depths, EXIF, truncation, sizes, paths), matcher options, and checkpoints.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from corrmark.errors import CheckpointError, CorrmarkError, ImageReadError, InvalidKeypointsError
from corrmark.formats import read_annotation
from corrmark.io import check_keypoints, read_image, read_points_file
from corrmark.models.zero_shot import NNMatcherConfig, check_nn_config
from corrmark.train.checkpoint import read_checkpoint

OUTCOMES: dict[str, int] = {"clear error": 0, "correct": 0}


def outcome(call, expected=None, error=CorrmarkError, equal=None):
    """Run ``call``: a CorrmarkError of type ``error`` with one line, or a result equal to ``expected``. Returns what
    happened; a raw exception or a different result fails the test (a defect)."""
    try:
        result = call()
    except CorrmarkError as caught:
        assert isinstance(caught, error), f"{type(caught).__name__} where {error.__name__} was expected: {caught}"
        assert "\n" not in str(caught) and str(caught), f"not one clear line: {caught!r}"
        assert expected is None, f"expected a result, got the error {caught}"
        OUTCOMES["clear error"] += 1
        return "clear error"
    assert expected is not None, f"expected a clear error, got the result {result!r}"
    (equal or np.testing.assert_allclose)(result, expected)
    OUTCOMES["correct"] += 1
    return "correct"


# --- points files --------------------------------------------------------------------------------------------------

GOOD_JSON = [
    ("[[1, 2], [3, 4]]", [[1, 2], [3, 4]]),
    ('{"points": [[1.5, 2.5]]}', [[1.5, 2.5]]),
    ('{"keypoints": [[0, 0], [5, 5]]}', [[0, 0], [5, 5]]),
    ('{"points": [[1, 2]], "names": ["nose"]}', [[1, 2]]),
    ("[]", np.zeros((0, 2))),
    ('{"points": []}', np.zeros((0, 2))),
]
BAD_JSON = ["{}", "null", "5", '"text"', "[10, 20, 30]", "[[10, 20, 30, 40]]", "[[[1, 2]], [[3, 4]]]", "[[1], [2]]",
            '[[1, "a"]]', "[[true, false]]", "[[1, 2], [3]]", '{"points": 5}', '{"points": [[1, 2]], "names": ["a", "b"]}',
            '{"points": [[1, 2]], "names": "nose"}', "[[NaN, 1]]", "[[Infinity, 1]]", "[[1e400, 2]]", "{not json",
            "", "[[1, 2],]", '{"points": [[1, null]]}', "[[[1, 2, 3]]]", '[{"x": 1, "y": 2}]', "[[1, 2, 3]]"]
GOOD_TEXT = [("1,2\n3,4\n", [[1, 2], [3, 4]]), ("1 2\n", [[1, 2]]), ("x,y\n1,2\n", [[1, 2]]),
             ("# comment\n1,2 # tail\n\n", [[1, 2]]), ("", np.zeros((0, 2))), ("-0.5, 7.25\n", [[-0.5, 7.25]])]
BAD_TEXT = ["10\n20\n", "1,2,3\n", "a,b\n", "1,2\n3\n", "1;2\n", "1,2\nx,y\n", "nan,1\n", "inf,2\n", "1,,2\n",
            "0x10,2\n"]


@pytest.mark.parametrize("text,expected", GOOD_JSON + [(text, None) for text in BAD_JSON])
def test_points_json(tmp_path, text, expected):
    path = tmp_path / "points.json"
    path.write_text(text)
    outcome(lambda: read_points_file(path), expected, InvalidKeypointsError)


@pytest.mark.parametrize("text,expected", GOOD_TEXT + [(text, None) for text in BAD_TEXT])
@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_points_text(tmp_path, text, expected, suffix):
    path = tmp_path / f"points{suffix}"
    path.write_text(text)
    outcome(lambda: read_points_file(path), expected, InvalidKeypointsError)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary\x00", b"\x89PNG\r\n\x1a\n\x00\x00", bytes(range(256))])
@pytest.mark.parametrize("suffix", [".txt", ".json", ".csv"])
def test_binary_points_files(tmp_path, content, suffix):
    path = tmp_path / f"points{suffix}"
    path.write_bytes(content)
    outcome(lambda: read_points_file(path), None, InvalidKeypointsError)
    outcome(lambda: read_annotation(path, "image.jpg"), None, InvalidKeypointsError)


def coco(keypoints=(1, 2, 2, 3, 4, 1), **overrides):
    document = {"images": [{"id": 1, "file_name": "image.jpg"}],
                "annotations": [{"image_id": 1, "category_id": 1,
                                 "keypoints": list(keypoints) if isinstance(keypoints, tuple) else keypoints}],
                "categories": [{"id": 1, "name": "dog", "keypoints": ["a", "b"]}]}
    document.update(overrides)
    return document


GOOD_ANNOTATIONS = [
    (coco(), ([[1, 2], [3, 4]], [True, True])),
    (coco((1, 2, 0, 3, 4, 2)), ([[1, 2], [3, 4]], [False, True])),
    ([[1, 2, 2], [3, 4, 0]], ([[1, 2], [3, 4]], [True, False])),
    ([[1, 2], [3, 4]], ([[1, 2], [3, 4]], [True, True])),
    (coco(images=[]), ([[1, 2], [3, 4]], [True, True])),
]
BAD_ANNOTATIONS = [
    coco((1, 2, 2, 3)), coco((1, 2, 2, 3, 4)), coco(("a", 2, 2, 3, 4, 1)), coco(5), coco(None),
    coco(annotations="all"), coco(annotations=[1, 2]), coco(images={"id": 1}), coco(images=[1]),
    coco(annotations=[]), coco((1, 2, 2)), coco(categories="dog"),
    {"annotations": [{"image_id": 9, "keypoints": [1, 2, 2]}], "images": [{"id": 1, "file_name": "a.jpg"},
                                                                          {"id": 2, "file_name": "b.jpg"}]},
    [[1, 2, 2], [3, 4]], [[1, 2, 2, 9]], [[1, 2, "v"]], {"annotations": None},
]


@pytest.mark.parametrize("document,expected", GOOD_ANNOTATIONS + [(document, None) for document in BAD_ANNOTATIONS])
def test_annotation_documents(tmp_path, document, expected):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(document))

    def compare(result, wanted):
        points, visible, _ = result
        np.testing.assert_allclose(points, wanted[0])
        assert visible.tolist() == wanted[1]

    outcome(lambda: read_annotation(path, "image.jpg"), expected, InvalidKeypointsError, equal=compare)


# --- keypoints in the API ------------------------------------------------------------------------------------------

GOOD_POINTS = [([[1, 2]], [[1, 2]]), (np.array([[1.5, 2.5]]), [[1.5, 2.5]]), ([], np.zeros((0, 2))),
               (np.zeros((0, 2)), np.zeros((0, 2))), (torch.tensor([[3.0, 4.0]]), [[3, 4]]), (((1, 2),), [[1, 2]]),
               (np.array([[1, 2]], dtype=np.int64), [[1, 2]]), ([[0, 0], [9, 9]], [[0, 0], [9, 9]])]
BAD_POINTS = ["1,2", b"12", {"x": 1}, None, [[1, 2], [3]], [[1, "a"]], [[1 + 2j, 3]], np.array([[1 + 1j, 0]]),
              [[1, 2, 3]], [1, 2], [[[1, 2]]], [[np.nan, 1]], [[np.inf, 1]], [[True, False]], [[10, 20]],
              [[-1, 0]], [[0, -0.6]], [[9.6, 0]], object(), [["1", "2"]]]


@pytest.mark.parametrize("points,expected", GOOD_POINTS + [(points, None) for points in BAD_POINTS])
def test_api_keypoints(points, expected):
    outcome(lambda: check_keypoints(points, (10, 10)), expected, InvalidKeypointsError)


# --- images: arrays, tensors, files --------------------------------------------------------------------------------

RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
GOOD_ARRAYS = [(RGB, RGB), (RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)), (RGB[..., :1], np.repeat(RGB[..., :1], 3, 2)),
               (np.concatenate([RGB, RGB[..., :1]], axis=2), RGB), (RGB / 255.0, RGB), (RGB.astype(np.float32) / 255, RGB),
               (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)),
               (np.zeros((1, 5000), np.uint8), np.zeros((1, 5000, 3), np.uint8)),
               (torch.from_numpy(RGB).permute(2, 0, 1), RGB), (torch.from_numpy(RGB).permute(2, 0, 1).float() / 255, RGB)]
BAD_ARRAYS = [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 5, 2), np.uint8), np.zeros((4, 5, 3, 1), np.uint8),
              np.zeros(5, np.uint8), RGB.astype(np.float32), -(RGB / 255.0), np.full((2, 2, 3), np.nan),
              RGB.astype(np.int64), RGB.astype(bool), RGB.astype(np.complex64), "not/an/image.png", 42, None,
              [[1, 2], [3, 4]], torch.zeros(3, 3, 3), torch.zeros(2, 4, 5, 3)]


@pytest.mark.parametrize("image,expected", GOOD_ARRAYS + [(image, None) for image in BAD_ARRAYS])
def test_image_objects(image, expected):
    outcome(lambda: read_image(image), expected, ImageReadError, equal=np.testing.assert_array_equal)


def png_bytes(array, mode=None, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def grey_ramp(dtype, peak):
    return (np.linspace(0, 1, 16).reshape(4, 4) * peak).astype(dtype)


FILES = {
    "rgb.png": (png_bytes(RGB), RGB),
    "grey.png": (png_bytes(RGB[..., 0]), np.repeat(RGB[..., :1], 3, axis=2)),
    "rgba.png": (png_bytes(np.concatenate([RGB, RGB[..., :1]], axis=2)), RGB),
    "16bit.png": (png_bytes(grey_ramp(np.uint16, 65535)), np.repeat(np.round(np.linspace(0, 255, 16)).reshape(4, 4, 1),
                                                                    3, axis=2).astype(np.uint8)),
    "float.tif": (png_bytes(grey_ramp(np.float32, 1.0), format="TIFF"),
                  np.repeat(np.round(np.linspace(0, 255, 16)).reshape(4, 4, 1), 3, axis=2).astype(np.uint8)),
    "palette.gif": (png_bytes(RGB[..., 0], format="GIF"), None),
    "bmp.bmp": (png_bytes(RGB, format="BMP"), RGB),
    "empty.png": (b"", None), "text.png": (b"hello", None), "truncated.png": (png_bytes(RGB)[:40], None),
    "truncated.jpg": (png_bytes(RGB, format="JPEG")[:60], None), "html.jpg": (b"<html></html>", None),
    "zeros.png": (bytes(100), None), "wrong-ext.jpg": (png_bytes(RGB), RGB),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_image_files(tmp_path, name):
    content, expected = FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    if name == "palette.gif":  # palette colours: compare with Pillow's own RGB conversion
        expected = np.asarray(Image.open(path).convert("RGB"))
    outcome(lambda: read_image(path), expected, ImageReadError, equal=np.testing.assert_array_equal)
    if expected is not None:
        outcome(lambda: read_image(Image.open(path)), expected, ImageReadError, equal=np.testing.assert_array_equal)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (7, 1), (3, 300), (300, 3)])
@pytest.mark.parametrize("kind", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_odd_sizes_depths_and_channels(height, width, kind, channels):
    values = np.random.default_rng(height * 31 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = values.copy() if channels in (3, 4) else np.repeat(values[..., :1], 3, axis=2)
    array = values if channels in (3, 4) else values[..., 0]
    if channels == 1:
        array = array[..., None]
    if channels == 4:
        array = np.concatenate([array, np.full((height, width, 1), 7, np.uint8)], axis=2)
    if kind != "uint8":
        array = (array / 255.0).astype(kind)
    outcome(lambda: read_image(array), expected, ImageReadError, equal=np.testing.assert_array_equal)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_pil_modes(mode):
    image = Image.new(mode, (6, 4))
    outcome(lambda: read_image(image).shape, (4, 6, 3), equal=lambda a, b: a == b or pytest.fail(f"{a}"))


@pytest.mark.parametrize("orientation,shape", [(1, (4, 6)), (3, (4, 6)), (6, (6, 4)), (8, (6, 4)), (2, (4, 6)),
                                               (5, (6, 4))])
def test_exif_orientations(tmp_path, orientation, shape):
    image = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    outcome(lambda: read_image(path).shape[:2], shape, equal=lambda a, b: a == b or pytest.fail(f"{a} != {b}"))


@pytest.mark.parametrize("path", ["", "missing.png", "a" * 300 + ".png", "dir/", "\x00.png"])
def test_image_paths(tmp_path, path):
    (tmp_path / "dir").mkdir(exist_ok=True)
    target = tmp_path / path if path else tmp_path
    outcome(lambda: read_image(str(target) if "\x00" not in path else path), None, ImageReadError)


def test_closed_and_lazy_pil_images(tmp_path):
    path = tmp_path / "truncated.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible: cut mid-data
    path.write_bytes(png_bytes(noise)[:2000])
    outcome(lambda: read_image(Image.open(path)), None, ImageReadError)  # lazy: fails on decoding
    image = Image.open(tmp_path.parent / tmp_path.name / "truncated.png")
    image.close()
    outcome(lambda: read_image(image), None, ImageReadError)


def test_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("L", (300, 200)).save(path)
    monkeypatch.setenv("CORRMARK_MAX_PIXELS", "50000")
    outcome(lambda: read_image(path), None, ImageReadError)
    monkeypatch.setenv("CORRMARK_MAX_PIXELS", "60000")
    outcome(lambda: read_image(path).shape, (200, 300, 3), equal=lambda a, b: a == b or pytest.fail(f"{a}"))
    monkeypatch.setenv("CORRMARK_MAX_PIXELS", "lots")
    outcome(lambda: read_image(path), None, ImageReadError)


# --- matcher options -----------------------------------------------------------------------------------------------

BAD_OPTIONS = [("image_size", 0), ("image_size", -5), ("image_size", "abc"), ("image_size", 33.5), ("image_size", True),
               ("image_size", 100000), ("sigma", math.nan), ("sigma", -1), ("sigma", "4"), ("beta", -1), ("beta", 0),
               ("beta", math.inf), ("mutual", "yes"), ("keep_aspect", 1), ("aspect_rule", "short-side"),
               ("flip", "maybe"), ("backbone", ""), ("backbone", None)]
GOOD_OPTIONS = [("image_size", 224), ("sigma", 0), ("sigma", 2.5), ("beta", 20), ("mutual", False),
                ("aspect_rule", "long-side"), ("flip", "auto"), ("image_size", np.int64(112))]


@pytest.mark.parametrize("name,value", BAD_OPTIONS + GOOD_OPTIONS)
def test_matcher_options(name, value):
    config = NNMatcherConfig(**{name: value})
    good = (name, value) in GOOD_OPTIONS
    outcome(lambda: check_nn_config(config) or "valid", "valid" if good else None,
            equal=lambda a, b: a == b or pytest.fail(a))


# --- checkpoints ---------------------------------------------------------------------------------------------------

def state(value=1.0):
    return {"layer.weight": torch.full((2, 2), value)}


CHECKPOINTS = [
    ({"model": state(), "config": {"method": "sfnet", "model": {}}}, "correct"),
    ({"model": state(), "config": {"model": {}}}, "correct"),
    ({"model": state()}, "error"),
    ({"model": state(), "config": "str"}, "error"),
    ({"model": state(), "config": {"method": "jlad", "model": {}}}, "error"),
    ({"model": state(math.nan), "config": {"method": "sfnet"}}, "error"),
    ({"model": state(math.inf), "config": {"method": "sfnet"}}, "error"),
    ({"config": {"method": "sfnet"}}, "error"),
    ([1, 2, 3], "error"),
    ("just text", "error"),
    ({"model": state(), "sfnet_config": {}}, "correct"),
]


@pytest.mark.parametrize("payload,kind", CHECKPOINTS)
def test_checkpoints(tmp_path, payload, kind):
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    outcome(lambda: sorted(read_checkpoint(path, method="sfnet")), sorted(payload) if kind == "correct" else None,
            CheckpointError, equal=lambda a, b: a == b or pytest.fail(f"{a}"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", bytes(range(200)), b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint_files(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    outcome(lambda: read_checkpoint(path, method="sfnet"), None, CheckpointError)


def test_fuzz_summary():
    """Runs last in this file: the counts of the cases above (every case also asserted on its own)."""
    total = sum(OUTCOMES.values())
    print(f"fuzz cases: {total} ({OUTCOMES['clear error']} clear errors, {OUTCOMES['correct']} correct, 0 defects)")
    assert total >= 300 or total == 0  # 0 when this test is run alone (-k)
