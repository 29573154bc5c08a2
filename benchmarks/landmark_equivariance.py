"""Label-free check of landmark models: equivariance error under known synthetic warps (one JSON per checkpoint).

    python benchmarks/landmark_equivariance.py --dataset cub \
        --checkpoint runs/jlad_cub_k10/checkpoints/step_00000300.pt=jlad_cub_k10_pretrain

Images: a seeded subset of the test split (CUB test birds, or the AFLW faces of MTFL `testing.txt`), none of which a
training config reads (``corrmark.eval.landmarks.equivariance_images``). Each image and a warped copy
(``corrmark.eval.landmarks.EQUIVARIANCE_WARP``) go through the model; the error is how far the view's landmarks,
carried back through the warp, land from the image's, in percent of the image side (``landmark_equivariance``). Where
annotations exist (faces) the regression error measures the same models against ground truth; this number is what is
left when there are none (birds). A checkpoint row is the command ``corrmark eval-landmarks cub --root ROOT
--checkpoint PATH --test-limit 500`` (faces: ``eval-landmarks mtfl --equivariance ...``); the fixed-grid rows are
script-only. Results: ``benchmarks/results/<jlad|c3>/<label>_equivariance.json`` (by the checkpoint's method).
"""

from __future__ import annotations

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import SHARED_DATA, results_dir, write_script_result
from jlad_mtfl import FixedGrid

from corrmark import load_landmark_model
from corrmark.data import open_image_dataset
from corrmark.eval.landmarks import equivariance_images, landmark_equivariance
from corrmark.train.checkpoint import read_checkpoint


def test_images(dataset: str, root: Path, limit: int, seed: int) -> list[str]:
    images = open_image_dataset("mtfl" if dataset == "mtfl" else "cub-unlabeled", root, "test", load_images=False)
    return equivariance_images(images, limit, seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="PATH[=LABEL], repeatable")
    parser.add_argument("--fixed-grid", type=int, default=None, metavar="K",
                        help="also score K points at fixed image positions (the warp's own displacement)")
    parser.add_argument("--dataset", choices=["mtfl", "cub"], default="cub")
    parser.add_argument("--root", default=None, help="default ../shared/data/mtfl or cub-birds-unlabeled")
    parser.add_argument("--limit", type=int, default=500, help="seeded test images")
    parser.add_argument("--size", type=int, default=224, help="square side the images and warps are made at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-dir", default=None, help="default benchmarks/results/<method of the model>")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.root or SHARED_DATA / ("mtfl" if args.dataset == "mtfl" else "cub-birds-unlabeled"))
    images = test_images(args.dataset, root, args.limit, args.seed)
    runs = [(spec.partition("=")[0], spec.partition("=")[2] or Path(spec.partition("=")[0]).stem)
            for spec in args.checkpoint]
    if args.fixed_grid:
        runs.append((None, f"{args.dataset}_fixed_grid_k{args.fixed_grid}"))
    for path, label in runs:
        if path is None:
            method, model = "jlad", FixedGrid(args.fixed_grid)  # the grid of benchmarks/jlad_mtfl.py's baseline
        else:
            method = (read_checkpoint(path).get("config") or {}).get("method", "jlad")
            model = load_landmark_model(method, checkpoint=path)
        started = time.perf_counter()
        result = landmark_equivariance(model, images, size=args.size, seed=args.seed, progress=True)
        protocol, described = result.pop("protocol"), result.pop("model")
        out = Path(args.json_dir or results_dir(method)) / f"{label}_equivariance.json"
        write_script_result(out, result, protocol, {**described, "checkpoint": path}, argv=argv,
                            seconds=time.perf_counter() - started, metrics_key=None,
                            extra={"checkpoint": path, "dataset": f"{args.dataset} test ({len(images)} images)"})
        print(f"{label}: equivariance error mean {result['mean_error']:.2f} % / median {result['median_error']:.2f} % "
              f"of the image side ({100 * result['compared']:.0f} % of landmarks compared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
