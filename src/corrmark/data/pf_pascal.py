"""PF-PASCAL (Ham et al., Proposal Flow, TPAMI 2018) in the weakalign CSV layout.

Expected files (``root`` = the folder holding the CSVs and ``PF-dataset-PASCAL/``):

- ``{test,val,train}_pairs_pf_pascal.csv`` (weakalign) or ``{test,val,trn}_pairs.csv`` (DHPF/CATs naming), columns
  ``source_image, target_image, class, XA, YA, XB, YB``: ``class`` is the 1-based index into the 20 PASCAL VOC
  classes, ``XA``... hold ';'-separated 1-based coordinates (converted to 0-based here). The training CSV has
  ``source_image, target_image, class, flip`` and no keypoints: samples then have 0 keypoints and ``flags['flip']``.
- Images at the CSV paths relative to ``root`` (e.g. ``PF-dataset-PASCAL/JPEGImages/2008_006325.jpg``); a bare
  file name is looked up in ``PF-dataset-PASCAL/JPEGImages/``.
- Optional object boxes: ``PF-dataset-PASCAL/Annotations/<class>/<image stem>.mat`` with variable ``bbox``
  ``[x0, y0, x1, y1]`` (1-based, converted); ``source_bbox``/``target_bbox`` are None when absent.

Recent work uses the ``img`` PCK threshold on PF-PASCAL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from ..errors import DatasetError
from ..registry import register_pair_dataset
from ._csv import read_csv_rows, require_columns
from .base import (
    PairDataset,
    check_files_exist,
    check_split,
    first_existing,
    image_paths,
    pair_record,
    xy_columns_to_points,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = {None: "test", "test": "test", "val": "val", "train": "trn", "trn": "trn"}
IMAGE_FOLDER = Path("PF-dataset-PASCAL") / "JPEGImages"
ANNOTATION_FOLDER = Path("PF-dataset-PASCAL") / "Annotations"


@register_pair_dataset("pf-pascal")
class PFPascal(PairDataset):
    """PF-PASCAL pairs of one split (default ``test``); pass ``csv_file`` to read another pair list."""

    name = "pf-pascal"

    def __init__(self, root, split=None, *, csv_file=None, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, SPLITS, "PF-PASCAL")
        self.csv_file = Path(csv_file) if csv_file else first_existing(self._csv_candidates(), "PF-PASCAL")
        records = self._read_pairs()
        check_files_exist(image_paths(records), "PF-PASCAL", self.csv_file)
        self._records = records

    def _csv_candidates(self) -> list[Path]:
        long_name = "train" if self.split == "trn" else self.split
        names = [f"{long_name}_pairs_pf_pascal.csv", f"{self.split}_pairs.csv"]
        return [folder / name for name in names for folder in (self.root, self.root / "PF-dataset-PASCAL")]

    def _read_pairs(self) -> list[dict]:
        if not self.csv_file.is_file():
            raise DatasetError(f"PF-PASCAL: pair list not found: {self.csv_file}")
        header, rows = read_csv_rows(self.csv_file, "PF-PASCAL")
        has_points = len(header) >= 7
        records = []
        for line, row in enumerate(rows, start=2):
            require_columns(header, row, 7 if has_points else 3, self.csv_file, line)
            category = class_name(row[2], f"{self.csv_file} line {line}")
            flags = {"flip": bool(int(float(row[3])))} if not has_points and len(row) > 3 else {}
            source_points = target_points = None
            if has_points:
                where = f"in {self.csv_file} line {line}"
                source_points = xy_columns_to_points(row[3], row[4], where=where) - 1.0  # 1-based -> 0-based
                target_points = xy_columns_to_points(row[5], row[6], where=where) - 1.0
            source, target = self._resolve(row[0]), self._resolve(row[1])
            records.append(
                pair_record(
                    pair_id=f"{category}/{source.stem}->{target.stem}#{line - 2}",
                    category=category,
                    source_path=source,
                    target_path=target,
                    source_points=source_points,
                    target_points=target_points,
                    source_bbox=self._bbox(category, source.stem),
                    target_bbox=self._bbox(category, target.stem),
                    flags=flags,
                )
            )
        return records

    def _resolve(self, relative: str) -> Path:
        relative = relative.strip().replace("\\", "/")
        if "/" not in relative:
            return self.root / IMAGE_FOLDER / relative
        return self.root / relative

    def _bbox(self, category: str, stem: str) -> np.ndarray | None:
        path = self.root / ANNOTATION_FOLDER / category / f"{stem}.mat"
        if not path.is_file():
            return None
        try:
            box = np.asarray(scipy.io.loadmat(str(path))["bbox"], dtype=np.float64).reshape(-1)[:4]
        except (KeyError, ValueError, OSError) as error:
            raise DatasetError(f"PF-PASCAL: cannot read 'bbox' from {path}: {error}") from None
        return box - 1.0  # 1-based -> 0-based

    def describe(self) -> dict:
        info = super().describe()
        info.update(split=self.split, pair_list=str(self.csv_file))
        info["keypoints"] = "1-based in the CSV, converted to 0-based"
        return info


def class_name(value: str, where: str) -> str:
    """The ``class`` column: a 1-based VOC class index (weakalign) or already a class name."""
    value = value.strip()
    try:
        index = int(float(value))
    except ValueError:
        return value
    if not 1 <= index <= len(VOC_CLASSES):
        raise DatasetError(f"class index {index} outside 1..{len(VOC_CLASSES)} at {where}")
    return VOC_CLASSES[index - 1]
