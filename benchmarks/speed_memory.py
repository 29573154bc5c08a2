"""Seconds per pair and peak memory of zero-shot matchers on this machine (a benchmark, not a test).

Each configuration runs in its own process so its peak resident memory (ru_maxrss) is its own. A pair is timed cold:
the descriptor cache is cleared, so both images are described every time, as for a user matching one new pair.
    python benchmarks/speed_memory.py --root ../shared/data/pf-willow --out benchmarks/results/speed_memory.json
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time

CONFIGS = {
    "nn-dinov2-b8-224": {"preset": "dinov2-block8"},
    "nn-efficientnet-224": {"backbone": "efficientnet_lite0", "image_size": 224, "sigma": 0},
    "nn-best": {"preset": "best"},
}


def measure(name: str, options: dict, root: str, pairs: int, queue) -> None:
    import torch

    from corrmark import load_matcher
    from corrmark.data import open_dataset

    torch.set_num_threads(torch.get_num_threads())
    dataset = open_dataset("pf-willow", root)
    matcher = load_matcher("nn", **options)
    samples = [dataset[i * (len(dataset) // pairs)] for i in range(pairs)]
    warm = samples[0]
    matcher.transfer_keypoints(warm["source_image"], warm["target_image"], warm["source_points"])
    sparse, dense = [], []
    for sample in samples:
        matcher._cache.clear()
        started = time.perf_counter()
        matcher.transfer_keypoints(sample["source_image"], sample["target_image"], sample["source_points"])
        sparse.append(time.perf_counter() - started)
        matcher._cache.clear()
        started = time.perf_counter()
        matcher.estimate_mapping(sample["source_image"], sample["target_image"])
        dense.append(time.perf_counter() - started)
    queue.put({
        "config": name, "options": options, "pairs": pairs,
        "seconds_per_pair_keypoints": round(sum(sparse) / pairs, 4),
        "seconds_per_pair_dense_mapping": round(sum(dense) / pairs, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="PF-WILLOW root")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for name, options in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        queue = context.Queue()
        process = context.Process(target=measure, args=(name, options, args.root, args.pairs, queue))
        process.start()
        rows.append(queue.get())
        process.join()
        print(json.dumps(rows[-1]), flush=True)
    payload = {"benchmark": "speed_memory", "dataset": "pf-willow", "rows": rows,
               "command": "python benchmarks/speed_memory.py " + " ".join(sys.argv[1:]),
               "load_average_after": os.getloadavg(),
               "machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpus": multiprocessing.cpu_count()}}
    if args.out:
        from corrmark.io import write_json_atomic

        write_json_atomic(args.out, payload)


if __name__ == "__main__":
    main()
