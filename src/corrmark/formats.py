"""Annotation-tool formats: COCO keypoints (what CVAT's "COCO Keypoints 1.0" exports and imports) and Label Studio
predictions. Coordinates inside corrmark are 0-based pixel centres (docs/CONVENTIONS.md); each format's own convention
is applied only here.

- **COCO** keypoints are ``[x, y, v, ...]`` in pixels with ``v`` 0 (not labelled), 1 (labelled, not visible) or 2
  (visible). corrmark reads and writes x, y as they are. A COCO input's category (id, name, supercategory, keypoint
  names, skeleton) and image ids are carried to the output (``CocoContext``), so the file re-imports into the task
  it came from.
- **Label Studio** keypoints are percentages of the image size measured from its top-left *corner*:
  ``x% = 100 (x + 0.5) / W`` for a 0-based pixel-centre ``x``. ``label_studio_tasks`` writes one task per image with
  its points as ``keypointlabels`` predictions, each region with its ``score`` (annotators can sort by confidence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidKeypointsError
from .io import all_real_numbers, point_rows, points_from_json, read_json_file, read_points_document

VISIBLE_THRESHOLD = 0.3679  # exp(-1): confidence from which a propagated point is written v = 2 (corrmark.propagate)
LABEL_STUDIO_FROM_NAME = "keypoints"  # the <KeyPointLabels name=...> of the labelling config
LABEL_STUDIO_TO_NAME = "image"  # the <Image name=...> it points at
LABEL_STUDIO_POINT_WIDTH = 0.5  # the drawn radius, in percent of the image width


@dataclass
class CocoContext:
    """What a COCO input fixes for the output: its keypoint category and its images' ids by file name."""

    category: dict | None = None
    image_ids: dict[str, int] = field(default_factory=dict)

    def image_id(self, file_name: str) -> int | None:
        """The input's id of ``file_name`` (matched on the trailing path parts, as COCO tools store names)."""
        for name, image_id in self.image_ids.items():
            if same_file(Path(file_name), name) or same_file(Path(name), file_name):
                return image_id
        return None


def same_file(image_path: Path, file_name: str) -> bool:
    """``file_name`` names ``image_path`` when it equals the last parts of the path (``dog.jpg``, ``set/dog.jpg``)."""
    parts = Path(file_name).parts
    return bool(parts) and Path(image_path).parts[-len(parts):] == parts


def coco_context(data: dict | None) -> CocoContext:
    """The category with keypoints (the first one) and the ``file_name -> id`` map of a COCO document."""
    if not isinstance(data, dict) or "annotations" not in data:
        return CocoContext()
    categories = [entry for entry in data.get("categories") or [] if isinstance(entry, dict) and entry.get("keypoints")]
    category = None
    if categories:
        first = categories[0]
        category = {"id": first.get("id", 1), "name": first.get("name", "object"),
                    "supercategory": first.get("supercategory", first.get("name", "object")),
                    "keypoints": list(first["keypoints"]), "skeleton": list(first.get("skeleton") or [])}
    ids = {str(entry["file_name"]): int(entry["id"]) for entry in data.get("images") or []
           if isinstance(entry, dict) and "file_name" in entry and isinstance(entry.get("id"), int)}
    return CocoContext(category, ids)


def read_coco_context(points_file) -> CocoContext:
    """The category and image ids of a COCO points file (empty for the other formats)."""
    path = Path(points_file)
    if path.suffix.lower() != ".json":
        return CocoContext()
    return coco_context(read_json_file(path, "points file"))


def read_annotation(points_file, image_path):
    """The keypoints of ``image_path`` in ``points_file``: returns (points (N, 2), visible (N,), names or None).

    Formats: COCO keypoints JSON (the first annotation of the image whose ``file_name`` matches the end of
    ``image_path``; a file with a single image needs no match; v > 0 = labelled), a JSON list of [x, y, v] rows, and
    everything ``corrmark.io.read_points_file`` reads ([[x, y], ...], {"points": ..., "names": ...}, CSV/TXT x,y),
    where every point is labelled. Every format's schema is checked: a file that does not fit it is one
    ``InvalidKeypointsError`` naming the file and what is wrong, never a reshaped guess.
    """
    path = Path(points_file)
    if path.suffix.lower() == ".json":
        data = read_json_file(path, "points file")
        if isinstance(data, dict) and "annotations" in data:
            return _read_coco_annotation(data, path, Path(image_path))
        if isinstance(data, list) and data and isinstance(data[0], list) and len(data[0]) == 3:
            triples = point_rows(data, path, (3,))  # [x, y, v] rows
            return triples[:, :2], triples[:, 2] > 0, None
        points, names = points_from_json(data, path)  # parsed once, not read again
    else:
        points, names = read_points_document(path)
    return points, np.ones(len(points), dtype=bool), names


def _read_coco_annotation(data: dict, path: Path, image_path: Path):
    images, annotations = data.get("images", []), data["annotations"]
    for key, value in (("images", images), ("annotations", annotations), ("categories", data.get("categories", []))):
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise InvalidKeypointsError(f"COCO file {path}: '{key}' must be a list of objects")
    matching = [entry for entry in images if same_file(image_path, str(entry.get("file_name", "")))]
    if matching:
        image_id = matching[0].get("id")
    elif len(images) <= 1:
        image_id = images[0].get("id") if images else None
    else:
        raise InvalidKeypointsError(f"{path} has no image whose file_name matches {image_path.name}")
    annotations = [entry for entry in annotations
                   if "keypoints" in entry and (image_id is None or entry.get("image_id") == image_id)]
    if not annotations:
        raise InvalidKeypointsError(f"{path} has no keypoint annotation for {image_path.name}")
    values = annotations[0]["keypoints"]
    if not (isinstance(values, list) and len(values) % 3 == 0 and all_real_numbers(values)):
        raise InvalidKeypointsError(f"COCO file {path}: 'keypoints' must be a flat list of numbers [x, y, v, ...] "
                                    f"(a multiple of 3), got {len(values) if isinstance(values, list) else values!r}")
    triples = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    names = _coco_keypoint_names(data, annotations[0])
    if names is not None and len(names) != len(triples):
        raise InvalidKeypointsError(f"COCO file {path}: the category names {len(names)} keypoints, the annotation "
                                    f"holds {len(triples)}")
    return triples[:, :2], triples[:, 2] > 0, names


