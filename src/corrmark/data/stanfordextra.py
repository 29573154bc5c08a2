"""StanfordExtra (Biggs et al., ECCV 2020): dogs with 24 keypoints and silhouette masks.

The annotation JSON is a list of records ``{img_path, img_width, img_height, joints: 24 x [x, y, visible],
img_bbox: [x, y, w, h], is_multiple_dogs, seg}`` where ``seg`` is a COCO compressed RLE counts string of the silhouette
(decoded by ``corrmark.data.rle``). Joint coordinates are used as given (0-based pixels); joints with ``visible == 0``
become NaN rows.

Pairs: every ordered pair of distinct images (25 images -> 600 pairs), or only pairs of the same breed with
``same_breed_only=True``; ``breeds=[...]`` keeps only the images of those breeds (e.g. a held-out breed). ``valid`` =
visible in both. ``category`` is ``"dog"``; the breeds (the image folder name without its WordNet id) are in
``flags['source_breed']``/``flags['target_breed']``. ``source_bbox`` = ``[x, y, x + w, y + h]`` of ``img_bbox``.

``root`` is the folder with the JSON and the images: the JSON is ``json_file`` or the single ``StanfordExtra*.json``
in ``root``; images are looked up in ``image_dir`` or the first of ``sample_imgs/``, ``Images/``, ``images/`` that
exists (``img_path`` is relative to it).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from ..errors import DatasetError, UnknownNameError
from ..registry import register_pair_dataset
from .base import PairDataset, check_files_exist, first_existing, load_json, pair_record, require_dir
from .rle import decode_rle

IMAGE_DIR_NAMES = ("sample_imgs", "Images", "images")
RECORD_KEYS = ("img_path", "img_width", "img_height", "joints", "img_bbox", "seg")


@register_pair_dataset("stanfordextra")
class StanfordExtra(PairDataset):
    """All ordered pairs of distinct StanfordExtra images (optionally same breed only)."""

    name = "stanfordextra"

    def __init__(self, root, split=None, *, json_file=None, image_dir=None, same_breed_only: bool = False,
                 breeds=None, load_images: bool = True):  # fmt: skip
        super().__init__(root, load_images=load_images)
        require_dir(self.root, "StanfordExtra")
        self.json_file = Path(json_file) if json_file else find_json(self.root)
        self.image_dir = Path(image_dir) if image_dir else first_existing(
            [self.root / name for name in IMAGE_DIR_NAMES], "StanfordExtra image folder"
        )
        self.same_breed_only = same_breed_only
        self.images = [self._read_image_record(entry, i) for i, entry in enumerate(self._load_entries())]
        if breeds is not None:
            self.images = self._only_breeds(breeds)
        check_files_exist([image["path"] for image in self.images], "StanfordExtra", self.json_file)
        self._pair_indices: list[tuple[int, int]] = []
        for first, second in itertools.permutations(range(len(self.images)), 2):
            if same_breed_only and self.images[first]["breed"] != self.images[second]["breed"]:
                continue
            self._pair_indices.append((first, second))
            self._records.append(self._pair(first, second))

    def _load_entries(self) -> list[dict]:
        entries = load_json(self.json_file, "StanfordExtra")
        if not isinstance(entries, list):
            raise DatasetError(f"StanfordExtra: {self.json_file} must hold a list of image records")
        return entries

    def _read_image_record(self, entry: dict, index: int) -> dict:
        missing = [key for key in RECORD_KEYS if key not in entry]
        if missing:
            raise DatasetError(f"StanfordExtra: record {index} of {self.json_file} lacks {', '.join(missing)}")
        joints = np.asarray(entry["joints"], dtype=np.float64).reshape(-1, 3)
        points = joints[:, :2].copy()
        points[joints[:, 2] <= 0] = np.nan  # invisible joints are stored as (0, 0, 0)
        x, y, w, h = (float(v) for v in entry["img_bbox"])
        folder = Path(entry["img_path"]).parent.name
        return {
            "path": self.image_dir / entry["img_path"],
            "points": points,
            "bbox": np.asarray([x, y, x + w, y + h]),
            "shape": (int(entry["img_height"]), int(entry["img_width"])),
            "seg": entry["seg"],
            "breed": folder.split("-", 1)[-1],
            "multiple_dogs": bool(entry.get("is_multiple_dogs", False)),
        }

    def _only_breeds(self, breeds) -> list[dict]:
        wanted = set(breeds)
        unknown = sorted(wanted - {image["breed"] for image in self.images})
        if unknown:
            raise UnknownNameError(f"StanfordExtra: no image of breed(s) {', '.join(unknown)} in {self.json_file}")
        return [image for image in self.images if image["breed"] in wanted]

    def _pair(self, first: int, second: int) -> dict:
        source, target = self.images[first], self.images[second]
        return pair_record(
            pair_id=f"{source['path'].stem}->{target['path'].stem}",
            category="dog",
            source_path=source["path"],
            target_path=target["path"],
            source_points=source["points"],
            target_points=target["points"],
            source_bbox=source["bbox"],
            target_bbox=target["bbox"],
            flags={
                "source_breed": source["breed"],
                "target_breed": target["breed"],
                "same_breed": source["breed"] == target["breed"],
                "multiple_dogs": source["multiple_dogs"] or target["multiple_dogs"],
            },
        )

    def _masks(self, index: int, sample: dict):
        first, second = self._pair_indices[index]
        return self.mask(first, sample["source_shape"]), self.mask(second, sample["target_shape"])

    def mask(self, image_index: int, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Decoded silhouette of image ``image_index`` (bool (H, W)); checked against ``shape`` when given."""
        image = self.images[image_index]
        if shape is not None and tuple(shape) != image["shape"]:
            raise DatasetError(f"StanfordExtra: {image['path']} is {shape}, its record says {image['shape']}")
        seg = image["seg"]
        counts = seg["counts"] if isinstance(seg, dict) else seg
        return decode_rle(counts, *image["shape"])

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            images=len(self.images),
            breeds=sorted({image["breed"] for image in self.images}),
            same_breed_only=self.same_breed_only,
            annotations=str(self.json_file),
            keypoints="0-based as given; valid = visible in both images",
        )
        return info


def find_json(root: Path) -> Path:
    """The single ``StanfordExtra*.json`` file in ``root``."""
    candidates = sorted(root.glob("StanfordExtra*.json"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DatasetError(f"StanfordExtra: expected one StanfordExtra*.json in {root} (found {found}); pass json_file")
    return candidates[0]
