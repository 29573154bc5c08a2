"""PF-WILLOW (Ham et al., "Proposal Flow", CVPR 2016): 10 subclasses x 10 images, 900 ordered pairs, 10 keypoints.

Two pair-list layouts are accepted, both with 1-based (MATLAB) coordinates that are converted to 0-based here, once:

- ``test_pairs_all_ordered.csv`` (this project's shared copy): columns ``source_image, target_image, category, XA, YA,
  XB, YB`` with ';'-separated coordinates; images under ``PF-dataset-WILLOW/<subclass>/``.
- ``test_pairs_pf.csv`` (weakalign / DenseMatching): columns ``imageA, imageB`` then 10 x and 10 y values of A, then
  10 x and 10 y values of B; the subclass is taken from the image folder name.

Image paths in the CSV are relative to ``root`` (falling back to the CSV's folder). PF-WILLOW has no object boxes:
use the ``kp-bbox`` PCK threshold (``corrmark.eval.pck``).

Splits: ``None``/``"all"`` = every listed pair. ``"train"``/``"test"`` = the split by image used in the SCorrSAN issue
tracker: inside each subclass the images are sorted by file name, images 0-4 form the train set and 5-9 the test set;
a pair belongs to a split when both its images do (20 ordered pairs per subclass per split: 200 and 200 in all).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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

PAIR_LISTS = ("test_pairs_all_ordered.csv", "test_pairs_pf.csv")
SPLITS = {None: "all", "all": "all", "train": "train", "trn": "train", "test": "test"}
TRAIN_IMAGES_PER_SUBCLASS = 5


@register_pair_dataset("pf-willow")
class PFWillow(PairDataset):
    """PF-WILLOW pairs. ``root`` holds the pair-list CSV (or pass ``csv_file``) and the image folders."""

    name = "pf-willow"

    def __init__(self, root, split=None, *, csv_file=None, load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, SPLITS, "PF-WILLOW")
        self.csv_file = Path(csv_file) if csv_file else first_existing([self.root / n for n in PAIR_LISTS], "PF-WILLOW")
        records = self._read_pairs(self.csv_file)
        check_files_exist(image_paths(records), "PF-WILLOW", self.csv_file)
        self._records = select_split(records, self.split)

    def _read_pairs(self, csv_file: Path) -> list[dict]:
        if not csv_file.is_file():
            raise DatasetError(f"PF-WILLOW: pair list not found: {csv_file}")
        header, rows = read_csv_rows(csv_file, "PF-WILLOW")
        wide = len(header) >= 42  # weakalign layout: 2 names + 4 x 10 coordinates
        records = []
        for line, row in enumerate(rows, start=2):
            require_columns(header, row, 42 if wide else 7, csv_file, line)
            source, target = (self._resolve(row[0]), self._resolve(row[1]))
            if wide:
                values = np.asarray(row[2:42], dtype=np.float64).reshape(4, 10)
                source_points, target_points = values[[0, 1]].T, values[[2, 3]].T
                category = Path(row[0]).parent.name
            else:
                where = f"in {csv_file} line {line}"
                source_points = xy_columns_to_points(row[3], row[4], where=where)
                target_points = xy_columns_to_points(row[5], row[6], where=where)
                category = row[2].strip()
            records.append(
                pair_record(
                    pair_id=f"{category}/{Path(row[0]).stem}->{Path(row[1]).stem}",
                    category=category,
                    source_path=source,
                    target_path=target,
                    source_points=source_points - 1.0,  # MATLAB 1-based -> 0-based
                    target_points=target_points - 1.0,
                )
            )
        return records

    def _resolve(self, relative: str) -> Path:
        relative = relative.strip().replace("\\", "/")
        candidate = self.root / relative
        if candidate.is_file() or not (self.csv_file.parent / relative).is_file():
            return candidate
        return self.csv_file.parent / relative

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            split=self.split,
            pair_list=str(self.csv_file),
            keypoints="1-based in the files, converted to 0-based",
            threshold="kp-bbox (no object boxes)",
        )
        return info


def select_split(records: list[dict], split: str) -> list[dict]:
    """Keep the pairs whose two images both belong to ``split`` (see the module docstring)."""
    if split == "all":
        return records
    images_by_subclass: dict[str, set[str]] = {}
    for record in records:
        for key in ("source_path", "target_path"):
            images_by_subclass.setdefault(record["category"], set()).add(os.path.basename(record[key]))
    chosen = set()
    for subclass, names in images_by_subclass.items():
        ordered = sorted(names)
        part = ordered[:TRAIN_IMAGES_PER_SUBCLASS] if split == "train" else ordered[TRAIN_IMAGES_PER_SUBCLASS:]
        chosen.update((subclass, name) for name in part)
    return [
        r
        for r in records
        if (r["category"], os.path.basename(r["source_path"])) in chosen
        and (r["category"], os.path.basename(r["target_path"])) in chosen
    ]
