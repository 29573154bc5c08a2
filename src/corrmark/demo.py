"""``corrmark demo``: match the bundled example pairs with no network and no dataset, and write an HTML report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import DatasetError
from .eval.pck import pck_per_pair, threshold_length
from .io import read_image
from .models import load_matcher
from .viz import Report, blend, draw_matches, save_image, warp_image

# The matchers the demo shows, side by side: (label, load_matcher options).
DEMO_MATCHERS = [
    ("DINOv2-S block 8, nearest neighbour", {"preset": "dinov2-block8"}),
    ("best zero-shot: DINOv2 + EfficientNet, mutual NN, soft argmax", {"preset": "best"}),
]
ALPHA = 0.1


def examples_dir() -> Path:
    """The bundled examples: $CORRMARK_EXAMPLES, else ``examples/`` of the source checkout."""
    candidates = [os.environ.get("CORRMARK_EXAMPLES"), Path(__file__).resolve().parents[2] / "examples"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "pairs.json").is_file():
            return Path(candidate)
    raise DatasetError("bundled examples not found: set CORRMARK_EXAMPLES to a folder with pairs.json")


def run_demo(out_dir: str | os.PathLike = "corrmark-demo", device="cpu", progress: bool = True) -> Path:
    """Match every example pair with each demo matcher; returns the path of the HTML report."""
    out_dir = Path(out_dir)
    examples = examples_dir()
    pairs = json.loads((examples / "pairs.json").read_text())["pairs"]
    sections = [_run_matcher(label, load_matcher("nn", device=device, **options), pairs, examples, out_dir,
                             f"m{number}", progress)
                for number, (label, options) in enumerate(DEMO_MATCHERS)]
    report = Report("corrmark demo: zero-shot semantic correspondence")
    report.paragraph(f"{len(pairs)} bundled pairs (examples/README.md gives their source and licence). Each row: "
                     f"source keypoints transferred to the target (lines), rings = ground truth; then the source "
                     f"warped onto the target and blended with it. PCK@{ALPHA} uses the target's keypoint box (s2t).")
    report.table(["matcher", f"mean PCK@{ALPHA}", "seconds per pair"],
                 [[s["label"], s["mean_pck"], s["seconds"]] for s in sections], caption="Summary")
    for section in sections:
        report.heading(section["label"])
        report.paragraph(json.dumps(section["matcher"]), note=True)
        report.table(["pair", "category", f"PCK@{ALPHA}"], section["rows"])
        report.figures(section["figures"])
    return report.write(out_dir / "index.html")


def _run_matcher(label, matcher, pairs, examples, out_dir, stem, progress) -> dict:
    rows, figures, scores, seconds = [], [], [], []
    for index, pair in enumerate(tqdm(pairs, desc=label, disable=not progress)):
        started = time.perf_counter()
        pair_figures, score = _demo_pair(matcher, pair, examples, out_dir, f"{stem}_p{index}")
        seconds.append(time.perf_counter() - started)
        scores.append(score)
        figures.extend(pair_figures)
        rows.append([f"{Path(pair['source']).stem} -> {Path(pair['target']).stem}", pair["category"], score])
    return {"label": label, "matcher": matcher.describe(), "rows": rows, "figures": figures,
            "mean_pck": float(np.mean(scores)), "seconds": float(np.mean(seconds))}


def _demo_pair(matcher, pair: dict, examples: Path, out_dir: Path, stem: str):
    source, target = read_image(examples / pair["source"]), read_image(examples / pair["target"])
    source_points = np.asarray(pair["source_points"], dtype=float)
    target_points = np.asarray(pair["target_points"], dtype=float)
    predicted = matcher.transfer_keypoints(source, target, source_points)
    valid = np.ones(len(target_points), dtype=bool)
    length = threshold_length("kp-bbox", target.shape[:2], points=target_points, valid=valid)
    correct, total = pck_per_pair(predicted, target_points, valid, length, (ALPHA,))[ALPHA]
    score = correct / max(total, 1)
    save_image(draw_matches(source, target, source_points, predicted, target_points), out_dir / f"{stem}_matches.png")
    warped = warp_image(source, matcher.estimate_mapping(source, target))
    save_image(np.concatenate([warped, blend(target, warped)], axis=1), out_dir / f"{stem}_warp.png")
    caption = f"{pair['category']}: PCK@{ALPHA} = {score:.2f} ({correct}/{total})"
    return [(f"{stem}_matches.png", caption), (f"{stem}_warp.png", "source warped to target | blended with target")], score
