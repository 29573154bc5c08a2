"""JLAD landmark error on AFLW (MTFL ``testing.txt``) for trained checkpoints; one JSON per row.

Protocol (``corrmark.eval.landmarks``, docs/JLAD.md): the K discovered landmarks of every image, in pixels of the
original image, are mapped by a linear regression without bias (2K -> 10 numbers) fitted on MTFL training faces to
the 5 annotated landmarks; error on the 2,995 AFLW test faces divided by the inter-ocular distance (annotated points 1
and 2), in percent, per landmark and mean.

Training faces for the regression: the training images of the config (its seeded subset of the ``training.txt`` of
its source root, which may be a centre-cropped copy, ``benchmarks/mtfl_center_crop.py``; view 0 of the cached
feature bank = the plain square resize, exactly what ``detect`` computes); test faces: all of ``testing.txt``
through a cached bank of their frozen features (``--test-limit`` for a seeded subset). ``--check-generic N``
re-detects N test faces through ``load_landmark_model("jlad", ...)`` image by image and records the largest
difference to the bank path (should be ~1e-5 px).

Every row also records ``diagnostics`` (not the protocol): the regression fitted and tested inside one domain (AFLW
first half -> second half; MTFL training faces likewise), which separates the framing change from the detector. With
1,000 training faces the MTFL half holds 500, too few for a K = 30 regression (60 inputs): read that one for K = 10.

Rows:

- ``--checkpoint PATH[=LABEL]`` (repeatable): a trained ``final.pt`` or ``checkpoints/step_*.pt``;
- ``--baseline fixed-grid``: K landmarks at fixed fractions of the image (a 2 x 5 grid for K = 10, ...): the error the
  regression reaches from the framing of the faces alone, with no detector at all.

Example::

    PYTHONPATH=src python benchmarks/jlad_mtfl.py --config configs/jlad_mtfl_k10.yaml \
        --checkpoint runs/jlad_mtfl_k10/final.pt=jlad_mtfl_k10 --figure benchmarks/results/jlad_mtfl_k10_aflw.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corrmark.data import open_image_dataset  # noqa: E402
from corrmark.eval.landmarks import evaluate_landmark_points, landmark_protocol  # noqa: E402
from corrmark.io import read_image  # noqa: E402
from corrmark.models.jlad import FrozenFeatures, JLADConfig, JLADLandmarks, JLADNet, JLADRuntime  # noqa: E402
from corrmark.ops import grid_stride, grid_to_pixel  # noqa: E402
from corrmark.preprocess import image_to_tensor  # noqa: E402
from corrmark.provenance import machine_info  # noqa: E402
from corrmark.train.checkpoint import read_checkpoint  # noqa: E402
from corrmark.train.jlad import build_bank, collect_images  # noqa: E402
from corrmark.train.runner import load_config  # noqa: E402
from corrmark.viz.landmarks import landmark_figure  # noqa: E402


def annotations_by_path(root, split) -> dict[str, np.ndarray]:
    dataset = open_image_dataset("mtfl", root, split, load_images=False)
    table = {}
    for record in dataset._records:
        points = np.asarray(record["points"], dtype=np.float64).copy()
        points[~np.asarray(record["valid"], dtype=bool)] = np.nan
        table[str(Path(record["path"]).resolve())] = points
    return table


@torch.no_grad()
def bank_points(net: JLADNet, bank, rows: np.ndarray, batch: int = 64) -> np.ndarray:
    """Discovered landmarks (N, K, 2) in original-image pixels for bank rows (view 0 rows)."""
    net.eval()
    out = []
    for start in range(0, len(rows), batch):
        chunk = torch.as_tensor(rows[start:start + batch])
        detection = net.detect(net.features(bank.features[chunk].float()))
        heatmap_hw = tuple(detection["psi"].shape[-2:])
        for offset, row in enumerate(chunk.tolist()):
            image = row // bank.views
            height, width = (int(v) for v in bank.shapes[image])
            stride = grid_stride((height, width), heatmap_hw)
            out.append(grid_to_pixel(detection["points"][offset], stride).double().numpy())
    return np.stack(out)


def fixed_grid_points(shapes: np.ndarray, count: int) -> np.ndarray:
    """K landmarks at fixed fractions of every image: a rows x columns lattice inside [0.2, 0.8]^2."""
    rows = int(np.floor(np.sqrt(count)))
    while count % rows:
        rows -= 1
    columns = count // rows
    fx = np.linspace(0.2, 0.8, columns)
    fy = np.linspace(0.2, 0.8, rows) if rows > 1 else np.array([0.5])
    fractions = np.array([(x, y) for y in fy for x in fx])
    sizes = np.asarray(shapes, dtype=np.float64)[:, ::-1]  # (W, H)
    return fractions[None] * sizes[:, None, :]


def in_domain_errors(train_points, train_annotated, test_points, test_annotated) -> dict:
    """Not the protocol: the same regression fitted and tested inside one domain (first half -> second half of the
    AFLW faces; of the MTFL training faces). The gap to the protocol number is what the MTFL -> AFLW change of
    framing costs; the AFLW-halves number is what the detector gives when the regression sees AFLW framing."""
    def halves(points, annotated):
        half = len(points) // 2
        return evaluate_landmark_points(points[:half], annotated[:half], points[half:], annotated[half:],
                                        "inter-ocular")["mean_error"]

    return {"aflw_half_fit_percent": halves(test_points, test_annotated),
            "mtfl_half_fit_percent": halves(train_points, train_annotated),
            "note": "not the protocol: regression fitted on the first half of one set, tested on its second half"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", action="append", default=[], help="PATH[=LABEL], repeatable")
    parser.add_argument("--baseline", choices=["fixed-grid"], default=None)
    parser.add_argument("--baseline-label", default=None, help="row name (default jlad_baseline_fixed_grid_k<K>)")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mtfl"))
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--json-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--figure", default=None, help="PNG of discovered landmarks on the first 16 test faces")
    parser.add_argument("--check-generic", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "PYTHONPATH=src python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])

    config = load_config(args.config)
    model_config = JLADConfig.from_dict(config.get("model"))
    data = dict(config.get("data") or {})
    data_seed = int(data.get("data_seed", 0))
    started = time.perf_counter()
    train_items = collect_images(list(data["sources"]), data_seed)
    train_bank = build_bank(model_config, train_items, int(data.get("views", 3)), data.get("warp"), data_seed)
    test_items = collect_images([{"dataset": "mtfl", "root": args.root, "split": "test", "group": "face",
                                  "limit": args.test_limit}], 0)
    test_bank = build_bank(model_config, test_items, views=1, data_seed=0)
    bank_seconds = time.perf_counter() - started
    # the regression's training faces are the config's own (they may come from a centre-cropped MTFL copy)
    train_table = {}
    for source in data["sources"]:
        train_table.update(annotations_by_path(source["root"], source.get("split", "train")))
    test_table = annotations_by_path(args.root, "test")
    train_annotated = np.stack([train_table[str(Path(path).resolve())] for path in train_bank.paths])
    test_annotated = np.stack([test_table[str(Path(path).resolve())] for path in test_bank.paths])
    train_rows = np.arange(train_bank.images) * train_bank.views
    test_rows = np.arange(test_bank.images)
    protocol = landmark_protocol("inter-ocular", (0, 1), train_bank.images, args.test_limit, data_seed,
                                 ("mtfl train (the config's training subset)", "mtfl test (AFLW)"))

    rows = []
    if args.baseline == "fixed-grid":
        count = model_config.num_landmarks
        rows.append((args.baseline_label or f"jlad_baseline_fixed_grid_k{count}", None,
                     fixed_grid_points(train_bank.shapes.numpy(), count),
                     fixed_grid_points(test_bank.shapes.numpy(), count), {"baseline": "fixed-grid", "K": count}))
    for spec in args.checkpoint:
        path, _, label = spec.partition("=")
        payload = read_checkpoint(path)
        checkpoint_model = JLADConfig.from_dict((payload.get("config") or {}).get("model"))
        net = JLADNet(checkpoint_model, train_bank.channels)
        net.load_state_dict(payload["model"], strict=True)
        tick = time.perf_counter()
        train_points = bank_points(net, train_bank, train_rows)
        test_points = bank_points(net, test_bank, test_rows)
        label = label or Path(path).parent.name + "_" + Path(path).stem
        rows.append((label, path, train_points, test_points,
                     {"checkpoint": path, "step": int(payload.get("step", -1)),
                      "train_metrics": payload.get("metrics"), "detect_seconds": round(time.perf_counter() - tick, 1),
                      "model": checkpoint_model.to_dict()}))

    for label, path, train_points, test_points, extra in rows:
        tick = time.perf_counter()
        result = evaluate_landmark_points(train_points, train_annotated, test_points, test_annotated, "inter-ocular")
        diagnostics = in_domain_errors(train_points, train_annotated, test_points, test_annotated)
        generic = None
        if path is not None and args.check_generic:
            from corrmark import load_landmark_model

            model = load_landmark_model("jlad", path)
            differences = []
            for index in range(min(args.check_generic, test_bank.images)):
                image = read_image(test_bank.paths[index])
                _, points = model.detect(image_to_tensor(image))
                differences.append(float(np.abs(points[0].double().numpy() - test_points[index]).max()))
            generic = {"images": len(differences), "max_abs_difference_px": max(differences)}
        if args.figure and path is not None:
            figure = Path(args.figure)
            if len(rows) > 1:
                figure = figure.with_name(f"{figure.stem}_{label}{figure.suffix}")
            count = min(16, test_bank.images)
            landmark_figure([read_image(p) for p in test_bank.paths[:count]], test_points[:count], figure,
                            regressed=result["predicted"][:count])
            extra["figure"] = str(figure)
        payload = {
            "label": label, "command": command, "config": {"file": str(args.config), "model": config.get("model"),
                                                          "schedule": config.get("schedule"), "data": data,
                                                          "loss": config.get("loss"), "train": config.get("train")},
            "protocol": protocol,
            "metrics": {"mean_error_percent": result["mean_error"], "per_landmark_percent": result["per_landmark"],
                        "landmark_names": ["left eye", "right eye", "nose", "left mouth", "right mouth"]},
            "train_images": result["train_images"], "test_images": result["test_images"],
            "evaluated": extra, "generic_path_check": generic, "diagnostics": diagnostics,
            "seconds": {"feature_banks": round(bank_seconds, 1), "evaluation": round(time.perf_counter() - tick, 1)},
            "machine": machine_info(),
            "reference": {"published_aflw_error_percent": 6.51, "published_setting": "JLAD, K=30, trained on CelebA"},
        }
        out = Path(args.json_dir) / f"{label}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1) + "\n")
        per = ", ".join(f"{v:.2f}" for v in result["per_landmark"])
        print(f"{label}: mean {result['mean_error']:.2f} % IOD (per landmark {per}); in-domain fits: AFLW halves "
              f"{diagnostics['aflw_half_fit_percent']:.2f}, MTFL halves {diagnostics['mtfl_half_fit_percent']:.2f} "
              f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
