"""The in-memory form of every dataset, and the checks all loaders share.

A *pair dataset* is a sequence of ``PairSample`` dicts; an *image dataset* is a sequence of ``ImageSample`` dicts.
Loaders read annotations once, at construction, and check that every file they reference exists, so a broken root
fails immediately with one ``DatasetError`` line rather than in the middle of an evaluation.

Coordinates follow docs/CONVENTIONS.md: (x, y), 0-based pixels, the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypedDict

import numpy as np
from PIL import Image

from ..errors import DatasetError, UnknownNameError
from ..io import EXIF_ORIENTATION, ROTATED_ORIENTATIONS, points_inside, read_image


class PairSample(TypedDict, total=False):
    """One image pair. Keys marked *always* are present in every sample of every pair dataset.

    - ``pair_id`` (always, str): unique inside the dataset, e.g. ``"car(G)/Cars_006a->Cars_007a"``.
    - ``category`` (always, str): object category used for per-category results.
    - ``source_path``, ``target_path`` (always, str): image files.
    - ``source_shape``, ``target_shape`` (always, (H, W) ints): read from the image header, no decoding.
    - ``source_image``, ``target_image`` (np.uint8 (H, W, 3) RGB): present unless the dataset was opened with
      ``load_images=False``.
    - ``source_points``, ``target_points`` (always, float64 (N, 2)): 0-based (x, y); a NaN row = keypoint not
      annotated in that image. N may be 0 (datasets without keypoints, e.g. TSS, Caltech-101).
    - ``valid`` (always, bool (N,)): the keypoint is annotated in both images and lies on both images.
    - ``source_bbox``, ``target_bbox`` (always, float64 (4,) ``x0, y0, x1, y1`` 0-based, or None): object boxes.
    - ``source_mask``, ``target_mask`` (always, bool (H, W) or None): foreground masks.
    - ``flags`` (always, dict): dataset-specific extras (SPair difficulty, TSS flip, breeds, ...).
    - TSS only: ``flow_target_to_source`` / ``flow_source_to_target`` (float32 (H, W, 2), see ``corrmark.data.tss``).
    """

    pair_id: str
    category: str
    source_path: str
    target_path: str
    source_shape: tuple[int, int]
    target_shape: tuple[int, int]
    source_image: np.ndarray
    target_image: np.ndarray
    source_points: np.ndarray
    target_points: np.ndarray
    valid: np.ndarray
    source_bbox: np.ndarray | None
    target_bbox: np.ndarray | None
    source_mask: np.ndarray | None
    target_mask: np.ndarray | None
    flags: dict
    flow_target_to_source: np.ndarray
    flow_source_to_target: np.ndarray


class ImageSample(TypedDict, total=False):
    """One image of a single-image collection.

    - ``path`` (str), ``shape`` ((H, W)), ``image`` (np.uint8 (H, W, 3); absent with ``load_images=False``).
    - ``points`` (float64 (K, 2), 0-based (x, y); (0, 2) when the dataset has no landmarks), ``valid`` (bool (K,)).
    - ``label`` (int or None): class index; ``category`` (str): class name ("" when unknown).
    - ``attributes`` (dict): dataset-specific extras (e.g. MTFL gender/smile/glasses/pose).
    """

    path: str
    shape: tuple[int, int]
    image: np.ndarray
    points: np.ndarray
    valid: np.ndarray
    label: int | None
    category: str
    attributes: dict


class PairDataset(Sequence):
    """Base class: a sequence of ``PairSample``.

    Subclasses fill ``self._records`` (one dict per pair, with every key except images and masks) and may override
    ``_masks`` / ``_extras`` to add per-pair data that is too big to keep in memory.
    """

    name = "pairs"

    def __init__(self, root: str | os.PathLike, *, load_images: bool = True):
        self.root = Path(root)
        self.load_images = load_images
        self._records: list[dict] = []
        self._shape_cache: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = _check_index(index, len(self))
        record = self._records[index]
        sample: dict[str, Any] = {key: _copy(value) for key, value in record.items()}
        sample["source_shape"] = self.image_shape(record["source_path"])
        sample["target_shape"] = self.image_shape(record["target_path"])
        sample["valid"] = sample["valid"] & _on_image(sample["source_points"], sample["source_shape"]) & _on_image(
            sample["target_points"], sample["target_shape"]
        )
        sample["source_mask"], sample["target_mask"] = self._masks(index, sample)
        sample.update(self._extras(index, sample))
        if self.load_images:
            sample["source_image"] = read_image(record["source_path"])
            sample["target_image"] = read_image(record["target_path"])
        return sample

    def __iter__(self) -> Iterator[PairSample]:
        for index in range(len(self)):
            yield self[index]

    def _masks(self, index: int, sample: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        return None, None

    def _extras(self, index: int, sample: dict) -> dict:
        return {}

    def image_shape(self, path: str) -> tuple[int, int]:
        """(H, W) of an image file, from its header (cached)."""
        if path not in self._shape_cache:
            self._shape_cache[path] = image_shape(path)
        return self._shape_cache[path]

    @property
    def categories(self) -> list[str]:
        """Sorted category names present in the dataset."""
        return sorted({record["category"] for record in self._records})

    def describe(self) -> dict:
        """A JSON-friendly summary: name, root, number of pairs, categories and the dataset's conventions."""
        return {"name": self.name, "root": str(self.root), "pairs": len(self), "categories": self.categories}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, pairs={len(self)})"


