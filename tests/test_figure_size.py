"""Figures stay small: a typical landmark figure (16 photos with points, ``corrmark.viz.landmark_figure``) is under
200 KB as JPEG, and a PNG figure of photos is written with fewer colours than a lossless one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from corrmark.io import read_image
from corrmark.viz import save_image
from corrmark.viz.landmarks import landmark_figure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
LIMIT_BYTES = 200 * 1024


def photo_figure(path: Path) -> Path:
    photos = [read_image(image) for image in sorted(EXAMPLES.glob("*.jpg"))]
    images = (photos * 2)[:16]
    rng = np.random.default_rng(0)
    points = [rng.uniform(0.2, 0.8, (10, 2)) * image.shape[1::-1] for image in images]
    regressed = [rng.uniform(0.2, 0.8, (5, 2)) * image.shape[1::-1] for image in images]
    return landmark_figure(images, points, path, regressed=regressed, truth=regressed)


def test_a_jpeg_landmark_figure_is_under_200_kb(tmp_path):
    path = photo_figure(tmp_path / "figure.jpg")
    with Image.open(path) as picture:
        assert picture.format == "JPEG" and picture.width >= 1000, "16 tiles of 160 px in 8 columns"
    assert path.stat().st_size < LIMIT_BYTES, f"{path.stat().st_size / 1024:.0f} KB"


def test_a_png_photo_figure_uses_a_palette_and_is_smaller_than_lossless(tmp_path):
    path = photo_figure(tmp_path / "figure.png")
    with Image.open(photo_figure(tmp_path / "figure.tif")) as exact:  # the same figure, every pixel kept
        lossless = save_image(exact.convert("RGB"), tmp_path / "lossless.png")
    with Image.open(path) as picture, Image.open(lossless) as plain:
        assert picture.mode == "P" and plain.mode == "RGB" and picture.size == plain.size
    assert path.stat().st_size < 0.6 * lossless.stat().st_size


def test_plain_pictures_stay_lossless(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    with Image.open(save_image(array, tmp_path / "a.png")) as picture:
        assert np.array_equal(np.asarray(picture), array)