def _coco_keypoint_names(data: dict, annotation: dict):
    """The keypoint names of the annotation's category (or of the only category, when it names none)."""
    categories = [entry for entry in data.get("categories") or [] if entry.get("keypoints")]
    for category in categories:
        if category.get("id") == annotation.get("category_id"):
            return list(category["keypoints"])
    if "category_id" not in annotation and len(categories) == 1:
        return list(categories[0]["keypoints"])
    return None


def coco_keypoints(points: np.ndarray, flags: np.ndarray, present: np.ndarray) -> list:
    """Flat COCO ``[x, y, v, ...]``; absent points are (0, 0, 0) as COCO expects."""
    flat = []
    for (x, y), flag, here in zip(points, flags, present):
        flat.extend([round(float(x), 2), round(float(y), 2), int(flag)] if here else [0, 0, 0])
    return flat


def box_and_area(points: np.ndarray) -> dict:
    """COCO ``bbox`` ([x, y, w, h]) and ``area`` of the box around ``points`` (zeros for none)."""
    if len(points) == 0:
        return {"bbox": [0, 0, 0, 0], "area": 0}
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    return {"bbox": [round(float(v), 2) for v in (*low, width, height)], "area": round(float(width * height), 2)}


def coco_points(annotation: dict) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 2) with NaN where v = 0, scores (N,)) of a COCO keypoint annotation."""
    triples = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
    points = np.where(triples[:, 2:] > 0, triples[:, :2], np.nan)
    return points, np.asarray(annotation.get("keypoint_scores", triples[:, 2] > 0), dtype=np.float64)


def label_studio_tasks(coco: dict, image_url_prefix: str = "", model_version: str = "corrmark") -> list[dict]:
    """Label Studio tasks with predictions from a COCO keypoints document (one task per image, in its order).

    ``data.image`` is ``image_url_prefix + file_name`` (e.g. ``/data/local-files/?d=dogs/`` for Label Studio's local
    storage). Each labelled point becomes a ``keypointlabels`` region with ``score`` = its ``keypoint_scores`` entry;
    the prediction's ``score`` is the annotation's mean score.
    """
    names = _keypoint_names(coco)
    by_image: dict[int, list[dict]] = {}
    for annotation in coco.get("annotations", []):
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    tasks = []
    for image in coco.get("images", []):
        width, height = int(image["width"]), int(image["height"])
        regions, scores = [], []
        for annotation in by_image.get(image["id"], []):
            points, point_scores = coco_points(annotation)
            scores.append(float(annotation.get("score", 1.0)))
            for index, ((x, y), score) in enumerate(zip(points, point_scores)):
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                regions.append({
                    "id": f"{image['id']}_{annotation['id']}_{index}", "type": "keypointlabels",
                    "from_name": LABEL_STUDIO_FROM_NAME, "to_name": LABEL_STUDIO_TO_NAME,
                    "original_width": width, "original_height": height, "image_rotation": 0,
                    "score": round(float(score), 4),
                    "value": {"x": round(100.0 * (x + 0.5) / width, 4), "y": round(100.0 * (y + 0.5) / height, 4),
                              "width": LABEL_STUDIO_POINT_WIDTH, "keypointlabels": [names[index]]},
                })
        tasks.append({"data": {"image": f"{image_url_prefix}{image['file_name']}"},
                      "predictions": [{"model_version": model_version, "result": regions,
                                       "score": round(float(np.mean(scores)), 4) if scores else 0.0}]})
    return tasks


def read_label_studio_points(tasks: list, keypoint_names: list[str]) -> dict[str, np.ndarray]:
    """``{data.image: points (K, 2)}`` back from Label Studio tasks (predictions, or annotations where present);
    a keypoint without a region is NaN. Inverts ``label_studio_tasks``."""
    if not isinstance(tasks, list):
        raise InvalidKeypointsError("a Label Studio file is a JSON list of tasks")
    result = {}
    for task in tasks:
        entries = (task.get("annotations") or task.get("predictions") or [{}]) if isinstance(task, dict) else None
        if entries is None or "data" not in task:
            raise InvalidKeypointsError("every Label Studio task needs 'data' and 'predictions' or 'annotations'")
        points = np.full((len(keypoint_names), 2), np.nan)
        for region in entries[0].get("result", []):
            value = region.get("value", {})
            label = (value.get("keypointlabels") or [None])[0]
            if label in keypoint_names:
                points[keypoint_names.index(label)] = (value["x"] / 100.0 * region["original_width"] - 0.5,
                                                       value["y"] / 100.0 * region["original_height"] - 0.5)
        result[str(task["data"].get("image"))] = points
    return result


def _keypoint_names(coco: dict) -> list[str]:
    categories = [entry for entry in coco.get("categories", []) if entry.get("keypoints")]
    return list(categories[0]["keypoints"]) if categories else []
