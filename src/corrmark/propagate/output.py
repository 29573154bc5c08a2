"""The COCO document a propagation builds: what it records per image, how a run resumes it, and its atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CorrmarkError
from ..formats import CocoContext, box_and_area, coco_keypoints, label_studio_tasks
from ..io import write_json_atomic
from ..models.base import Matcher
from .confidence import COMBINATION_RULE, CONFIDENCE_RULE
from .inputs import AnnotatedImage


class PropagationOutput:
    """The COCO document being built, its resume logic and its atomic writes."""

    def __init__(self, path: Path, matcher: Matcher, sources: list[AnnotatedImage], names: list[str],
                 category: str, root: Path, resume: bool, context: CocoContext, visible_threshold: float,
                 label_studio=None, image_url_prefix: str = "", shard: dict | None = None):
        self.path, self.context, self.visible_threshold = path, context, float(visible_threshold)
        self.label_studio, self.image_url_prefix = label_studio, image_url_prefix
        self.settings = _round_trip({
            "matcher": matcher.describe(), "keypoint_names": names, "visible_threshold": self.visible_threshold,
            "annotated_keypoints": [coco_keypoints(s.points, np.full(len(s.points), 2.0), s.visible)
                                    for s in sources]})
        kept = dict(context.category or {})
        self.category = {"id": kept.get("id", 1), "name": kept.get("name", category),
                         "supercategory": kept.get("supercategory", category), "keypoints": names,
                         "skeleton": kept.get("skeleton", [])}
        self.coco = {
            "info": {"description": "keypoints propagated by corrmark propagate", "confidence": CONFIDENCE_RULE,
                     "combination": COMBINATION_RULE, "images_root": str(root),
                     "annotated_images": [str(s.path) for s in sources], "settings": self.settings},
            "images": [], "annotations": [],
            "categories": [self.category],
            "failed": [],
        }
        if shard is not None:
            self.coco["shard"] = shard  # where this part sits in a sharded run (propagate.shards)
        self.new_failures = 0
        if resume and path.is_file():
            self._resume(path)
        if shard is not None:
            self._retain(set(shard["file_names"]))
        self.done = {image["file_name"] for image in self.coco["images"]}
        taken = [image["id"] for image in self.coco["images"]] + list(context.image_ids.values())
        self.next_id = max(taken, default=0) + 1  # for images the input does not list
        self.next_annotation_id = max((entry["id"] for entry in self.coco["annotations"]), default=0) + 1

    def _resume(self, path: Path) -> None:
        try:
            previous = json.loads(path.read_text())
            previous_settings = previous["info"]["settings"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise CorrmarkError(f"cannot resume: {path} is not a corrmark propagate output (use --no-resume to "
                                f"overwrite it)") from None
        if previous_settings != self.settings:
            changed = [key for key in self.settings if previous_settings.get(key) != self.settings[key]]
            raise CorrmarkError(f"cannot resume {path}: it was made with a different {', '.join(changed)} (use "
                                f"--no-resume to overwrite it, or another --out)")
        for key in ("images", "annotations", "failed"):
            self.coco[key] = previous.get(key, [])

    def _retain(self, file_names: set[str]) -> None:
        """Forget images outside ``file_names`` (a resumed shard whose folder changed since: they are another's)."""
        kept = [index for index, image in enumerate(self.coco["images"]) if image["file_name"] in file_names]
        self.coco["images"] = [self.coco["images"][index] for index in kept]
        self.coco["annotations"] = [self.coco["annotations"][index] for index in kept]  # one per image, in step
        self.coco["failed"] = [entry for entry in self.coco["failed"] if entry["file_name"] in file_names]

    def add_image(self, file_name: str, shape, points, confidence, similarity, source_index) -> dict:
        self._forget_failure(file_name)
        image_id = self.context.image_id(file_name)
        if image_id is None:
            image_id, self.next_id = self.next_id, self.next_id + 1
        annotation_id, self.next_annotation_id = self.next_annotation_id, self.next_annotation_id + 1
        found = source_index >= 0
        flags = np.where(confidence >= self.visible_threshold, 2.0, 1.0)
        annotation = {
            "id": annotation_id, "image_id": image_id, "category_id": self.category["id"],
            "keypoints": coco_keypoints(points, flags, found),
            "num_keypoints": int(found.sum()),
            "score": round(float(confidence[found].mean()), 4) if found.any() else 0.0,
            "keypoint_scores": [round(float(c), 4) for c in np.where(found, confidence, 0.0)],
            "keypoint_sources": [int(i) for i in source_index],
            **box_and_area(points[found]), "iscrowd": 0,
        }
        if similarity is not None:
            annotation["keypoint_similarities"] = [round(float(s), 4) if f and np.isfinite(s) else None
                                                   for s, f in zip(similarity, found)]
        self.coco["images"].append({"id": image_id, "file_name": file_name, "height": int(shape[0]),
                                    "width": int(shape[1])})
        self.coco["annotations"].append(annotation)
        self.done.add(file_name)
        return annotation

    def add_failure(self, file_name: str, reason: str) -> None:
        self._forget_failure(file_name)
        self.coco["failed"].append({"file_name": file_name, "reason": reason})
        self.new_failures += 1

    def _forget_failure(self, file_name: str) -> None:
        self.coco["failed"] = [entry for entry in self.coco["failed"] if entry["file_name"] != file_name]

    def attempted(self) -> set[str]:
        """Images propagated or failed so far (a later run skips the first and retries the second)."""
        return self.done | {entry["file_name"] for entry in self.coco["failed"]}

    def mean_score(self) -> float | None:
        return mean_score(self.coco)

    def save(self) -> None:
        write_json_atomic(self.path, self.coco)
        if self.label_studio is not None:
            write_json_atomic(self.label_studio, label_studio_tasks(self.coco, self.image_url_prefix))


def mean_score(coco: dict) -> float | None:
    """The mean of the images' scores, as a run's summary reports it."""
    scores = [annotation["score"] for annotation in coco["annotations"]]
    return round(float(np.mean(scores)), 4) if scores else None


def _round_trip(value):
    """``value`` as it reads back from JSON (tuples become lists), so a resumed run compares like with like."""
    return json.loads(json.dumps(value))
