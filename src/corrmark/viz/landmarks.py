"""The landmark figure: images with their discovered landmarks and, below, the regressed annotated points."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import CorrmarkError
from .draw import colour, draw_points, draw_points_vs_truth, save_image, with_legend


def landmark_figure(images: Sequence[np.ndarray], points, path, regressed=None, truth=None, columns: int = 8,
                    tile: int = 160):
    """A grid of images with their discovered landmarks (``corrmark.viz.draw_points``); with ``regressed`` a second
    row per image row shows the regressed annotated landmarks (dots), with ``truth`` beside the ground truth (rings,
    a white line for the error). A legend strip says what the rows and colours mean. Saves to ``path``: a ``.jpg``
    path keeps the file small (JPEG, ``save_image``), a ``.png`` one is written with 256 colours."""
    tiles = []
    for index, image in enumerate(images):
        scale = tile / max(image.shape[:2])
        radius = max(2.0, max(image.shape[:2]) / 60)
        drawn = [draw_points(image, np.asarray(points[index]), radius=radius)]
        if regressed is not None:
            drawn.append(draw_points_vs_truth(image, regressed[index], truth[index], radius) if truth is not None
                         else draw_points(image, np.asarray(regressed[index]), radius=radius))
        tiles.append([picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
                      for picture in drawn])
    if not tiles:
        raise CorrmarkError("no images to draw")
    columns = max(1, min(int(columns), len(tiles)))
    per_row = len(tiles[0])
    grid_rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * tile, grid_rows * per_row * tile), (255, 255, 255))
    for index, drawn in enumerate(tiles):
        row, column = divmod(index, columns)
        for part, picture in enumerate(drawn):
            canvas.paste(picture, (column * tile, (row * per_row + part) * tile))
    count = np.asarray(points[0]).shape[0]
    entries = [(None, "top: discovered landmarks, colour = landmark index")]
    entries += [(colour(k), str(k)) for k in range(count)]
    if regressed is not None:
        rows = "regressed annotated points (dots)" + (" and ground truth (rings, white line = error)"
                                                      if truth is not None else "")
        entries.append((None, f"second row: {rows}, colour = annotated point index"))
    return save_image(with_legend(canvas, entries), path, photo=True)
