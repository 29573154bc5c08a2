"""Seconds per pair and peak memory of the zero-shot matchers on PF-WILLOW (a benchmark, not a test).

A thin wrapper over ``corrmark.bench`` (the same measurement as ``corrmark bench --pf-willow ROOT``) that keeps the
configurations of the table in docs/BENCHMARKS.md. Each configuration runs in its own process, so its peak
resident memory is its own; a pair is timed cold (both images described every time).
    python benchmarks/speed_memory.py --root ../shared/data/pf-willow --out benchmarks/results/speed/speed_memory.json
"""

import argparse
import json
import os
import sys

from corrmark.bench import MatcherSpec, bench_matchers, pf_willow_pairs

CONFIGS = {
    "nn-dinov2-b8-224": {"preset": "dinov2-block8"},
    "nn-efficientnet-224": {"preset": "dinov2-block8", "backbone": "efficientnet_lite0"},
    "nn-best": {"preset": "best"},
    "nn-fused-block8": {"preset": "fused-block8"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="PF-WILLOW root")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    specs = [MatcherSpec("nn", options=options, label=name) for name, options in CONFIGS.items()
             if not args.only or name in args.only]
    rows = bench_matchers(specs, pf_willow_pairs(args.root, args.pairs),
                          report=lambda row: print(json.dumps({k: v for k, v in row.items() if k != "machine"}),
                                                   flush=True))
    if args.out:
        from corrmark.io import write_json_atomic

        write_json_atomic(args.out, {"benchmark": "speed_memory", "dataset": "pf-willow", "rows": rows,
                                     "command": "python benchmarks/speed_memory.py " + " ".join(sys.argv[1:]),
                                     "load_average_after": os.getloadavg()})


if __name__ == "__main__":
    main()
