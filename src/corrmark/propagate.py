"""Keypoint propagation: transfer the keypoints of one or a few annotated images to every image of a folder.

``propagate_keypoints(matcher, annotated, images, out_path)`` works with any ``Matcher`` and writes COCO keypoints JSON
(see docs/PROPAGATE.md). The rules, in one place:

- **Confidence** of a point (in (0, 1]) is forward-backward cycle consistency: the point p of an annotated image goes
  to q in the target, q goes back to p' in the annotated image, and ``confidence = exp(-||p - p'|| / s)`` with
  ``s = 0.05 x`` the diagonal of the box around that annotated image's labelled keypoints (the image diagonal when
  the box is degenerate, e.g. a single point). A point that comes back 5% of the object's size away scores 0.37.
  A point the matcher sends off the target image (or to NaN) is not predicted: v = 0, confidence 0.
- **Several annotated images**: every annotated image that labels a point proposes a location; the proposal with the
  highest confidence wins (ties: the earlier annotated image). ``keypoint_sources`` records which one won.
- **Matcher uncertainty**: the interface has none, so confidence is always cycle consistency. Matchers that also
  expose ``match_points(source, target, points) -> (points, similarity)`` (the zero-shot ``nn`` matcher) have that
  similarity of the winning proposal recorded in ``keypoint_similarities``, at no extra cost; it is not used for
  choosing.
- **Resume**: with ``resume=True`` an existing output made with the same matcher and annotations is continued: images
  already in it are skipped, failed ones are retried. The output is rewritten atomically every ``save_every`` images
  and when the run ends or is interrupted, so stopping loses at most the image in progress.
- **Bad images** (unreadable, smaller than ``MIN_IMAGE_SIDE``, or a matcher error on them) go to ``failed`` with the
  reason; the run goes on.
- **Visibility** in the output: ``v = 2`` for a point whose confidence is at least ``VISIBLE_THRESHOLD`` (exp(-1):
  its round trip came back within 5 % of the object's size), ``v = 1`` (labelled, not trusted) below it, ``v = 0``
  where nothing was predicted; ``keypoint_scores`` holds every confidence.
- **Formats**: COCO keypoints JSON; a COCO input's category (names, skeleton, id) and image ids are kept
  (``corrmark.formats``, e.g. a CVAT "COCO Keypoints 1.0" export). ``label_studio`` also writes Label Studio
  predictions (percent coordinates, a ``score`` per point).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .errors import CorrmarkError, ImageReadError, InvalidKeypointsError
from .formats import (  # noqa: F401 (read_annotation, read_coco_context: the propagate API, docs/API.md)
    VISIBLE_THRESHOLD, CocoContext, box_and_area, coco_keypoints, coco_points, label_studio_tasks,
    read_annotation, read_coco_context)
from .io import check_keypoints, check_output_file, points_inside, read_image, write_json_atomic
from .models.base import Matcher
from .viz import Report, colour, draw_points, save_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CYCLE_SCALE = 0.05  # cycle error, as a fraction of the annotated keypoint-box diagonal, that scores exp(-1)
MIN_IMAGE_SIDE = 8  # px; smaller images carry no usable detail for any backbone
SAVE_EVERY = 10
# Errors that mark one image as failed; anything else (a bug, an interrupt) stops the run after saving.
IMAGE_FAILURES = (CorrmarkError, ValueError, RuntimeError, OSError)
CONFIDENCE_RULE = (f"forward-backward cycle consistency: exp(-d / ({CYCLE_SCALE} * diagonal of the annotated "
                   f"keypoint box)), d = distance between an annotated point and its round trip through the target")
COMBINATION_RULE = "per point, the annotated image whose proposal has the highest confidence (ties: the earlier one)"
FIGURE_HEIGHT = 320


@dataclass
class AnnotatedImage:
    """One annotated image: ``points`` (N, 2) and ``visible`` (N,) bool (False = not labelled, not transferred)."""

    path: Path
    image: np.ndarray
    points: np.ndarray
    visible: np.ndarray


# --- inputs --------------------------------------------------------------------------------------------------------


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (by extension, case-insensitive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"images folder not found: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)


def load_annotated(items: Iterable[tuple]) -> list[AnnotatedImage]:
    """(image path, points (N, 2)[, visible (N,)]) items -> checked ``AnnotatedImage`` records (same N for all)."""
    records = []
    for item in items:
        path, points, visible = (*item, None) if len(item) == 2 else item
        image = read_image(path)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        visible = np.ones(len(points), bool) if visible is None else np.asarray(visible, bool).reshape(-1)
        if len(visible) != len(points):
            raise InvalidKeypointsError(f"{path}: {len(points)} points but {len(visible)} visibility flags")
        check_keypoints(points[visible], image.shape[:2], name=f"keypoints of {path}")
        records.append(AnnotatedImage(Path(path), image, points, visible))
    if not records:
        raise InvalidKeypointsError("propagation needs at least one annotated image")
    counts = {len(record.points) for record in records}
    if len(counts) != 1:
        raise InvalidKeypointsError(f"annotated images have different numbers of keypoints: {sorted(counts)}")
    return records


# --- confidence ----------------------------------------------------------------------------------------------------


def cycle_scale(points: np.ndarray, image_shape: tuple[int, int]) -> float:
    """The length s of the confidence rule: CYCLE_SCALE x the keypoint-box diagonal (image diagonal if degenerate)."""
    diagonal = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0))) if len(points) else 0.0
    if diagonal < 1.0:
        diagonal = float(np.hypot(*image_shape))
    return CYCLE_SCALE * diagonal


def transfer_with_confidence(matcher: Matcher, source: AnnotatedImage, target: np.ndarray):
    """Propose target locations for the source's labelled points.

    Returns (points (N, 2), confidence (N,), similarity (N,) or None); rows the source does not label or the matcher
    sends off the target are NaN with confidence 0.
    """
    count = len(source.points)
    points, confidence = np.full((count, 2), np.nan), np.zeros(count)
    similarity = np.full(count, np.nan) if hasattr(matcher, "match_points") else None
    labelled = np.flatnonzero(source.visible)
    if len(labelled) == 0:
        return points, confidence, similarity
    forward, forward_similarity = _transfer(matcher, source.image, target, source.points[labelled])
    on_target = points_inside(forward, target.shape[:2])
    if similarity is not None:
        similarity[labelled[on_target]] = forward_similarity[on_target]
    kept = labelled[on_target]
    if len(kept) == 0:
        return points, confidence, similarity
    back, _ = _transfer(matcher, target, source.image, forward[on_target])
    distances = np.linalg.norm(back - source.points[kept], axis=1)
    scale = cycle_scale(source.points[labelled], source.image.shape[:2])
    points[kept] = forward[on_target]
    confidence[kept] = np.nan_to_num(np.exp(-distances / scale), nan=0.0)  # a NaN round trip is no evidence
    return points, confidence, similarity


def _transfer(matcher: Matcher, source: np.ndarray, target: np.ndarray, points: np.ndarray):
    """Transfer points; also the matcher's own similarity per point when it offers one."""
    if hasattr(matcher, "match_points"):
        moved, similarity = matcher.match_points(source, target, points)
        return np.asarray(moved, dtype=np.float64).reshape(-1, 2), np.asarray(similarity, dtype=np.float64)
    return np.asarray(matcher.transfer_keypoints(source, target, points), dtype=np.float64).reshape(-1, 2), None


