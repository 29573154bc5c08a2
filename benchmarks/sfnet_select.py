"""Label-free model selection for SFNet: every checkpoint of a run (and the unadapted start) on held-out images of
the training collections, by warp PCK and class-level mask IoU (``corrmark.eval.validation``). No benchmark image
and no keypoint is used, so the chosen step can be reported on PF-WILLOW honestly.

    python benchmarks/sfnet_select.py --config configs/sfnet_general.yaml --run runs/sfnet_general \
        --source image-folder:../shared/data/caltech101-unlabeled:val:160 \
        --source cub-unlabeled:../shared/data/cub-birds-unlabeled:test:40 --name sfnet_general_selection

Writes benchmarks/results/sfnet/<name>.json (model selection, script-only): per variant (``frozen`` = no adaptation, ``step_N``, ``final``) warp PCK@0.02 /
@0.05 (of the 336 px side), class mask IoU, and ``score`` = mean of warp PCK@0.05 and mask IoU; ``selected`` is the
variant with the best score.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import results_dir, write_script_result

from corrmark.config import load_config_file
from corrmark.data import open_image_dataset
from corrmark.data.saliency import SaliencyMasks
from corrmark.data.synthetic import SyntheticWarp
from corrmark.eval.validation import transferred_mask_iou, warp_pck, warp_truth
from corrmark.io import read_image
from corrmark.models.sfnet import SFNetMatcher
from corrmark.train.checkpoint import read_checkpoint

ALPHAS = (0.02, 0.05)
PAIRS_PER_CATEGORY = 8


def held_out_items(sources: list[str], seed: int) -> list[dict]:
    items = []
    for number, spec in enumerate(sources):
        dataset_name, root, split, limit = spec.split(":")
        dataset = open_image_dataset(dataset_name, root, split, load_images=False)
        chosen = np.arange(len(dataset))
        if int(limit) < len(dataset):
            chosen = np.sort(np.random.default_rng([seed, number]).choice(len(dataset), int(limit), replace=False))
        for index in chosen:
            record = dataset[int(index)]
            items.append({"path": str(record["path"]), "category": f"{dataset_name}/{record.get('category', '')}"})
    return items


def describe_views(matcher: SFNetMatcher, items: list[dict], warp: SyntheticWarp, threshold: float, seed: int):
    """Frozen levels of each image and of one warped view, grid masks, and the warp's true source pixels."""
    saliency = SaliencyMasks(threads=torch.get_num_threads())
    size = matcher.input_size
    views = []
    for index, item in enumerate(items):
        image = read_image(item["path"])
        mask = torch.from_numpy((saliency.probability(image) >= threshold).astype(np.float32))
        tensor = matcher.preprocess.to_input(image)
        mask = F.interpolate(mask[None, None], size=(size, size), mode="bilinear", align_corners=False)
        out = warp.view(tensor, mask, torch.Generator().manual_seed(seed * 100_003 + index))
        with torch.no_grad():
            plain, warped = matcher.features(tensor), matcher.features(out["image"])
        grid = tuple(plain[0].shape[-2:])
        stride = size / grid[1]
        views.append({
            "plain": plain, "warped": warped, "stride": stride, "category": item["category"],
            "mask": F.adaptive_avg_pool2d(mask, grid)[0, 0] > 0.5,
            "warped_mask": F.adaptive_avg_pool2d(out["mask"] * out["valid"][:, None].float(), grid)[0, 0] > 0.5,
            "truth": warp_truth(out["mapping"][0], grid, stride),
        })
    return views


def class_pairs(views: list[dict]) -> list[tuple[int, int]]:
    by_category: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        by_category.setdefault(view["category"], []).append(index)
    pairs = []
    for members in by_category.values():
        for first, second in list(zip(members, members[1:]))[:PAIRS_PER_CATEGORY]:
            pairs.append((first, second))
    return pairs


def measure(matcher: SFNetMatcher, views: list[dict], pairs, frozen: bool) -> dict:
    with torch.no_grad():
        plain = [matcher.head.adapt(view["plain"], frozen=frozen) for view in views]
        warped = [matcher.head.adapt(view["warped"], frozen=frozen) for view in views]
        counts = {alpha: [0, 0] for alpha in ALPHAS}
        for view, source, target in zip(views, plain, warped):
            mapping, _ = matcher.match_grids(target, source)
            for alpha in ALPHAS:
                correct, counted = warp_pck(mapping, view["truth"], view["warped_mask"], view["stride"],
                                            alpha * matcher.input_size)
                counts[alpha][0] += correct
                counts[alpha][1] += counted
        ious = [transferred_mask_iou(matcher.match_grids(plain[t], plain[s])[0], views[s]["mask"], views[t]["mask"])
                for s, t in pairs]
    metrics = {f"warp_pck@{alpha}": correct / max(counted, 1) for alpha, (correct, counted) in counts.items()}
    metrics["class_mask_iou"] = float(np.mean(ious)) if ious else float("nan")
    metrics["score"] = (metrics["warp_pck@0.05"] + metrics["class_mask_iou"]) / 2
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--run", required=True, help="the run folder (checkpoints/step_*.pt, final.pt)")
    parser.add_argument("--source", action="append", required=True, help="dataset:root:split:limit of held-out images")
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--saliency-threshold", type=float, default=0.6)
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config_file(args.config)
    matcher = SFNetMatcher(config["model"])
    warp = SyntheticWarp({key: value for key, value in config["data"]["warp"].items() if key != "flip_probability"})
    views = describe_views(matcher, held_out_items(args.source, args.seed), warp, args.saliency_threshold, args.seed)
    pairs = class_pairs(views)
    run = Path(args.run)
    variants = {"frozen": None}
    for path in sorted((run / "checkpoints").glob("step_*.pt")):
        variants[f"step_{int(path.stem.split('_')[1])}"] = path
    if (run / "final.pt").is_file():
        variants["final"] = run / "final.pt"
    rows = {}
    for name, path in variants.items():
        if path is not None:
            matcher.head.load_state_dict(read_checkpoint(path)["model"], strict=True)
        rows[name] = measure(matcher, views, pairs, frozen=path is None)
        print(name, {key: round(value, 4) for key, value in rows[name].items()}, flush=True)
    selected = max(rows, key=lambda name: rows[name]["score"])
    protocol = {"task": "label-free SFNet model selection on held-out training-collection images",
                "sources": args.source, "images": len(views), "class_pairs": len(pairs),
                "alphas_of": f"{matcher.input_size} px square side", "seed": args.seed,
                "saliency_threshold": args.saliency_threshold, "score": "mean of warp_pck@0.05 and class_mask_iou"}
    write_script_result(results_dir("sfnet") / f"{args.name}.json", {"variants": rows, "selected": selected}, protocol,
                        {"name": "sfnet", "run": args.run, "variants": list(variants)}, config=args.config,
                        seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
