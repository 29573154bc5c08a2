"""Caltech-101 pairs for mask transfer (weakalign's protocol: label-transfer accuracy and IoU).

``root`` holds ``test_pairs_caltech_with_category.csv`` (or pass ``csv_file``) and ``101_ObjectCategories/``.
Two forms of the object outline are accepted:

- Polygons inside the CSV (weakalign): columns ``source_image, target_image, class, XA, YA, XB, YB`` where each of
  ``XA``... is a ','-separated list of polygon vertex coordinates in absolute image pixels.
- The original annotations (when the CSV has only 3 columns): ``Annotations/<class>/annotation_NNNN.mat`` for
  ``101_ObjectCategories/<class>/image_NNNN.jpg``, with ``box_coord = [top, bottom, left, right]`` and ``obj_contour``
  (2 x M, row 0 = x, row 1 = y, relative to the box corner): vertex = ``(x + left, y + top)``. Four classes use other
  annotation folder names (Faces -> Faces_2, Faces_easy -> Faces_3, Motorbikes -> Motorbikes_16,
  airplanes -> Airplanes_Side_2). ``box_coord`` also gives ``source_bbox``/``target_bbox``.

Both come from MATLAB annotations and are treated as 1-based (converted to 0-based; ``one_based=False`` keeps them).
The category is the image's folder name. Masks are the polygons rasterised with PIL ``ImageDraw.polygon`` (pixels
whose centres lie inside or on the outline). Extra keys: ``source_polygon``/``target_polygon`` float64 (M, 2), 0-based.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

from ..errors import DatasetError
from ..registry import register_pair_dataset
from ._csv import read_csv_rows, require_columns
from .base import PairDataset, check_files_exist, first_existing, pair_record, xy_columns_to_points

PAIR_LIST = "test_pairs_caltech_with_category.csv"
ANNOTATION_FOLDER_NAMES = {
    "Faces": "Faces_2",
    "Faces_easy": "Faces_3",
    "Motorbikes": "Motorbikes_16",
    "airplanes": "Airplanes_Side_2",
}


@register_pair_dataset("caltech-101")
class Caltech101(PairDataset):
    """Caltech-101 image pairs with object masks (no keypoints)."""

    name = "caltech-101"

    def __init__(self, root, split=None, *, csv_file=None, one_based: bool = True, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.offset = 1.0 if one_based else 0.0
        self.csv_file = Path(csv_file) if csv_file else first_existing([self.root / PAIR_LIST], "Caltech-101")
        header, rows = read_csv_rows(self.csv_file, "Caltech-101")
        self.polygons_in_csv = len(header) >= 7
        pairs = [self._parse_row(row, line) for line, row in enumerate(rows, start=2)]
        check_files_exist([p for pair in pairs for p in pair["files"]], "Caltech-101", self.csv_file)
        self._records = [self._record(pair) for pair in pairs]

    def _parse_row(self, row: list[str], line: int) -> dict:
        require_columns([], row, 7 if self.polygons_in_csv else 2, self.csv_file, line)
        source, target = (self.root / row[i].strip().replace("\\", "/") for i in (0, 1))
        pair = {"line": line, "source": source, "target": target, "files": [source, target]}
        if self.polygons_in_csv:
            where = f"in {self.csv_file} line {line}"
            pair["polygons"] = [xy_columns_to_points(row[i], row[i + 1], separator=",", where=where) for i in (3, 5)]
        else:
            pair["annotations"] = [annotation_path(self.root, image) for image in (source, target)]
            pair["files"] += pair["annotations"]
        return pair

    def _record(self, pair: dict) -> dict:
        if self.polygons_in_csv:
            polygons, boxes = pair["polygons"], [None, None]
        else:
            polygons, boxes = zip(*(read_annotation(path) for path in pair["annotations"]))
        source, target = pair["source"], pair["target"]
        record = pair_record(
            pair_id=f"{source.parent.name}/{source.stem}->{target.stem}#{pair['line'] - 2}",
            category=source.parent.name,
            source_path=source,
            target_path=target,
            source_bbox=None if boxes[0] is None else boxes[0] - self.offset,
            target_bbox=None if boxes[1] is None else boxes[1] - self.offset,
        )
        record["source_polygon"] = polygons[0] - self.offset
        record["target_polygon"] = polygons[1] - self.offset
        return record

    def _masks(self, index: int, sample: dict):
        return (
            polygon_to_mask(sample["source_polygon"], sample["source_shape"]),
            polygon_to_mask(sample["target_polygon"], sample["target_shape"]),
        )

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            pair_list=str(self.csv_file),
            outlines="csv polygons" if self.polygons_in_csv else "Annotations/*.mat obj_contour",
            coordinates="1-based, converted to 0-based" if self.offset else "0-based as given",
            metrics="LT-ACC and IoU of transferred masks",
        )
        return info


def annotation_path(root: Path, image: Path) -> Path:
    """``101_ObjectCategories/<class>/image_NNNN.jpg`` -> ``Annotations/<annotation class>/annotation_NNNN.mat``."""
    folder = ANNOTATION_FOLDER_NAMES.get(image.parent.name, image.parent.name)
    number = image.stem.split("_")[-1]
    return root / "Annotations" / folder / f"annotation_{number}.mat"


def read_annotation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(polygon (M, 2) absolute 1-based (x, y), box [x0, y0, x1, y1] 1-based) from a Caltech-101 .mat file."""
    try:
        data = scipy.io.loadmat(str(path))
        top, bottom, left, right = np.asarray(data["box_coord"], dtype=np.float64).reshape(-1)[:4]
        contour = np.asarray(data["obj_contour"], dtype=np.float64).reshape(2, -1)
    except (KeyError, ValueError, OSError) as error:
        raise DatasetError(f"Caltech-101: cannot read box_coord/obj_contour from {path}: {error}") from None
    polygon = np.stack([contour[0] + left, contour[1] + top], axis=1)
    return polygon, np.asarray([left, top, right, bottom])


def polygon_to_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon of 0-based (x, y) vertices into a bool (H, W) mask (PIL fill, outline included)."""
    height, width = shape
    canvas = Image.new("L", (width, height), 0)
    if len(polygon) >= 3:
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in polygon], fill=1, outline=1)
    return np.asarray(canvas) > 0
