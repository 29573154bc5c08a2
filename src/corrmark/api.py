"""High-level tasks built on the two interfaces: matching one pair with everything a person wants to see."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .formats import read_annotation
from .io import ImageLike, prepare_output_dir, read_image, write_json_atomic
from .models.base import Matcher
from .viz import blend, draw_matches, save_image, warp_image


def match_pair(matcher: Matcher, source: ImageLike, target: ImageLike, out_dir: str | os.PathLike,
               points_file: str | os.PathLike | None = None) -> dict:
    """Match ``source`` to ``target`` and write into ``out_dir``:

    - ``mapping.npy``: (H_t, W_t, 2) float32, the source (x, y) of every target pixel;
    - ``warped_source.png``: the source warped onto the target; ``overlay.png``: that warp blended with the target;
    - with ``points_file``: ``points.json`` (source and transferred target points, keypoint names and visibility
      when the file has them) and ``matches.png``. The points file takes every format of ``corrmark propagate``
      (COCO keypoints, ``[x, y, v]`` rows, ``{"points": ..., "names": ...}``, ``[[x, y], ...]``, CSV); points that
      are not labelled (v = 0) are not transferred (``null`` in ``target_points``).
    Returns a summary of what was written.
    """
    source_image, target_image = read_image(source), read_image(target)
    annotation = None
    if points_file is not None:  # read first: fail early on a bad file
        annotation = read_annotation(points_file, source if isinstance(source, (str, os.PathLike)) else "")
    out_dir = prepare_output_dir(out_dir)  # after the inputs: a bad input leaves no empty folder behind

    mapping = matcher.estimate_mapping(source_image, target_image)
    _save_npy(out_dir / "mapping.npy", np.asarray(mapping, dtype=np.float32))  # float32 already: no copy
    warped = warp_image(source_image, mapping)
    save_image(warped, out_dir / "warped_source.png")
    save_image(blend(target_image, warped), out_dir / "overlay.png")
    summary = {"mapping": str(out_dir / "mapping.npy"), "warped_source": str(out_dir / "warped_source.png"),
               "overlay": str(out_dir / "overlay.png")}
    if annotation is not None:
        points, visible, names = annotation
        transferred = matcher.transfer_keypoints(source_image, target_image, points[visible])
        target_points: list = [None] * len(points)
        for index, point in zip(np.flatnonzero(visible), transferred.tolist()):
            target_points[index] = point
        write_json_atomic(out_dir / "points.json", {
            "source": str(source) if isinstance(source, (str, os.PathLike)) else None,
            "target": str(target) if isinstance(target, (str, os.PathLike)) else None,
            "names": list(names) if names else None, "visible": visible.tolist(),
            "source_points": points.tolist(), "target_points": target_points, "matcher": matcher.describe(),
        })
        save_image(draw_matches(source_image, target_image, points[visible], transferred), out_dir / "matches.png")
        summary.update(points=str(out_dir / "points.json"), matches=str(out_dir / "matches.png"))
    return summary


def _save_npy(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    np.save(temporary, array)
    os.replace(temporary, path)
