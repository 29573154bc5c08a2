"""Label-free check of landmark models: equivariance error under known synthetic warps (one JSON per checkpoint).

    PYTHONPATH=src python benchmarks/landmark_equivariance.py --dataset cub \
        --checkpoint runs/jlad_cub_k10/checkpoints/step_00000300.pt=jlad_cub_k10_pretrain

Images: a seeded subset of the test split (CUB test birds, or the AFLW faces of MTFL `testing.txt`), none of which a
training config reads. Each image and a warped copy (``corrmark.eval.landmarks.EQUIVARIANCE_WARP``) go through the
model; the error is how far the view's landmarks, carried back through the warp, land from the image's, in percent of
the image side (``landmark_equivariance``). Where annotations exist (faces) the regression error measures the same
models against ground truth; this number is what is left when there are none (birds).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def test_images(dataset: str, root: Path, limit: int, seed: int) -> list[str]:
    from corrmark.data import open_image_dataset

    split = "test"
    images = open_image_dataset("mtfl" if dataset == "mtfl" else "cub-unlabeled", root, split, load_images=False)
    chosen = np.random.default_rng(seed).choice(len(images), min(limit, len(images)), replace=False)
    return [str(images[int(index)]["path"]) for index in sorted(chosen)]


def fixed_grid_model(count: int):
    """A reference 'detector' that ignores the image: K points at fixed fractions (benchmarks/jlad_mtfl.py's grid)."""
    from jlad_mtfl import fixed_grid_points

    from corrmark.models.base import LandmarkModel

    class FixedGrid(LandmarkModel):
        def detect(self, images):
            shapes = np.array([images.shape[-2:]] * len(images))
            return torch.zeros(len(images), count, 1, 1), torch.from_numpy(fixed_grid_points(shapes, count))

        def describe(self):
            return {"name": "fixed-grid", "num_landmarks": count}

    return FixedGrid()


def main(argv=None) -> int:
    from corrmark import load_landmark_model
    from corrmark.eval.landmarks import landmark_equivariance
    from corrmark.io import write_json_atomic
    from corrmark.provenance import machine_info
    from corrmark.train.checkpoint import read_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="PATH[=LABEL], repeatable")
    parser.add_argument("--fixed-grid", type=int, default=None, metavar="K",
                        help="also score K points at fixed image positions (the warp's own displacement)")
    parser.add_argument("--dataset", choices=["mtfl", "cub"], default="cub")
    parser.add_argument("--root", default=None, help="default ../shared/data/mtfl or cub-birds-unlabeled")
    parser.add_argument("--limit", type=int, default=500, help="seeded test images")
    parser.add_argument("--size", type=int, default=224, help="square side the images and warps are made at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.root or DATA / ("mtfl" if args.dataset == "mtfl" else "cub-birds-unlabeled"))
    images = test_images(args.dataset, root, args.limit, args.seed)
    command = "PYTHONPATH=src python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    runs = [(spec.partition("=")[0], spec.partition("=")[2] or Path(spec.partition("=")[0]).stem)
            for spec in args.checkpoint]
    if args.fixed_grid:
        runs.append((None, f"{args.dataset}_fixed_grid_k{args.fixed_grid}"))
    for path, label in runs:
        if path is None:
            model = fixed_grid_model(args.fixed_grid)
        else:
            method = (read_checkpoint(path).get("config") or {}).get("method", "jlad")
            model = load_landmark_model(method, checkpoint=path)
        started = time.perf_counter()
        result = landmark_equivariance(model, images, size=args.size, seed=args.seed, progress=True)
        result.update({"command": command, "checkpoint": path, "dataset": f"{args.dataset} test ({len(images)} images)",
                       "seconds": round(time.perf_counter() - started, 1), "machine": machine_info()})
        write_json_atomic(Path(args.json_dir) / f"{label}_equivariance.json", result)
        print(f"{label}: equivariance error mean {result['mean_error']:.2f} % / median {result['median_error']:.2f} % "
              f"of the image side ({100 * result['compared']:.0f} % of landmarks compared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
