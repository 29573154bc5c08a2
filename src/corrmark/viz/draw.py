"""Pictures a person would rather look at than read: matches side by side, warped images, overlays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..ops import warp_backward

JPEG_SUFFIXES = (".jpg", ".jpeg")
JPEG_QUALITY = 82  # progressive: a landmark figure of 16 photos ~0.18 MB, ~1.2 MB as a lossless PNG
PHOTO_PNG_COLOURS = 256

# Distinct colours for keypoint indices (cycled); chosen to stay visible on photos.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def warp_image(source: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Backward-warp ``source`` (H_s, W_s, 3) uint8 onto the target grid with a (H_t, W_t, 2) mapping."""
    image = torch.from_numpy(source).permute(2, 0, 1)[None].float()
    field = torch.from_numpy(np.asarray(mapping, dtype=np.float32))[None]  # matchers give float32: no copy
    warped, _ = warp_backward(image, field)
    return warped[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def blend(first: np.ndarray, second: np.ndarray, weight: float = 0.5) -> np.ndarray:
    return (first.astype(np.float32) * (1 - weight) + second.astype(np.float32) * weight).round().astype(np.uint8)


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float, fill, outline=(255, 255, 255)) -> None:
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=outline, width=1)


def draw_points(image: np.ndarray, points: np.ndarray, radius: float | None = None, labels=None) -> Image.Image:
    """The image with coloured dots (colour = keypoint index); NaN points are skipped."""
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = radius or max(2.0, max(image.shape[:2]) / 100)
    for index, (x, y) in enumerate(np.asarray(points, dtype=float)):
        if np.isfinite(x) and np.isfinite(y):
            _dot(draw, x, y, radius, colour(index))
            if labels is not None:
                draw.text((x + radius + 1, y - radius), str(labels[index]), fill=colour(index))
    return canvas


def stroke_width(canvas_width: int, shown_width: int = 560) -> int:
    """Line width (px) that stays at least 1.5 px wide when the picture is shown ``shown_width`` px wide."""
    return max(1, int(np.ceil(1.5 * canvas_width / shown_width)))


def draw_matches(source: np.ndarray, target: np.ndarray, source_points, predicted_points,
                 truth_points=None) -> Image.Image:
    """Source and target side by side; lines join each source point to its predicted target point.

    With ground truth, a ring marks the true target point and a white line joins prediction to truth, so the
    error is visible at a glance. Lines and dots scale with the picture, so they stay visible when a report shows
    it at 560 px wide.
    """
    height = max(source.shape[0], target.shape[0])
    offset = source.shape[1]
    canvas = Image.new("RGB", (source.shape[1] + target.shape[1], height), (255, 255, 255))
    canvas.paste(Image.fromarray(source), (0, 0))
    canvas.paste(Image.fromarray(target), (offset, 0))
    draw = ImageDraw.Draw(canvas)
    width = stroke_width(canvas.width)
    radius = max(2.0 * width, height / 90)
    source_points = np.asarray(source_points, dtype=float)
    predicted_points = np.asarray(predicted_points, dtype=float)
    for index, ((sx, sy), (px, py)) in enumerate(zip(source_points, predicted_points)):
        if not np.all(np.isfinite([sx, sy, px, py])):
            continue
        draw.line([(sx, sy), (px + offset, py)], fill=colour(index), width=width)
        _dot(draw, sx, sy, radius, colour(index))
        _dot(draw, px + offset, py, radius, colour(index))
        if truth_points is not None and np.all(np.isfinite(truth_points[index])):
            tx, ty = truth_points[index]
            draw.line([(px + offset, py), (tx + offset, ty)], fill=(255, 255, 255), width=width)
            draw.ellipse([tx + offset - radius, ty - radius, tx + offset + radius, ty + radius],
                         outline=colour(index), width=2 * width)
    return canvas


def draw_points_vs_truth(image: np.ndarray, predicted, truth, radius: float | None = None) -> Image.Image:
    """Predicted points as dots, true points as rings of the same colour, a white line between each pair."""
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = radius or max(2.0, max(image.shape[:2]) / 60)
    width = max(1, round(radius / 2))
    for index, ((px, py), (tx, ty)) in enumerate(zip(np.asarray(predicted, float), np.asarray(truth, float))):
        if np.all(np.isfinite([px, py, tx, ty])):
            draw.line([(px, py), (tx, ty)], fill=(255, 255, 255), width=width)
        if np.all(np.isfinite([tx, ty])):
            draw.ellipse([tx - radius, ty - radius, tx + radius, ty + radius], outline=colour(index), width=width)
        if np.all(np.isfinite([px, py])):
            _dot(draw, px, py, radius * 0.7, colour(index))
    return canvas


LEGEND_FONT_SIZE = 15


def with_legend(picture: Image.Image, entries: list[tuple], font_size: int = LEGEND_FONT_SIZE) -> Image.Image:
    """``picture`` above a white legend strip: ``entries`` are ``(colour or None, text)`` (a swatch, then the text),
    laid out left to right and wrapped at the picture's width."""
    font = ImageFont.load_default(size=font_size)
    swatch, gap, padding = font_size, font_size // 2, font_size // 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [(swatch + gap if fill is not None else 0) + int(measure.textlength(text, font=font)) + 2 * gap
              for fill, text in entries]
    rows, row, used = [], [], 0
    width = max(picture.width, max(widths, default=0) + 2 * padding)
    for entry, entry_width in zip(entries, widths):
        if row and used + entry_width > width - 2 * padding:
            rows.append(row)
            row, used = [], 0
        row.append((entry, entry_width))
        used += entry_width
    rows.append(row)
    line = int(font_size * 1.5)
    canvas = Image.new("RGB", (width, picture.height + padding * 2 + line * len(rows)), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, items in enumerate(rows):
        x, y = padding, picture.height + padding + number * line
        for (fill, text), entry_width in items:
            if fill is not None:
                draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(fill), outline=(80, 80, 80))
                draw.text((x + swatch + gap, y), text, fill=(20, 20, 20), font=font)
            else:
                draw.text((x, y), text, fill=(20, 20, 20), font=font)
            x += entry_width
    return canvas


def save_image(image, path: str | os.PathLike, photo: bool = False) -> Path:
    """Save a PIL image or uint8 array through a temporary file (atomic), in the format of the suffix.

    ``.jpg`` / ``.jpeg``: JPEG at ``JPEG_QUALITY`` (the small choice for photo-like figures). ``.png``: lossless, or
    with ``photo`` (a figure of photos, e.g. ``landmark_figure``) reduced to ``PHOTO_PNG_COLOURS`` colours, which
    keeps such a figure about a third of its lossless size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    if path.suffix.lower() in JPEG_SUFFIXES:
        image.convert("RGB").save(temporary, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    elif photo and path.suffix.lower() == ".png":
        image.convert("RGB").quantize(PHOTO_PNG_COLOURS).save(temporary, format="PNG", optimize=True)
    else:
        image.save(temporary)
    os.replace(temporary, path)
    return path
