"""A user's own pair list, as CSV or JSON. Image paths are relative to the list file (absolute paths also work).

CSV: a header row with ``source`` and ``target`` (or ``source_image``/``target_image``) and optionally
``source_points``, ``target_points``, ``category``, ``pair_id``.

JSON: a list of objects (or ``{"pairs": [...]}``) with the same keys.

Points are 0-based pixel (x, y) unless ``one_based=True``. A points value is either a JSON list ``[[x, y], ...]``
(``null`` or ``[null, null]`` for a keypoint missing in that image) or a ';'-separated flat list ``x1;y1;x2;y2;...``
(``nan`` for missing). Source and target must list the same number of keypoints; keypoint i corresponds to keypoint i.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..registry import register_pair_dataset
from ._csv import read_csv_rows
from .base import PairDataset, check_files_exist, image_paths, load_json, pair_record, parse_number_list, require_file

SOURCE_KEYS = ("source", "source_image")
TARGET_KEYS = ("target", "target_image")


@register_pair_dataset("pairs-file")
class PairsFile(PairDataset):
    """Pairs listed in a CSV or JSON file (``root`` is the file)."""

    name = "pairs-file"

    def __init__(self, root, split=None, *, one_based: bool = False, default_category: str = "object",
                 load_images: bool = True):  # fmt: skip
        super().__init__(root, load_images=load_images)
        self.list_file = require_file(self.root, "pairs file")
        self.offset = 1.0 if one_based else 0.0
        self.default_category = default_category
        entries = self._read_entries()
        records = [self._record(entry, number) for number, entry in enumerate(entries)]
        check_files_exist(image_paths(records), "pairs file", self.list_file)
        self._records = records

    def _read_entries(self) -> list[dict]:
        if self.list_file.suffix.lower() == ".json":
            data = load_json(self.list_file, "pairs file")
            entries = data.get("pairs") if isinstance(data, dict) else data
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise DatasetError(f"pairs file {self.list_file}: expected a list of objects or {{'pairs': [...]}}")
            return entries
        header, rows = read_csv_rows(self.list_file, "pairs file")
        return [dict(zip(header, (cell.strip() for cell in row))) for row in rows]

    def _record(self, entry: dict, number: int) -> dict:
        where = f"{self.list_file} entry {number + 1}"
        source, target = (self._path(entry, keys, where) for keys in (SOURCE_KEYS, TARGET_KEYS))
        source_points = parse_points(entry.get("source_points"), where) - self.offset
        target_points = parse_points(entry.get("target_points"), where) - self.offset
        if len(source_points) != len(target_points):
            raise DatasetError(f"{where}: {len(source_points)} source points but {len(target_points)} target points")
        return pair_record(
            pair_id=str(entry.get("pair_id") or f"{number:06d}:{source.stem}->{target.stem}"),
            category=str(entry.get("category") or self.default_category),
            source_path=source,
            target_path=target,
            source_points=source_points,
            target_points=target_points,
        )

    def _path(self, entry: dict, keys: tuple[str, str], where: str) -> Path:
        value = next((entry[key] for key in keys if entry.get(key)), None)
        if value is None:
            raise DatasetError(f"{where}: missing '{keys[0]}'")
        path = Path(str(value).replace("\\", "/"))
        return path if path.is_absolute() else self.list_file.parent / path

    def describe(self) -> dict:
        info = super().describe()
        info.update(pair_list=str(self.list_file), coordinates="1-based, converted" if self.offset else "0-based")
        return info


def parse_points(value, where: str) -> np.ndarray:
    """A points value (JSON list, JSON text, ';'-separated text, or None) -> float64 (N, 2) with NaN for missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.zeros((0, 2), dtype=np.float64)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else parse_number_list(text, where=f"in {where}")
        except json.JSONDecodeError:
            raise DatasetError(f"{where}: cannot parse keypoints {text[:60]!r}") from None
    rows = [[np.nan, np.nan] if point is None else point for point in (value if _is_nested(value) else [value])]
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: cannot parse keypoints {str(value)[:60]}") from None
    if array.size % 2:
        raise DatasetError(f"{where}: odd number of keypoint coordinates ({array.size})")
    return array.reshape(-1, 2)


def _is_nested(value) -> bool:
    # [[x, y], ...] (possibly with None entries) versus a flat [x1, y1, x2, y2, ...]
    return len(value) > 0 and all(v is None or isinstance(v, (list, tuple)) for v in value)
