"""JLAD landmark error on AFLW (MTFL ``testing.txt``) for trained checkpoints; one JSON per row.

Protocol (``corrmark.eval.landmarks.evaluate_landmarks``, docs/JLAD.md): the K discovered landmarks of every image, in
pixels of the original image (``load_landmark_model("jlad", ...).detect``), are mapped by a linear regression without
bias (2K -> 10 numbers) fitted on the config's own training faces (its seeded subset of the ``training.txt`` of its
source root, which may be a centre-cropped copy, ``benchmarks/mtfl_center_crop.py``) to the 5 annotated landmarks;
error on the 2,995 AFLW test faces (``--test-limit`` for a seeded subset) divided by the inter-ocular distance
(annotated points 1 and 2), in percent, per landmark and mean. A checkpoint row is the command

    corrmark eval-landmarks mtfl --root ../shared/data/mtfl --fit-config CONFIG --checkpoint PATH --json OUT

(the same library call); this script runs it for several checkpoints of one config and adds what is script-only:

- ``diagnostics`` of every row (not the protocol): the regression fitted and tested inside one domain (AFLW first
  half -> second half; MTFL training faces likewise), which separates the framing change from the detector. With
  1,000 training faces the MTFL half holds 500, too few for a K = 30 regression (60 inputs): read that one for K = 10.
- ``--baseline fixed-grid``: K landmarks at fixed fractions of the image (a 2 x 5 grid for K = 10, ...): the error the
  regression reaches from the framing of the faces alone, with no detector at all.

Rows: ``--checkpoint PATH[=LABEL]`` (repeatable): a trained ``final.pt`` or ``checkpoints/step_*.pt``. Results go to
``benchmarks/results/jlad/<label>.json``; ``--figure`` draws the first 16 test faces (JPEG by default: small files).

Example::

    python benchmarks/jlad_mtfl.py --config configs/jlad_mtfl_k10.yaml \
        --checkpoint runs/jlad_mtfl_k10/final.pt=jlad_mtfl_k10 --figure benchmarks/results/jlad/jlad_mtfl_k10_aflw.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import SHARED_DATA, results_dir, write_script_result

from corrmark import load_landmark_model
from corrmark.cli.commands_landmarks import config_fit_images
from corrmark.config import load_config_file
from corrmark.data import open_image_dataset
from corrmark.eval.landmarks import evaluate_landmark_points, evaluate_landmarks
from corrmark.models.base import LandmarkModel
from corrmark.train.checkpoint import read_checkpoint

LANDMARK_NAMES = ["left eye", "right eye", "nose", "left mouth", "right mouth"]
REFERENCE = {"published_aflw_error_percent": 6.51, "published_setting": "JLAD, K=30, trained on CelebA"}


def fixed_grid_points(shapes: np.ndarray, count: int) -> np.ndarray:
    """K landmarks at fixed fractions of every image: a rows x columns lattice inside [0.2, 0.8]^2.

    ``shapes`` ``(N, 2)`` image (H, W) -> ``(N, K, 2)`` pixel (x, y)."""
    rows = int(np.floor(np.sqrt(count)))
    while count % rows:
        rows -= 1
    columns = count // rows
    fx = np.linspace(0.2, 0.8, columns)
    fy = np.linspace(0.2, 0.8, rows) if rows > 1 else np.array([0.5])
    fractions = np.array([(x, y) for y in fy for x in fx])
    sizes = np.asarray(shapes, dtype=np.float64)[:, ::-1]  # (W, H)
    return fractions[None] * sizes[:, None, :]


class FixedGrid(LandmarkModel):
    """A reference 'detector' that ignores the image: ``fixed_grid_points`` of every input."""

    name = "fixed-grid"

    def __init__(self, count: int):
        self.num_landmarks = int(count)

    def detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shapes = np.array([images.shape[-2:]] * len(images))
        points = torch.from_numpy(fixed_grid_points(shapes, self.num_landmarks))
        return torch.zeros(len(images), self.num_landmarks, 1, 1), points


def in_domain_errors(points: dict) -> dict:
    """Not the protocol: the same regression fitted and tested inside one domain (first half -> second half of the
    AFLW faces; of the MTFL training faces). The gap to the protocol number is what the MTFL -> AFLW change of
    framing costs; the AFLW-halves number is what the detector gives when the regression sees AFLW framing.
    ``points``: ``evaluate_landmarks(..., return_points=True)["points"]``."""
    def halves(discovered, annotated):
        half = len(discovered) // 2
        return evaluate_landmark_points(discovered[:half], annotated[:half], discovered[half:], annotated[half:],
                                        "inter-ocular")["mean_error"]

    return {"aflw_half_fit_percent": halves(points["test"], points["test_annotated"]),
            "mtfl_half_fit_percent": halves(points["train"], points["train_annotated"]),
            "note": "not the protocol: regression fitted on the first half of one set, tested on its second half"}


def rows_to_evaluate(args, count: int) -> list[tuple[str, str | None, LandmarkModel, dict]]:
    """``(label, checkpoint or None, model, what was evaluated)`` for the baseline and every ``--checkpoint``."""
    rows = []
    if args.baseline == "fixed-grid":
        rows.append((args.baseline_label or f"jlad_baseline_fixed_grid_k{count}", None, FixedGrid(count),
                     {"baseline": "fixed-grid", "K": count}))
    for spec in args.checkpoint:
        path, _, label = spec.partition("=")
        payload = read_checkpoint(path)
        model = load_landmark_model("jlad", path, device=args.device)
        rows.append((label or Path(path).parent.name + "_" + Path(path).stem, path, model,
                     {"checkpoint": path, "step": int(payload.get("step", -1)), "train_metrics": payload.get("metrics"),
                      "model": (payload.get("config") or {}).get("model")}))
    return rows


def figure_path(args, label: str, rows: int) -> Path | None:
    if not args.figure:
        return None
    figure = Path(args.figure)
    return figure.with_name(f"{figure.stem}_{label}{figure.suffix}") if rows > 1 else figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", action="append", default=[], help="PATH[=LABEL], repeatable")
    parser.add_argument("--baseline", choices=["fixed-grid"], default=None)
    parser.add_argument("--baseline-label", default=None, help="row name (default jlad_baseline_fixed_grid_k<K>)")
    parser.add_argument("--root", default=str(SHARED_DATA / "mtfl"))
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--json-dir", default=str(results_dir("jlad")))
    parser.add_argument("--figure", default=None, help="image of discovered landmarks on the first 16 test faces")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config_file(args.config)
    fit = config_fit_images(args.config)
    test = open_image_dataset("mtfl", args.root, "test", load_images=False)
    names = ("mtfl train (the config's training images)", "mtfl test (AFLW)")
    rows = rows_to_evaluate(args, int((config.get("model") or {}).get("num_landmarks", 10)))
    for label, path, model, evaluated in rows:
        figure = figure_path(args, label, len(rows)) if path is not None else None
        result = evaluate_landmarks(model, fit, test, "inter-ocular", (0, 1), test_limit=args.test_limit,
                                    batch_size=args.batch_size, figure=figure, progress=not args.quiet,
                                    dataset_names=names, return_points=True)
        diagnostics = in_domain_errors(result.pop("points"))
        metrics = {"mean_error_percent": result["mean_error"], "per_landmark_percent": result["per_landmark"],
                   "landmark_names": LANDMARK_NAMES}
        out = Path(args.json_dir) / f"{label}.json"
        write_script_result(out, metrics, result["protocol"], {**result["model"], "checkpoint": path},
                            config={"file": str(args.config), **{key: config.get(key) for key in
                                                                ("model", "schedule", "data", "loss", "train")}},
                            seconds=result["seconds"], argv=argv,
                            extra={"label": label, "train_images": result["train_images"],
                                   "test_images": result["test_images"], "evaluated": dict(evaluated, figure=figure),
                                   "diagnostics": diagnostics, "reference": REFERENCE})
        per = ", ".join(f"{value:.2f}" for value in result["per_landmark"])
        print(f"{label}: mean {result['mean_error']:.2f} % IOD (per landmark {per}); in-domain fits: AFLW halves "
              f"{diagnostics['aflw_half_fit_percent']:.2f}, MTFL halves {diagnostics['mtfl_half_fit_percent']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
