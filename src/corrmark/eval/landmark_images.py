"""Annotated images for the landmark evaluation: records of ``{"path", "points" (L, 2), "valid", "category"}``
read from PF-WILLOW (the SCorrSAN image split), from a COCO keypoints file, or picked by path out of datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.keypoint_pairs import pfwillow_images
from ..errors import InvalidKeypointsError


class ImageRecords:
    """A plain list of ``{"path", "points" (L, 2), "valid", "category"}`` records usable as an evaluation dataset."""

    def __init__(self, records: list[dict], name: str = "images"):
        self._records, self.name = list(records), name

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        return dict(self._records[index])


def images_at(paths, datasets, name: str = "images") -> ImageRecords:
    """The annotated records of ``datasets`` (image datasets whose samples hold ``points``) at ``paths``, in the
    order of ``paths``: e.g. exactly the images a training config read. A path none of them holds is an error."""
    table = {}
    for dataset in datasets:
        records = getattr(dataset, "_records", None)  # skips reading every image's size, as _dataset_images does
        for record in records if records is not None else (dataset[index] for index in range(len(dataset))):
            table[str(Path(record["path"]).resolve())] = record
    chosen = []
    for path in paths:
        record = table.get(str(Path(path).resolve()))
        if record is None:
            raise InvalidKeypointsError(f"{path} is in none of the annotated datasets")
        points = np.asarray(record["points"], dtype=np.float64)
        valid = np.asarray(record.get("valid", np.isfinite(points).all(axis=1)), dtype=bool)
        chosen.append({"path": str(record["path"]), "points": points, "valid": valid,
                       "category": str(record.get("category", ""))})
    return ImageRecords(chosen, name=name)


def pfwillow_landmark_images(root, split: str) -> ImageRecords:
    """The images of a PF-WILLOW split (the SCorrSAN split by image: images 0-4 / 5-9 of each subclass) with their
    10 keypoints and subclass, for the per-category object protocol (``normalisation="kp-bbox"``)."""
    items, _, _ = pfwillow_images(root, split)
    records = [{"path": item.path, "points": np.asarray(item.points, dtype=np.float64),
                "valid": np.isfinite(np.asarray(item.points)).all(axis=1), "category": item.group} for item in items]
    return ImageRecords(records, name=f"pf-willow {split}")


def coco_landmark_images(annotations_file, image_root=None) -> ImageRecords:
    """Every image of a COCO keypoints JSON (what ``corrmark propagate`` writes) that has a keypoint annotation, as
    evaluation records: ``points`` from the first annotation of the image, ``valid`` = labelled (v > 0), ``category``
    = its category name. Image paths are ``file_name`` under ``image_root`` (default: the JSON file's folder)."""
    path = Path(annotations_file)
    if not path.is_file():
        raise InvalidKeypointsError(f"annotations file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidKeypointsError(f"cannot parse annotations file {path}: {error}") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InvalidKeypointsError(f"{path} is not a COCO keypoints file (needs 'images' and 'annotations')")
    root = Path(image_root) if image_root is not None else path.parent
    categories = {entry.get("id"): str(entry.get("name", entry.get("id"))) for entry in data.get("categories") or []}
    first = {}
    for annotation in data["annotations"]:
        if annotation.get("keypoints"):
            first.setdefault(annotation.get("image_id"), annotation)
    records = []
    for image in data["images"]:
        annotation = first.get(image.get("id"))
        if annotation is None:
            continue
        triples = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
        valid = triples[:, 2] > 0
        points = np.where(valid[:, None], triples[:, :2], np.nan)
        records.append({"path": str(root / image["file_name"]), "points": points, "valid": valid,
                        "category": categories.get(annotation.get("category_id"), "object")})
    if not records:
        raise InvalidKeypointsError(f"{path} has no image with a keypoint annotation")
    if len({len(record["points"]) for record in records}) != 1:
        raise InvalidKeypointsError(f"{path}: images have different numbers of keypoints")
    return ImageRecords(records, name=path.name)