class ImageDataset(Sequence):
    """Base class: a sequence of ``ImageSample``; subclasses fill ``self._records``."""

    name = "images"

    def __init__(self, root: str | os.PathLike, *, load_images: bool = True):
        self.root = Path(root)
        self.load_images = load_images
        self._records: list[dict] = []

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        record = self._records[_check_index(index, len(self))]
        sample: dict[str, Any] = {key: _copy(value) for key, value in record.items()}
        if self.load_images:
            sample["image"] = read_image(record["path"])
            sample["shape"] = tuple(sample["image"].shape[:2])
        else:
            sample["shape"] = image_shape(record["path"])
        return sample

    def __iter__(self) -> Iterator[ImageSample]:
        for index in range(len(self)):
            yield self[index]

    @property
    def categories(self) -> list[str]:
        return sorted({record["category"] for record in self._records})

    def describe(self) -> dict:
        return {"name": self.name, "root": str(self.root), "images": len(self), "categories": len(self.categories)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)})"


# --- helpers shared by the loaders ---------------------------------------------------------------------------------


def _check_index(index, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return index


def _copy(value):
    # Samples are handed to user code that may modify arrays in place; the stored records must not change.
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return dict(value)
    return value


def _on_image(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Points that are finite and on the image; keypoints off the image are marked invalid, never clamped."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    return points_inside(points, shape)


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file read from its header only; unreadable files raise ``DatasetError``."""
    try:
        with Image.open(path) as handle:
            width, height = handle.size
            if handle.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_ORIENTATIONS:
                width, height = height, width  # read_image turns it upright
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image header of {path}: {error}") from None
    return int(height), int(width)


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise one ``DatasetError`` line naming it."""
    if not path.is_dir():
        raise DatasetError(f"{what}: folder not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise one ``DatasetError`` line naming it."""
    if not path.is_file():
        raise DatasetError(f"{what}: file not found: {path}")
    return path


def check_files_exist(paths: Iterable[str | os.PathLike], what: str, listed_in: str | os.PathLike) -> None:
    """Raise one ``DatasetError`` line if any file is missing: how many, out of how many, and the first one."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    missing = [p for p in unique if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {len(unique)} files referenced by {listed_in} are missing; first: {missing[0]}"
        )


def image_paths(records: Iterable[dict]) -> list[str]:
    """Every source and target image path of some pair records (for ``check_files_exist``)."""
    return [path for record in records for path in (record["source_path"], record["target_path"])]


def first_existing(candidates: Sequence[Path], what: str) -> Path:
    """The first path of ``candidates`` that exists, else a ``DatasetError`` naming the first candidate."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"{what}: not found: {candidates[0]} (tried {tried})")


def parse_number_list(text: str, *, separator: str = ";", where: str = "") -> np.ndarray:
    """Parse ``"1.5;2;nan"`` into a float64 array; an empty cell gives an empty array."""
    text = str(text).strip()
    if not text:
        return np.zeros(0, dtype=np.float64)
    try:
        return np.asarray([float(value) for value in text.split(separator) if value.strip()], dtype=np.float64)
    except ValueError:
        raise DatasetError(f"cannot parse numbers {text[:60]!r} {where}".rstrip()) from None


def xy_columns_to_points(x_text: str, y_text: str, *, separator: str = ";", where: str = "") -> np.ndarray:
    """Two cells of separated x and y values -> (N, 2) points (as written; callers convert 1-based values)."""
    x = parse_number_list(x_text, separator=separator, where=where)
    y = parse_number_list(y_text, separator=separator, where=where)
    if x.shape != y.shape:
        raise DatasetError(f"{len(x)} x values but {len(y)} y values {where}".rstrip())
    return np.stack([x, y], axis=1) if len(x) else np.zeros((0, 2), dtype=np.float64)


def both_annotated(source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """bool (N,): the keypoint has finite coordinates in both images."""
    return np.isfinite(source_points).all(axis=1) & np.isfinite(target_points).all(axis=1)


def pair_record(
    *,
    pair_id: str,
    category: str,
    source_path: Path | str,
    target_path: Path | str,
    source_points: np.ndarray | None = None,
    target_points: np.ndarray | None = None,
    source_bbox=None,
    target_bbox=None,
    flags: dict | None = None,
) -> dict:
    """Build the stored record of one pair, with the always-present keys in their documented types."""
    source_points = _as_points(source_points)
    target_points = _as_points(target_points)
    if len(source_points) != len(target_points):
        raise DatasetError(
            f"pair {pair_id}: {len(source_points)} source keypoints but {len(target_points)} target keypoints"
        )
    return {
        "pair_id": pair_id,
        "category": category,
        "source_path": str(source_path),
        "target_path": str(target_path),
        "source_points": source_points,
        "target_points": target_points,
        "valid": both_annotated(source_points, target_points),
        "source_bbox": _as_bbox(source_bbox),
        "target_bbox": _as_bbox(target_bbox),
        "flags": dict(flags or {}),
    }


def _as_points(points) -> np.ndarray:
    if points is None:
        return np.zeros((0, 2), dtype=np.float64)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _as_bbox(bbox) -> np.ndarray | None:
    return None if bbox is None else np.asarray(bbox, dtype=np.float64).reshape(4)


def check_split(split, allowed: dict[Any, str], dataset: str) -> str:
    """Map a user split name to the dataset's own name; unknown names raise ``UnknownNameError`` listing them."""
    if split in allowed:
        return allowed[split]
    names = ", ".join(sorted({str(k) for k in allowed if k is not None}))
    raise UnknownNameError(f"unknown {dataset} split {split!r}; choose one of: {names}")


def load_json(path: Path, what: str):
    """Parse a JSON file, turning syntax errors into one ``DatasetError`` line naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{what}: cannot parse JSON file {path}: {error}") from None
