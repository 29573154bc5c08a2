"""Loss ablation like SFNet's Table 3 at a small budget: mask only / flow only / mask + flow / + smoothness.

Each variant trains from configs/sfnet_cub.yaml (same cached feature bank, same seed) with its loss weights and a
reduced step budget, then is evaluated on PF-WILLOW (t2s, kp-bbox, per-pair). One JSON per variant:
benchmarks/results/sfnet/sfnet_ablation_<variant>_<steps>steps.json.

    python benchmarks/sfnet_ablation.py --config configs/sfnet_cub.yaml --steps 150 \
        --every 3 --pf-willow ../shared/data/pf-willow

``--every k`` scores every k-th PF-WILLOW pair (a stratified 1/k subset, recorded in the protocol) to fit a small
budget; a trained variant's row is ``corrmark eval pf-willow --root ... --every 3 --matcher sfnet --checkpoint
runs/sfnet_ablation_<variant>_<steps>steps/final.pt``.
"""

import argparse
import json
import time

import torch
from common import results_dir, write_script_result

from corrmark import load_matcher
from corrmark.data import open_dataset
from corrmark.data.subset import every_kth
from corrmark.eval import PCKProtocol
from corrmark.eval.runner import evaluate_matcher
from corrmark.models.sfnet import SFNetMatcher
from corrmark.train import load_config, read_checkpoint, run_config

VARIANTS = {
    "mask": {"mask": 3, "flow": 0, "smooth": 0},
    "flow": {"mask": 0, "flow": 16, "smooth": 0},
    "mask_flow": {"mask": 3, "flow": 16, "smooth": 0},
    "mask_flow_smooth": {"mask": 3, "flow": 16, "smooth": 0.5},
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pf-willow", required=True)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    dataset = every_kth(open_dataset("pf-willow", args.pf_willow), args.every)
    protocol = PCKProtocol(direction="t2s", threshold="kp-bbox", averaging="pair")
    if not args.only or "no_training" in args.only:
        # reference row: the same pipeline without adaptation layers (nothing trained)
        started = time.perf_counter()
        model = load_config(args.config)["model"]
        matcher = SFNetMatcher({**model, "adaptation": False})
        result = evaluate_matcher(matcher, dataset, protocol)
        write_script_result(results_dir("sfnet") / "sfnet_ablation_no_training.json",
                            {"pck": result["pck"], "per_category": result["per_category"],
                             "seconds_per_pair": result["seconds_per_pair"]},
                            {**result["protocol"], "pairs": f"every {args.every}-th of 900 ({len(dataset)})"},
                            result["matcher"], config={"base": args.config, "model": {**model, "adaptation": False}},
                            seconds=time.perf_counter() - started)
        print("no_training", json.dumps(result["pck"]))
    for variant, weights in VARIANTS.items():
        if args.only and variant not in args.only:
            continue
        started = time.perf_counter()
        config = load_config(args.config)
        run_name = f"sfnet_ablation_{variant}_{args.steps}steps"
        config["name"] = run_name
        config["loss"] = weights
        config["train"] = dict(config.get("train") or {}, steps=args.steps, threads=args.threads,
                               checkpoint_every=max(50, args.steps // 2))
        final = run_config(config, out_dir=f"runs/{run_name}", resume=True)
        train_seconds = read_checkpoint(final)["metrics"].get("train_seconds")
        matcher = load_matcher("sfnet", checkpoint=str(final))
        result = evaluate_matcher(matcher, dataset, protocol)
        write_script_result(results_dir("sfnet") / f"{run_name}.json",
                            {"pck": result["pck"], "per_category": result["per_category"],
                             "train_seconds": train_seconds, "seconds_per_pair": result["seconds_per_pair"]},
                            {**result["protocol"], "pairs": f"every {args.every}-th of 900 ({len(dataset)})"},
                            result["matcher"], config={"base": args.config, "loss": weights, "steps": args.steps,
                                                       "checkpoint": str(final)},
                            seconds=time.perf_counter() - started)
        print(variant, json.dumps(result["pck"]))


if __name__ == "__main__":
    main()
