"""C3 landmarks: AFLW error of trained checkpoints (MTFL protocol) and pictures; one JSON per row.

Protocol (``corrmark.eval.landmarks.evaluate_landmarks``, the evaluator JLAD uses; docs/C3.md): the K discovered
landmarks of every image, in pixels of the original image (``load_landmark_model("c3", ...).detect``: the image
resized to the network's square input), are mapped by a linear regression without bias (2K -> 10 numbers) fitted on
MTFL training faces (``training.txt``; ``--train-limit`` for a seeded subset) to the 5 annotated landmarks; error on
the 2,995 AFLW faces of ``testing.txt`` divided by the inter-ocular distance (annotated points 1 and 2), in percent.
The error of a row is the command ``corrmark eval-landmarks mtfl --root ROOT --model c3 --checkpoint PATH
--train-limit 1000`` (the same library call); this script adds the pictures.

Pictures, per checkpoint, into ``--json-dir`` (default ``benchmarks/results/c3/c3``): ``<label>_aflw.jpg`` (discovered
landmarks, then the regressed 5 points, on 16 test faces), ``<label>_swaps.jpg`` (the cross-image cycle on 8 test
pairs) and ``<label>.html`` (both, with the numbers). ``--dataset cub`` draws the same pictures on CUB test birds (no
annotations: no error, the JSON records the figures only). ``--figure-format png`` writes PNGs instead of JPEGs.

Example::

    python benchmarks/c3_mtfl.py --checkpoint runs/c3_mtfl_k10/final.pt=c3_mtfl_k10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import SHARED_DATA, results_dir, write_script_result

from corrmark import load_landmark_model
from corrmark.data import open_image_dataset
from corrmark.eval.landmark_detection import detect_landmarks
from corrmark.eval.landmarks import evaluate_landmarks
from corrmark.io import read_image
from corrmark.ops import normalized_to_pixel
from corrmark.preprocess import Preprocess
from corrmark.train.checkpoint import read_checkpoint
from corrmark.viz import Report, draw_points, save_image
from corrmark.viz.landmarks import landmark_figure

LANDMARK_NAMES = ["left eye", "right eye", "nose", "left mouth", "right mouth"]
SWAP_ROWS = [("a", "points_a", "x_a (landmarks)"), ("b", "points_b", "x_b (landmarks)"),
             ("ab", "points_b", "x_ab = G(app a, pose b)"), ("ba", "points_a", "x_ba = G(app b, pose a)"),
             ("a_cycled", None, "x_a' (cycled back)"), ("b_cycled", None, "x_b' (cycled back)"),
             ("a_self", None, "G(app a, pose a)")]


def to_array(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def swap_figure(model, paths: list[str], path: Path, tile: int = 128) -> Path:
    """Columns = pairs (a = paths[i], b = paths[i + n]); rows = SWAP_ROWS, landmarks drawn where they apply."""
    from PIL import Image

    half = len(paths) // 2
    size = model.config.image_size
    # not clamped (as this figure always was): model.swap leaves inputs already at its size as they are
    square = Preprocess(size, clamp=False)
    images = torch.cat([square.to_input(read_image(p)) for p in paths])
    out = model.swap(images[:half], images[half:2 * half])
    canvas = Image.new("RGB", (half * tile, len(SWAP_ROWS) * tile), (255, 255, 255))
    for row, (key, points_key, _) in enumerate(SWAP_ROWS):
        for column in range(half):
            picture = to_array(out[key][column])
            if points_key is not None:
                points = normalized_to_pixel(out[points_key][column], (size, size)).cpu().numpy()
                drawn = draw_points(picture, points, radius=1.5)
            else:
                drawn = Image.fromarray(picture)
            canvas.paste(drawn.resize((tile, tile), Image.NEAREST), (column * tile, row * tile))
    return save_image(canvas, path)


def seeded_paths(dataset, count: int, seed: int = 0) -> list[str]:
    chosen = np.random.default_rng([seed, 53]).choice(len(dataset), min(count, len(dataset)), replace=False)
    return [str(dataset[int(i)]["path"]) for i in chosen]


def checkpoint_summary(path: str) -> tuple[dict, dict]:
    payload = read_checkpoint(path)
    config = payload.get("config") or {}
    keep = ("config_file", "method", "name", "seed", "model", "data", "loss", "schedule", "train", "data_info")
    return ({key: config.get(key) for key in keep if key in config},
            {"checkpoint": path, "step": int(payload.get("step", -1)), "train_metrics": payload.get("metrics")})


def write_report(label: str, json_dir: Path, result: dict | None, figures: list[tuple[str, str]]) -> Path:
    report = Report(f"C3 landmarks: {label}")
    if result is not None:
        report.heading("AFLW error (% of the inter-ocular distance)")
        report.table(["mean", *LANDMARK_NAMES], [[result["mean_error"], *result["per_landmark"]]])
        report.paragraph(f"Regression fitted on {result['train_images']} MTFL training faces, tested on "
                         f"{result['test_images']} AFLW faces (docs/C3.md).", note=True)
    report.heading("Pictures")
    report.figures(figures)
    report.paragraph("Swaps, rows top to bottom: " + "; ".join(caption for _, _, caption in SWAP_ROWS) + ".", note=True)
    return report.write(json_dir / f"{label}.html")


def evaluate_checkpoint(spec: str, args) -> dict:
    path, _, label = spec.partition("=")
    label = label or Path(path).parent.name
    json_dir = Path(args.json_dir)
    suffix = f".{args.figure_format}"
    model = load_landmark_model(args.model, path)
    config, evaluated = checkpoint_summary(path)
    started = time.perf_counter()
    result, figures = None, []
    if args.dataset == "mtfl":
        train = open_image_dataset("mtfl", args.root, "train", load_images=False)
        test = open_image_dataset("mtfl", args.root, "test", load_images=False)
        figure = json_dir / f"{label}_aflw{suffix}"
        result = evaluate_landmarks(model, train, test, normalisation="inter-ocular", eyes=(0, 1),
                                    train_limit=args.train_limit, test_limit=args.test_limit, seed=0, batch_size=64,
                                    figure=figure, progress=not args.quiet,
                                    dataset_names=("mtfl train (training.txt)", "mtfl test (AFLW, testing.txt)"))
        figures.append((figure.name, "discovered landmarks (top) and the regressed 5 points (bottom), AFLW"))
        swap_source = test
    else:
        swap_source = open_image_dataset("cub-unlabeled", args.root, "test", load_images=False)
        paths = seeded_paths(swap_source, 16)
        figure = json_dir / f"{label}_landmarks{suffix}"
        points, _ = detect_landmarks(model, paths, batch_size=16)
        landmark_figure([read_image(p) for p in paths], points, figure)
        figures.append((figure.name, "discovered landmarks, CUB test birds"))
    if args.model == "c3":
        swaps = swap_figure(model, seeded_paths(swap_source, 2 * args.swap_pairs, seed=1),
                            json_dir / f"{label}_swaps{suffix}")
        figures.append((swaps.name, "the cross-image cycle on test pairs (rows: see below)"))
    report = write_report(label, json_dir, result, figures)
    protocol = result["protocol"] if result else {"task": "pictures only (no annotations)",
                                                  "images": "cub-unlabeled test, seeded"}
    metrics = ({"mean_error_percent": result["mean_error"], "per_landmark_percent": result["per_landmark"],
                "landmark_names": LANDMARK_NAMES} if result else None)
    payload = write_script_result(
        json_dir / f"{label}.json", metrics, protocol, {**model.describe(), "checkpoint": path}, config=config,
        seconds=time.perf_counter() - started, argv=args.argv,
        extra={"label": label, "train_images": result["train_images"] if result else None,
               "test_images": result["test_images"] if result else None,
               "evaluated": {**evaluated, "model": model.describe()},
               "figures": [str(json_dir / name) for name, _ in figures], "report": str(report)})
    if result:
        per = ", ".join(f"{value:.2f}" for value in result["per_landmark"])
        print(f"{label}: mean {result['mean_error']:.2f} % IOD (per landmark {per}) -> {json_dir / f'{label}.json'}")
    else:
        print(f"{label}: pictures -> {report}")
    return payload


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="PATH[=LABEL], repeatable")
    parser.add_argument("--model", default="c3", help="landmark model name (c3; jlad works too, without swaps)")
    parser.add_argument("--dataset", choices=["mtfl", "cub"], default="mtfl")
    parser.add_argument("--root", default=None, help="default ../shared/data/mtfl or cub-birds-unlabeled")
    parser.add_argument("--train-limit", type=int, default=None, help="fit on N seeded training faces (default all)")
    parser.add_argument("--test-limit", type=int, default=None, help="N seeded AFLW faces (default all 2,995)")
    parser.add_argument("--swap-pairs", type=int, default=8)
    parser.add_argument("--json-dir", default=str(results_dir("c3")))
    parser.add_argument("--figure-format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.argv = argv  # recorded with each row (None: sys.argv)
    args.root = args.root or str(SHARED_DATA / ("mtfl" if args.dataset == "mtfl" else "cub-birds-unlabeled"))
    torch.set_num_threads(args.threads)
    for spec in args.checkpoint:
        evaluate_checkpoint(spec, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
