"""Pictures of a keypoint propagation: the annotated image beside a target with its points coloured by confidence.

Plain data in: annotated images are any objects with ``image`` (H, W, 3), ``points`` (N, 2) and ``visible`` (N,)
(``corrmark.propagate.AnnotatedImage``), a target's points come from its COCO annotation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..formats import coco_points
from .draw import draw_points

FIGURE_HEIGHT = 320


def confidence_colour(confidence: float) -> tuple[int, int, int]:
    """Red (0) -> yellow (0.5) -> green (1)."""
    red, yellow, green = np.array([220, 40, 40]), np.array([240, 200, 40]), np.array([40, 180, 70])
    c = float(np.clip(confidence, 0, 1))
    colour = red + (yellow - red) * (c / 0.5) if c < 0.5 else yellow + (green - yellow) * ((c - 0.5) / 0.5)
    return tuple(int(v) for v in colour.round())


def draw_propagation(sources: Sequence, annotation: dict, target: np.ndarray) -> Image.Image:
    """The annotated image that gave most points (dots in keypoint colours) beside the target (dots coloured by
    confidence, numbered by keypoint), both scaled to FIGURE_HEIGHT."""
    points, scores = coco_points(annotation)
    used = [i for i in annotation["keypoint_sources"] if i >= 0]
    source = sources[max(set(used), key=used.count) if used else 0]
    left = _scaled(draw_points(source.image, np.where(source.visible[:, None], source.points, np.nan),
                               labels=range(len(source.points))))
    right = _scaled(_draw_confident_points(target, points, scores))
    canvas = Image.new("RGB", (left.width + right.width + 8, FIGURE_HEIGHT), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def _draw_confident_points(image: np.ndarray, points: np.ndarray, scores: np.ndarray) -> Image.Image:
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = max(3.0, max(image.shape[:2]) / 80)
    for index, ((x, y), score) in enumerate(zip(points, scores)):
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=confidence_colour(score),
                         outline=(255, 255, 255), width=1)
            draw.text((x + radius + 1, y - radius), str(index), fill=(255, 255, 255))
    return canvas


def _scaled(image: Image.Image) -> Image.Image:
    width = max(1, round(image.width * FIGURE_HEIGHT / image.height))
    return image.resize((width, FIGURE_HEIGHT), Image.BILINEAR)
