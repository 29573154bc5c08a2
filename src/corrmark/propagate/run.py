"""The propagation run: every image of a folder in turn, saved as it goes, resumable, stopped cleanly."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import CorrmarkError, ImageReadError, InvalidKeypointsError
from ..formats import VISIBLE_THRESHOLD, CocoContext
from ..io import check_output_file, read_image
from ..models.base import Matcher
from ..viz import save_image
from ..viz.propagation import draw_propagation
from .confidence import combine_proposals, transfer_with_confidence
from .gallery import figure_path, write_gallery
from .inputs import AnnotatedImage, list_images, load_annotated
from .output import PropagationOutput

MIN_IMAGE_SIDE = 8  # px; smaller images carry no usable detail for any backbone
SAVE_EVERY = 10
# Errors that mark one image as failed; anything else (a bug, an interrupt) stops the run after saving.
IMAGE_FAILURES = (CorrmarkError, ValueError, RuntimeError, OSError)


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
    Studio predictions there (``data.image`` = ``image_url_prefix`` + file name). See the ``corrmark.propagate``
    docstring for confidence, visibility, combination, resume and failures. Returns a summary of the run.
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


def _propagate_one(matcher, sources, path: Path, file_name: str, output: PropagationOutput, figures) -> None:
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
