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
- **Reading ahead**: ``workers`` > 0 decodes the next images in DataLoader worker processes while one is matched
  (``batch_size`` at a time); matching stays one image at a time, so the output is the same byte for byte.
- **Shards**: under torchrun each process takes the images at positions ``rank::world_size`` of the sorted list,
  writes ``<out>.shard-<rank>-of-<world>.json`` (resumable like an output) and rank 0 merges them into ``out``, byte
  for byte the single-process output; ``shard=(rank, world)`` runs one shard alone and ``merge_shard_files`` joins
  shards copied together from several machines.
- **Formats**: COCO keypoints JSON; a COCO input's category (names, skeleton, id) and image ids are kept
  (``corrmark.formats``, e.g. a CVAT "COCO Keypoints 1.0" export). ``label_studio`` also writes Label Studio
  predictions (percent coordinates, a ``score`` per point).

Modules: ``inputs`` (annotated images, image folders), ``confidence`` (cycle consistency, combining proposals),
``output`` (the COCO document, resume, atomic writes), ``gallery`` (the HTML review page), ``reading`` (images
decoded ahead), ``shards`` (shard files and their merge), ``run`` (the loop, single-process or sharded);
the figures are drawn by ``corrmark.viz.propagation``.
"""

from __future__ import annotations

from ..formats import VISIBLE_THRESHOLD, CocoContext, coco_points, read_annotation, read_coco_context
from ..viz.propagation import FIGURE_HEIGHT, confidence_colour, draw_propagation
from .confidence import (COMBINATION_RULE, CONFIDENCE_RULE, CYCLE_SCALE, combine_proposals, cycle_scale,
                         transfer_with_confidence)
from .gallery import figure_path, write_gallery
from .inputs import IMAGE_EXTENSIONS, AnnotatedImage, list_images, load_annotated
from .output import PropagationOutput
from .reading import read_images
from .run import IMAGE_FAILURES, MIN_IMAGE_SIDE, SAVE_EVERY, propagate_keypoints
from .shards import merge_shard_documents, merge_shard_files, shard_path

__all__ = [
    "AnnotatedImage", "COMBINATION_RULE", "CONFIDENCE_RULE", "CYCLE_SCALE", "CocoContext", "FIGURE_HEIGHT",
    "IMAGE_EXTENSIONS", "IMAGE_FAILURES", "MIN_IMAGE_SIDE", "PropagationOutput", "SAVE_EVERY", "VISIBLE_THRESHOLD",
    "coco_points", "combine_proposals", "confidence_colour", "cycle_scale", "draw_propagation", "figure_path",
    "list_images", "load_annotated", "merge_shard_documents", "merge_shard_files", "propagate_keypoints",
    "read_annotation", "read_coco_context", "read_images", "shard_path", "transfer_with_confidence", "write_gallery",
]
