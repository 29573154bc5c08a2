"""SPair-71k (Min et al., 2019): 70,958 pairs, 18 categories, keypoints and object boxes, difficulty flags.

Layout (``root`` = the ``SPair-71k`` folder):

- ``Layout/<large|small>/{trn,val,test}.txt``: one pair name per line,
  e.g. ``000001-2008_000585-2008_003661:aeroplane``.
- ``PairAnnotation/{trn,val,test}/<pair name>.json`` with ``src_imname, trg_imname, category, src_kps, trg_kps``
  (lists of [x, y], already 0-based and matched: keypoint i of the source corresponds to keypoint i of the target),
  ``src_bndbox, trg_bndbox`` ([x0, y0, x1, y1]), ``viewpoint_variation, scale_variation, truncation, occlusion`` and
  optionally ``mirror, kps_ids``.
- ``JPEGImages/<category>/<image name>``.

The difficulty entries are copied into ``flags`` (with ``kps_ids`` when present) so results can be split by them.
The published protocol: test split of the large layout, PCK@0.1 with the target object box (``bbox`` threshold).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..registry import register_pair_dataset
from .base import (
    PairDataset,
    check_files_exist,
    check_split,
    image_paths,
    load_json,
    pair_record,
    require_dir,
    require_file,
)

SPLITS = {None: "test", "test": "test", "val": "val", "train": "trn", "trn": "trn"}
LAYOUTS = {"large": "large", "small": "small"}
FLAG_KEYS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion", "mirror", "kps_ids")


@register_pair_dataset("spair-71k")
class SPair71k(PairDataset):
    """SPair-71k pairs of one split (default ``test``) of the ``large`` (default) or ``small`` layout."""

    name = "spair-71k"

    def __init__(self, root, split=None, *, layout: str = "large", load_images: bool = True):
        super().__init__(root, load_images=load_images)
        self.split = check_split(split, SPLITS, "SPair-71k")
        self.layout = check_split(layout, LAYOUTS, "SPair-71k layout")
        for folder in ("Layout", "PairAnnotation", "JPEGImages"):
            require_dir(self.root / folder, "SPair-71k")
        self.pair_list = require_file(self.root / "Layout" / self.layout / f"{self.split}.txt", "SPair-71k")
        names = [line.strip() for line in self.pair_list.read_text().splitlines() if line.strip()]
        annotation_dir = self.root / "PairAnnotation" / self.split
        json_files = [annotation_dir / f"{name}.json" for name in names]
        check_files_exist(json_files, "SPair-71k", self.pair_list)
        records = [self._read_pair(path) for path in json_files]
        check_files_exist(image_paths(records), "SPair-71k", annotation_dir)
        self._records = records

    def _read_pair(self, path: Path) -> dict:
        data = load_json(path, "SPair-71k")
        try:
            category = data["category"]
            images = self.root / "JPEGImages" / category
            return pair_record(
                pair_id=path.stem,
                category=category,
                source_path=images / data["src_imname"],
                target_path=images / data["trg_imname"],
                source_points=data["src_kps"],  # already 0-based
                target_points=data["trg_kps"],
                source_bbox=data["src_bndbox"],
                target_bbox=data["trg_bndbox"],
                flags={key: data[key] for key in FLAG_KEYS if key in data},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"SPair-71k: malformed pair annotation {path}: {error!r}") from None

    def describe(self) -> dict:
        info = super().describe()
        info.update(
            split=self.split,
            layout=self.layout,
            pair_list=str(self.pair_list),
            keypoints="0-based in the files",
            threshold="bbox (target object box)",
        )
        return info
