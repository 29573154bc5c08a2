"""Sweep zero-shot matcher settings on a stratified subset of PF-WILLOW (every k-th pair); prints JSON lines.

Used to choose the "best" preset; the final numbers in docs/BENCHMARKS.md come from full runs of `corrmark eval`.
    python benchmarks/sweep_zero_shot.py --root ../shared/data/pf-willow --every 5 \
        --out benchmarks/results/zero_shot/zero_shot_sweep_pf_willow_every5.jsonl
"""

import argparse
import json
import sys

import common  # noqa: F401  (puts this checkout's src/ first on sys.path)

from corrmark import load_matcher
from corrmark.data import open_dataset
from corrmark.data.subset import every_kth
from corrmark.eval import PCKProtocol
from corrmark.eval.runner import evaluate_matcher

SETTINGS = {
    "b8-hard": dict(backbone="dinov2_vits14", layers=[8], image_size=224, sigma=0),
    "b8-soft": dict(backbone="dinov2_vits14", layers=[8], image_size=224),
    "b9-hard": dict(backbone="dinov2_vits14", layers=[9], image_size=224, sigma=0),
    "b7-hard": dict(backbone="dinov2_vits14", layers=[7], image_size=224, sigma=0),
    "b10-hard": dict(backbone="dinov2_vits14", layers=[10], image_size=224, sigma=0),
    "effnet-hard": dict(backbone="efficientnet_lite0", image_size=224, sigma=0),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="run these settings (default: all, extras included)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--direction", default="s2t")
    parser.add_argument("--extra", default=None, help="JSON dict name -> options, added to the settings")
    args = parser.parse_args()
    settings = dict(SETTINGS)
    if args.extra:
        settings.update(json.loads(args.extra))
    dataset = every_kth(open_dataset("pf-willow", args.root), args.every)
    protocol = PCKProtocol(direction=args.direction, threshold="kp-bbox", averaging="pair")
    for name, options in settings.items():
        if args.only and name not in args.only:
            continue
        # on top of the 0.1 defaults the sweep was run with (block 8, 224 px, no mutual filter, sigma 2)
        matcher = load_matcher("nn", **{"preset": "dinov2-block8-soft", **options})
        result = evaluate_matcher(matcher, dataset, protocol, progress=False)
        line = json.dumps({"setting": name, "options": options, "pairs": result["pairs"], "pck": result["pck"],
                           "seconds_per_pair": result["seconds_per_pair"]})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