def combine_proposals(proposals: Sequence[tuple]):
    """Per point, the proposal (points, confidence, similarity) with the highest confidence.

    Returns (points, confidence, similarity or None, source index per point, -1 where no proposal has the point).
    """
    all_points = np.stack([p for p, _, _ in proposals])  # (S, N, 2)
    confidences = np.stack([confidence for _, confidence, _ in proposals])  # (S, N)
    # a missing proposal ranks below any real one, even one whose confidence underflowed to 0
    ranked = np.where(np.isfinite(all_points).all(axis=2), confidences, -1.0)
    best = ranked.argmax(axis=0)  # the first maximum: ties go to the earlier annotated image
    columns = np.arange(confidences.shape[1])
    points = all_points[best, columns]
    confidence = confidences[best, columns]
    similarity = None
    if proposals[0][2] is not None:
        similarity = np.stack([s for _, _, s in proposals])[best, columns]
    found = np.isfinite(points).all(axis=1)
    return points, np.where(found, confidence, 0.0), similarity, np.where(found, best, -1)


# --- the run -------------------------------------------------------------------------------------------------------


def propagate_keypoints(matcher: Matcher, annotated, images, out_path: str | os.PathLike,
                        gallery_dir: str | os.PathLike | None = None, resume: bool = True, progress: bool = True, *,
                        keypoint_names: Sequence[str] | None = None, category: str = "object",
                        recursive: bool = False, save_every: int = SAVE_EVERY, limit: int | None = None,
                        on_image: Callable[[str], None] | None = None, coco: CocoContext | None = None,
                        visible_threshold: float = VISIBLE_THRESHOLD, label_studio: str | os.PathLike | None = None,
                        image_url_prefix: str = "") -> dict:
    """Transfer the keypoints of ``annotated`` to every image of ``images`` and write COCO keypoints JSON.

    ``annotated``: (image path, points (N, 2)[, visible (N,)]) items. ``images``: a folder (its images, sorted;
    ``recursive`` for subfolders) or a list of paths; ``file_name`` in the output is relative to the folder (for a
    list: to the paths' common folder). ``limit`` processes at most that many new images (then the output is a
    valid partial result that a later run resumes); ``on_image(file_name)`` is called after each image. ``coco``:
    the category and image ids to keep from a COCO input (``read_coco_context``). ``label_studio``: also write Label
    Studio predictions there (``data.image`` = ``image_url_prefix`` + file name). See the module docstring for
    confidence, visibility, combination, resume and failures. Returns a summary of the run.
    """
    started = time.perf_counter()
    if save_every < 1:
        raise CorrmarkError(f"save_every must be at least 1, got {save_every}")
    sources = load_annotated(annotated)
    root, paths = _resolve_images(images, recursive)
    for path in (out_path, label_studio):  # before any matching: a run must not find out at its first save
        if path is not None:
            check_output_file(path)
    names = list(keypoint_names) if keypoint_names else [f"kp{i}" for i in range(len(sources[0].points))]
    if len(names) != len(sources[0].points):
        raise InvalidKeypointsError(f"{len(names)} keypoint names for {len(sources[0].points)} keypoints")
    output = PropagationOutput(Path(out_path), matcher, sources, names, category, root, resume,
                               coco or CocoContext(), visible_threshold, label_studio, image_url_prefix)
    todo = [path for path in paths if _file_name(path, root) not in output.done]
    if limit is not None:
        todo = todo[:limit]
    figures = Path(gallery_dir) / "figures" if gallery_dir is not None else None
    restore_sigterm = _sigterm_as_interrupt()
    try:
        for count, path in enumerate(tqdm(todo, desc="propagate", unit="image", disable=not progress), 1):
            file_name = _file_name(path, root)
            _propagate_one(matcher, sources, path, file_name, output, figures)
            if on_image is not None:
                on_image(file_name)
            if count % save_every == 0:
                output.save()
    finally:
        output.save()  # an interrupted run (Ctrl-C, SIGTERM) keeps every finished image
        restore_sigterm()
    gallery = write_gallery(output.coco, sources, root, gallery_dir, title=str(out_path)) if gallery_dir else None
    attempted = output.attempted()
    return {"out": str(out_path), "images": len(paths), "propagated": len(todo) - output.new_failures,
            "skipped": len(paths) - len(todo), "failed": len(output.coco["failed"]),
            "remaining": sum(_file_name(path, root) not in attempted for path in paths),
            "mean_score": output.mean_score(), "gallery": str(gallery) if gallery else None,
            "seconds": round(time.perf_counter() - started, 2)}


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Until the returned function is called, SIGTERM (a job scheduler's stop, ``kill``) interrupts like Ctrl-C, so
    the run saves what it has; outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _resolve_images(images, recursive: bool) -> tuple[Path, list[Path]]:
    if isinstance(images, (str, os.PathLike)):
        return Path(images), list_images(images, recursive)
    paths = sorted(Path(path) for path in images)
    if not paths:
        return Path("."), []
    common = Path(os.path.commonpath([str(path.absolute()) for path in paths]))
    return (common.parent if len(paths) == 1 else common), paths


def _file_name(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def _propagate_one(matcher, sources, path: Path, file_name: str, output: "PropagationOutput", figures) -> None:
    """Propagate to one image and record it (or its failure) in ``output``."""
    try:
        target = read_image(path)
        height, width = target.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE:
            raise ImageReadError(f"image is {width}x{height}; propagation needs at least {MIN_IMAGE_SIDE} px a side")
        own = [i for i, source in enumerate(sources) if _same_path(source.path, path)]
        result = _copy_annotation(sources[own[0]], own[0]) if own else combine_proposals(
            [transfer_with_confidence(matcher, source, target) for source in sources])
    except IMAGE_FAILURES as error:
        output.add_failure(file_name, f"{type(error).__name__}: {error}")
        return
    record = output.add_image(file_name, (height, width), *result)
    if figures is not None:
        save_image(draw_propagation(sources, record, target), figure_path(figures, file_name))


def _same_path(first: Path, second: Path) -> bool:
    return first.resolve() == second.resolve()


def _copy_annotation(source: AnnotatedImage, index: int):
    """An annotated image inside the folder keeps its own labels (confidence 1)."""
    points = np.where(source.visible[:, None], source.points, np.nan)
    confidence = source.visible.astype(np.float64)
    return points, confidence, None, np.where(source.visible, index, -1)


class PropagationOutput:
    """The COCO document being built, its resume logic and its atomic writes."""

    def __init__(self, path: Path, matcher: Matcher, sources: list[AnnotatedImage], names: list[str],
                 category: str, root: Path, resume: bool, context: CocoContext, visible_threshold: float,
                 label_studio=None, image_url_prefix: str = ""):
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
        self.new_failures = 0
        if resume and path.is_file():
            self._resume(path)
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
        scores = [annotation["score"] for annotation in self.coco["annotations"]]
        return round(float(np.mean(scores)), 4) if scores else None

    def save(self) -> None:
        write_json_atomic(self.path, self.coco)
        if self.label_studio is not None:
            write_json_atomic(self.label_studio, label_studio_tasks(self.coco, self.image_url_prefix))


def _round_trip(value):
    """``value`` as it reads back from JSON (tuples become lists), so a resumed run compares like with like."""
    return json.loads(json.dumps(value))


# --- gallery -------------------------------------------------------------------------------------------------------


def confidence_colour(confidence: float) -> tuple[int, int, int]:
    """Red (0) -> yellow (0.5) -> green (1)."""
    red, yellow, green = np.array([220, 40, 40]), np.array([240, 200, 40]), np.array([40, 180, 70])
    c = float(np.clip(confidence, 0, 1))
    colour = red + (yellow - red) * (c / 0.5) if c < 0.5 else yellow + (green - yellow) * ((c - 0.5) / 0.5)
    return tuple(int(v) for v in colour.round())


def draw_propagation(sources: list[AnnotatedImage], annotation: dict, target: np.ndarray) -> Image.Image:
    """The annotated image that gave most points (dots in keypoint colours) beside the target (dots coloured by
    confidence, numbered by keypoint), both scaled to FIGURE_HEIGHT."""
    points, scores = coco_points(annotation)
    used = [i for i in annotation["keypoint_sources"] if i >= 0]
    source = sources[max(set(used), key=used.count) if used else 0]
    left = _scaled(draw_points(source.image, np.where(source.visible[:, None], source.points, np.nan),
                               labels=range(len(source.points))))
    right = _scaled(_draw_confident_points(target, points, scores))
    canvas = Image.new("RGB", (left.width + right.width + 8, FIGURE_HEIGHT), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def _draw_confident_points(image: np.ndarray, points: np.ndarray, scores: np.ndarray) -> Image.Image:
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = max(3.0, max(image.shape[:2]) / 80)
    for index, ((x, y), score) in enumerate(zip(points, scores)):
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=confidence_colour(score),
                         outline=(255, 255, 255), width=1)
            draw.text((x + radius + 1, y - radius), str(index), fill=(255, 255, 255))
    return canvas


def _scaled(image: Image.Image) -> Image.Image:
    width = max(1, round(image.width * FIGURE_HEIGHT / image.height))
    return image.resize((width, FIGURE_HEIGHT), Image.BILINEAR)


def figure_path(figures_dir: Path, file_name: str) -> Path:
    return Path(figures_dir) / (file_name.replace("/", "__") + ".jpg")


def write_gallery(coco: dict, sources: list[AnnotatedImage], root: Path, gallery_dir, title: str = "") -> Path:
    """``gallery_dir/index.html``: every propagated image, least confident first, with the failures listed.

    Figures missing from ``gallery_dir/figures`` (images propagated by an earlier run without a gallery) are drawn
    from the output; nothing is matched again.
    """
    gallery_dir = Path(gallery_dir)
    figures_dir = gallery_dir / "figures"
    images = {image["id"]: image for image in coco["images"]}
    annotations = sorted(coco["annotations"], key=lambda annotation: annotation["score"])
    items = []
    for annotation in annotations:
        file_name = images[annotation["image_id"]]["file_name"]
        path = figure_path(figures_dir, file_name)
        if not path.is_file():
            try:
                save_image(draw_propagation(sources, annotation, read_image(root / file_name)), path)
            except ImageReadError:
                continue  # the image was moved or deleted since it was propagated
        caption = f"{file_name}: score {annotation['score']:.2f}, {annotation['num_keypoints']} points"
        items.append((path.relative_to(gallery_dir).as_posix(), caption))
    report = Report(f"Keypoint propagation {title}".strip())
    report.paragraph(f"{len(items)} images, least confident first. Left: the annotated image that gave most points; "
                     f"right: propagated points coloured by confidence (red 0, yellow 0.5, green 1), numbered by "
                     f"keypoint. Confidence: {CONFIDENCE_RULE}.")
    report.legend([(confidence_colour(value), f"confidence {value:g}") for value in (0.0, 0.25, 0.5, 0.75, 1.0)],
                  title="Right image, point colour")
    names = (coco.get("categories") or [{}])[0].get("keypoints") or []
    report.legend([(colour(index), f"{index} {name}") for index, name in enumerate(names)],
                  title="Keypoint numbers (left image: dot colours)")
    if coco["failed"]:
        report.table(["failed image", "reason"], [[e["file_name"], e["reason"]] for e in coco["failed"]])
    report.figures(items)
    return report.write(gallery_dir / "index.html")
