"""PF-WILLOW PCK (SFNet protocol: t2s, kp-bbox, per-pair averaging) and StanfordExtra mask transfer (LT-ACC, IoU)
for a trained SFNet checkpoint or a zero-shot baseline on the same backbone. One JSON file per result row.

    python benchmarks/sfnet_eval.py --name sfnet_cub_pfwillow --checkpoint runs/sfnet_cub/final.pt \
        --pf-willow ../shared/data/pf-willow
    # zero-shot NN matcher on the same backbone (DINOv2-S block 8 + EfficientNet-Lite0 stages 3, 4), square 224 input:
    python benchmarks/sfnet_eval.py --name sfnet_zeroshot_nn_pfwillow --zero-shot nn \
        --pf-willow ../shared/data/pf-willow
    # mask transfer on StanfordExtra pairs:
    python benchmarks/sfnet_eval.py --name sfnet_cub_stanfordextra_masks \
        --checkpoint runs/sfnet_cub/final.pt --stanfordextra ../shared/data/stanfordextra-sample

Results go to benchmarks/results/sfnet/<name>.json (``--out-dir``). The PF-WILLOW rows are ``corrmark eval pf-willow
--matcher sfnet --checkpoint ... [--mutual] [--image-size 336]`` (the same ``evaluate_matcher``); the rows without
adaptation (``--zero-shot sfnet-no-adaptation``), with ``fallback`` and the mask-transfer rows (LT-ACC, IoU) are
script-only (docs/BENCHMARKS.md).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import results_dir, write_script_result

from corrmark import load_matcher
from corrmark.data import open_dataset
from corrmark.eval import MaskAccumulator, PCKProtocol
from corrmark.eval.runner import evaluate_matcher
from corrmark.models.sfnet import SFNetMatcher
from corrmark.ops import warp_backward

SAME_BACKBONE = {"preset": "dinov2-block8-soft", "backbone": "dinov2_vits14+efficientnet_lite0",
                 "layers": [[8], [3, 4]], "image_size": 224, "keep_aspect": False}


def build(args):
    if args.checkpoint:
        overrides = json.loads(args.options) if args.options else {}
        return load_matcher("sfnet", checkpoint=args.checkpoint, **overrides), {"checkpoint": args.checkpoint,
                                                                                "overrides": overrides}
    if args.zero_shot == "nn":
        options = dict(SAME_BACKBONE, **(json.loads(args.options) if args.options else {}))
        return load_matcher("nn", **options), {"zero_shot": "nn", **options}
    if args.zero_shot == "sfnet-no-adaptation":
        # the SFNet pipeline (two-level correlation product, kernel soft argmax) without adaptation layers
        options = {"adaptation": False, **(json.loads(args.options) if args.options else {})}
        return SFNetMatcher(options), {"zero_shot": "sfnet-no-adaptation", **options}
    raise SystemExit("give --checkpoint or --zero-shot nn|sfnet-no-adaptation")


def transfer_mask(matcher, sample) -> np.ndarray:
    """The source mask carried onto the target by the target-to-source mapping (bilinear, > 0.5)."""
    mapping = torch.from_numpy(matcher.estimate_mapping(sample["source_image"], sample["target_image"])).float()
    source = torch.from_numpy(sample["source_mask"].astype(np.float32))[None, None]
    warped, _ = warp_backward(source, mapping[None], mode="bilinear", padding_mode="zeros")
    return warped[0, 0].numpy() > 0.5


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoint")
    parser.add_argument("--zero-shot", choices=["nn", "sfnet-no-adaptation"])
    parser.add_argument("--options", help="JSON dict of matcher options")
    parser.add_argument("--pf-willow")
    parser.add_argument("--stanfordextra")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=str(results_dir("sfnet")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    matcher, config = build(args)
    started = time.perf_counter()
    if args.pf_willow:
        protocol = PCKProtocol(direction="t2s", threshold="kp-bbox", averaging="pair")
        result = evaluate_matcher(matcher, open_dataset("pf-willow", args.pf_willow), protocol, limit=args.limit)
        metrics = {"pck": result["pck"], "per_category": result["per_category"], "pairs": result["pairs"],
                   "seconds_per_pair": result["seconds_per_pair"]}
        write_script_result(Path(args.out_dir) / f"{args.name}.json", metrics, result["protocol"], result["matcher"],
                            config=config, seconds=time.perf_counter() - started,
                            extra={"dataset": "pf-willow (900 pairs)"})
        print(json.dumps(result["pck"]))
    if args.stanfordextra:
        dataset = open_dataset("stanfordextra", args.stanfordextra)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        accumulator = MaskAccumulator()
        tick = time.perf_counter()
        for index in range(count):
            sample = dataset[index]
            accumulator.add(transfer_mask(matcher, sample), sample["target_mask"], category=sample["category"])
        metrics = accumulator.result()
        metrics["seconds_per_pair"] = round((time.perf_counter() - tick) / max(count, 1), 4)
        protocol = {"dataset": "stanfordextra-sample", "pairs": count, "direction": "source mask -> target via the "
                    "target-to-source mapping (bilinear, > 0.5)", "metrics": "LT-ACC and IoU against the target "
                    "silhouette, mean over pairs"}
        write_script_result(Path(args.out_dir) / f"{args.name}.json", metrics, protocol, matcher.describe(),
                            config=config, seconds=time.perf_counter() - started)
        print(json.dumps({"lt_acc": metrics["lt_acc"], "iou": metrics["iou"]}))


if __name__ == "__main__":
    main()
