"""The landmark evaluation figure shows what its legend says: discovered landmarks on top, regressed points (dots)
against the ground truth (rings of the same colour, a white error line) below, and a legend strip under the grid."""

from __future__ import annotations

import numpy as np
from PIL import Image

from corrmark.viz.draw import colour
from corrmark.viz.landmarks import landmark_figure

TILE = 300  # images of 300 px drawn at scale 1: rings of radius 5 px
GREY = 90
DISCOVERED = np.array([[60.0, 60.0], [150.0, 150.0], [240.0, 90.0]])
REGRESSED = np.array([[90.0, 180.0], [210.0, 120.0]])
TRUTH = np.array([[90.0, 240.0], [210.0, 45.0]])  # straight below / above: vertical error lines


def _figure(tmp_path, truth=True):
    images = [np.full((TILE, TILE, 3), GREY, np.uint8) for _ in range(2)]
    path = landmark_figure(images, [DISCOVERED] * 2, tmp_path / "figure.png", regressed=[REGRESSED] * 2,
                           truth=[TRUTH] * 2 if truth else None, columns=2, tile=TILE)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _near(pixel, rgb, tolerance=40) -> bool:
    return bool(np.abs(np.asarray(pixel) - np.asarray(rgb)).max() <= tolerance)


def test_rows_points_rings_lines_and_legend(tmp_path):
    figure = _figure(tmp_path)
    assert figure.shape[1] >= 2 * TILE and figure.shape[0] > 2 * TILE, "two tiles per row, two rows, then a legend"
    assert _near(figure[150, 150], colour(1)), "discovered landmark 1 drawn at its place in the top row"
    second_row = figure[TILE:2 * TILE, :TILE]
    for index, ((px, py), (tx, ty)) in enumerate(zip(REGRESSED.astype(int), TRUTH.astype(int))):
        assert _near(second_row[py, px], colour(index)), "regressed point = a dot of its colour"
        across_ring = [second_row[ty, tx + offset] for offset in range(-8, 9)]
        assert any(_near(pixel, colour(index)) for pixel in across_ring), "ground truth = a ring of that colour"
        assert _near(second_row[ty, tx - 2], (GREY,) * 3, 10), "a ring is hollow"
        assert _near(second_row[(py + ty) // 2, px], (255, 255, 255), 30), "a white line joins prediction and truth"
    legend = figure[2 * TILE:]
    assert legend.mean() > 200 and (legend.min(axis=2) < 100).sum() > 50, "a white strip with text in it"


def test_without_truth_there_are_no_error_lines(tmp_path):
    second_row = _figure(tmp_path, truth=False)[TILE:2 * TILE, :TILE]
    for (px, py), (_, ty) in zip(REGRESSED.astype(int), TRUTH.astype(int)):
        assert _near(second_row[(py + ty) // 2, px], (GREY,) * 3, 10), "no error line without ground truth"
