"""What a propagation starts from: the annotated images and the image files of a folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ImageReadError, InvalidKeypointsError
from ..io import IMAGE_EXTENSIONS, check_keypoints, read_image


@dataclass
class AnnotatedImage:
    """One annotated image: ``points`` (N, 2) and ``visible`` (N,) bool (False = not labelled, not transferred)."""

    path: Path
    image: np.ndarray
    points: np.ndarray
    visible: np.ndarray


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (by extension, case-insensitive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"images folder not found: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)


def load_annotated(items: Iterable[tuple]) -> list[AnnotatedImage]:
    """(image path, points (N, 2)[, visible (N,)]) items -> checked ``AnnotatedImage`` records (same N for all)."""
    records = []
    for item in items:
        path, points, visible = (*item, None) if len(item) == 2 else item
        image = read_image(path)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        visible = np.ones(len(points), bool) if visible is None else np.asarray(visible, bool).reshape(-1)
        if len(visible) != len(points):
            raise InvalidKeypointsError(f"{path}: {len(points)} points but {len(visible)} visibility flags")
        check_keypoints(points[visible], image.shape[:2], name=f"keypoints of {path}")
        records.append(AnnotatedImage(Path(path), image, points, visible))
    if not records:
        raise InvalidKeypointsError("propagation needs at least one annotated image")
    counts = {len(record.points) for record in records}
    if len(counts) != 1:
        raise InvalidKeypointsError(f"annotated images have different numbers of keypoints: {sorted(counts)}")
    return records
