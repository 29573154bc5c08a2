"""The propagation run: every image of a folder in turn, saved as it goes, resumable, stopped cleanly."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import CorrmarkError, ImageReadError, InvalidKeypointsError
from ..formats import VISIBLE_THRESHOLD, CocoContext
from ..io import check_output_file
from ..models.base import Matcher
from ..viz import save_image
from ..viz.propagation import draw_propagation
from .confidence import combine_proposals, transfer_with_confidence
from .gallery import figure_path, write_gallery
from .inputs import AnnotatedImage, list_images, load_annotated
from .output import PropagationOutput
from .reading import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, check_reading_options, read_images
from .shards import merge_shard_documents, merge_summary, shard_path, shard_record, write_merged

MIN_IMAGE_SIDE = 8  # px; smaller images carry no usable detail for any backbone
SAVE_EVERY = 10
# Errors that mark one image as failed; anything else (a bug, an interrupt) stops the run after saving.
IMAGE_FAILURES = (CorrmarkError, ValueError, RuntimeError, OSError)
# A sharded run's ranks wait for each other only at the end; a resumed rank may finish long before the others.
SHARD_WAIT_MINUTES = 24 * 60.0


def propagate_keypoints(matcher: Matcher, annotated, images, out_path: str | os.PathLike,
                        gallery_dir: str | os.PathLike | None = None, resume: bool = True, progress: bool = True, *,
                        keypoint_names: Sequence[str] | None = None, category: str = "object",
                        recursive: bool = False, save_every: int = SAVE_EVERY, limit: int | None = None,
                        on_image: Callable[[str], None] | None = None, coco: CocoContext | None = None,
                        visible_threshold: float = VISIBLE_THRESHOLD, label_studio: str | os.PathLike | None = None,
                        image_url_prefix: str = "", workers: int = DEFAULT_WORKERS,
                        batch_size: int = DEFAULT_BATCH_SIZE, distributed=None,
                        shard: tuple[int, int] | None = None) -> dict:
    """Transfer the keypoints of ``annotated`` to every image of ``images`` and write COCO keypoints JSON.

    ``annotated``: (image path, points (N, 2)[, visible (N,)]) items. ``images``: a folder (its images, sorted;
    ``recursive`` for subfolders) or a list of paths; ``file_name`` in the output is relative to the folder (for a
    list: to the paths' common folder). ``limit`` processes at most that many new images (then the output is a
    valid partial result that a later run resumes); ``on_image(file_name)`` is called after each image. ``coco``:
    the category and image ids to keep from a COCO input (``read_coco_context``). ``label_studio``: also write Label
    Studio predictions there (``data.image`` = ``image_url_prefix`` + file name). See the ``corrmark.propagate``
    docstring for confidence, visibility, combination, resume and failures. Returns a summary of the run.

    ``workers`` > 0 decodes the next images in that many DataLoader worker processes, ``batch_size`` at a time,
    while the current one is matched (``propagate.reading``); the output is the same. ``distributed``: None runs
    sharded under torchrun (detected from its environment), False never, or a ``DistributedSetup``: each process
    propagates its shard (``propagate.shards``) into its own resumable file and rank 0 merges them into
    ``out_path``, byte for byte the single-process output. ``shard=(rank, world_size)`` runs one shard alone
    (another machine's job, no process group) and writes only its shard file; ``merge_shard_files`` joins them.
    """
    started = time.perf_counter()
    if save_every < 1:
        raise CorrmarkError(f"save_every must be at least 1, got {save_every}")
    check_reading_options(workers, batch_size)
    place = _place_in_run(distributed, shard)
    sources = load_annotated(annotated)
    root, paths = _resolve_images(images, recursive)
    for path in (out_path, label_studio):  # before any matching: a run must not find out at its first save
        if path is not None:
            check_output_file(path)
    names = list(keypoint_names) if keypoint_names else [f"kp{i}" for i in range(len(sources[0].points))]
    if len(names) != len(sources[0].points):
        raise InvalidKeypointsError(f"{len(names)} keypoint names for {len(sources[0].points)} keypoints")
    job = _Job(matcher, sources, root, names, category, coco or CocoContext(), visible_threshold, resume,
               progress, save_every, limit, on_image, workers, batch_size,
               Path(gallery_dir) if gallery_dir is not None else None)
    if place is None:
        output = job.output(out_path, label_studio, image_url_prefix)
        done = job.run(output, paths)
        gallery = job.gallery(output.coco, out_path)
        summary = {**_counts(job, output, paths, done, out_path), "gallery": gallery}
    else:
        summary = _propagate_shard(job, paths, out_path, label_studio, image_url_prefix, *place)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}


@dataclass
class _Job:
    """What a run propagates with and how it goes, the same for every image and every shard."""

    matcher: Matcher
    sources: list[AnnotatedImage]
    root: Path
    keypoint_names: list[str]
    category: str
    context: CocoContext
    visible_threshold: float
    resume: bool
    progress: bool
    save_every: int
    limit: int | None
    on_image: Callable[[str], None] | None
    workers: int
    batch_size: int
    gallery_dir: Path | None

    def output(self, path, label_studio=None, image_url_prefix: str = "", shard=None) -> PropagationOutput:
        return PropagationOutput(Path(path), self.matcher, self.sources, self.keypoint_names, self.category,
                                 self.root, self.resume, self.context, self.visible_threshold, label_studio,
                                 image_url_prefix, shard)

    def run(self, output: PropagationOutput, paths: list[Path]) -> int:
        """Propagate to the ``paths`` that ``output`` does not hold yet (at most ``limit``); the number taken."""
        todo = [path for path in paths if _file_name(path, self.root) not in output.done]
        if self.limit is not None:
            todo = todo[:self.limit]
        figures = self.gallery_dir / "figures" if self.gallery_dir is not None else None
        restore_sigterm = _sigterm_as_interrupt()  # before the reader starts: its workers inherit it
        try:
            with contextlib.closing(read_images(todo, IMAGE_FAILURES, self.workers, self.batch_size)) as reader:
                bar = tqdm(reader, total=len(todo), desc="propagate", unit="image", disable=not self.progress)
                for count, (path, target, reason) in enumerate(bar, 1):
                    file_name = _file_name(path, self.root)
                    _propagate_one(self.matcher, self.sources, path, file_name, target, reason, output, figures)
                    if self.on_image is not None:
                        self.on_image(file_name)
                    if count % self.save_every == 0:
                        output.save()
        finally:
            output.save()  # an interrupted run (Ctrl-C, SIGTERM) keeps every finished image
            restore_sigterm()
        return len(todo)

    def gallery(self, coco: dict, title) -> str | None:
        if self.gallery_dir is None:
            return None
        return str(write_gallery(coco, self.sources, self.root, self.gallery_dir, title=str(title)))


def _counts(job: _Job, output: PropagationOutput, paths: list[Path], taken: int, out_path) -> dict:
    """The summary of one output after a run that took ``taken`` images."""
    attempted = output.attempted()
    return {"out": str(out_path), "images": len(paths), "propagated": taken - output.new_failures,
            "skipped": len(paths) - taken, "failed": len(output.coco["failed"]),
            "remaining": sum(_file_name(path, job.root) not in attempted for path in paths),
            "mean_score": output.mean_score()}


def _place_in_run(distributed, shard) -> tuple | None:
    """(process-group setup or None, rank, world size) of a sharded run; None for a single-process run."""
    from ..train.distributed import resolve_setup

    setup = resolve_setup(distributed)
    if shard is not None:
        if setup is not None:
            raise CorrmarkError("shard= runs one shard alone; it cannot be combined with a distributed run")
        rank, world_size = shard
        if not (isinstance(rank, int) and isinstance(world_size, int) and 0 <= rank < world_size):
            raise CorrmarkError(f"shard must be (rank, world size) with 0 <= rank < world size, got {shard!r}")
        return None, rank, world_size
    if setup is None:
        return None
    if distributed is None:  # detected from torchrun's environment: give slow shards time
        setup = dataclasses.replace(setup, timeout_minutes=max(setup.timeout_minutes, SHARD_WAIT_MINUTES))
    return setup, setup.rank, setup.world_size


def _propagate_shard(job: _Job, paths: list[Path], out_path, label_studio, image_url_prefix: str, setup,
                     rank: int, world_size: int) -> dict:
    """This process's shard into its own file; then, in a distributed run, rank 0 merges every shard."""
    from ..train.distributed import broadcast_from_main, process_group

    if setup is not None and not setup.is_main:
        job = dataclasses.replace(job, progress=False)  # one progress bar: rank 0's
    with process_group(setup, "cpu"):  # gloo: only Python objects travel
        names = broadcast_from_main([_file_name(path, job.root) for path in paths], setup)  # one list for all
        first_new_id = max(job.context.image_ids.values(), default=0) + 1
        record = shard_record(names, rank, world_size, first_new_id)
        mine = [job.root / name for name in record["file_names"]]
        output = job.output(shard_path(out_path, rank, world_size), shard=record)
        taken = job.run(output, mine)
        summary = {**_counts(job, output, mine, taken, output.path), "rank": rank, "world_size": world_size}
        if setup is None:
            return summary
        gathered = _gather_on_main((output.coco, summary), setup)
    if not setup.is_main:
        return summary
    merged = merge_shard_documents([document for document, _ in gathered])
    write_merged(merged, out_path, label_studio, image_url_prefix)
    counts = merge_summary(merged, names, out_path)
    return {"out": str(out_path), "images": counts["images"],
            "propagated": sum(part["propagated"] for _, part in gathered),
            "skipped": sum(part["skipped"] for _, part in gathered), "failed": counts["failed"],
            "remaining": counts["remaining"], "mean_score": counts["mean_score"],
            "gallery": job.gallery(merged, out_path), "world_size": world_size}


def _gather_on_main(value, setup) -> list | None:
    """Every rank's ``value`` on rank 0 (in rank order), None elsewhere."""
    import torch.distributed as dist

    gathered = [None] * setup.world_size if setup.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


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


def _propagate_one(matcher, sources, path: Path, file_name: str, target, reason, output: PropagationOutput,
                   figures) -> None:
    """Propagate to one image, read as ``target`` (or not, for ``reason``), and record it (or its failure)."""
    if reason is not None:
        output.add_failure(file_name, reason)
        return
    try:
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
