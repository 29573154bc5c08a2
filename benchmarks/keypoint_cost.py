"""What a keypoint transfer costs beyond the backbone, and the peak memory of a dense mapping of an 8000 x 8000 image.

1. For every zoo matcher whose weights file is present, and the zero-shot ``nn`` matcher (``best`` preset), on the
   first PAIRS bundled example pairs (examples/pairs.json): the seconds of one cold ``transfer_keypoints`` (descriptor
   caches emptied first, so both images are described inside it) against the seconds of the frozen backbone alone on
   the same two images (preprocessing and backbone forward, nothing learned on top, no correlation). Medians over
   REPEATS repetitions per pair, then over pairs; ``ratio`` = transfer / backbone (goal: <= 1.3).
2. Peak resident memory of ``estimate_mapping`` onto an 8000 x 8000 target with the ``nn`` matcher, each
   measurement in its own process (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before and after the call; they run
   first, while this process is small, since a child's ru_maxrss starts from its parent's at exec): the whole call,
   and its mapping stage alone (images described beforehand) with the current code and with the code it replaced
   (see ``memory_child``).

Writes benchmarks/results/speed/keypoint_cost.json through ``benchmarks/common.write_script_result`` (both
measurements under ``metrics``; this text and the constants under ``protocol``; the matcher labels under
``model``). No arguments: ``PYTHONPATH=src python benchmarks/keypoint_cost.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "speed" / "keypoint_cost.json"
PAIRS = 3
REPEATS = 3
THREADS = 1  # one thread: the ratio, not the absolute speed, is the point, and the machine is shared
GOAL_RATIO = 1.3
BIG_SIDE = 8000
MEMORY_MODES = ("whole_call", "mapping_stage", "mapping_stage_replaced_code")


# --- memory: one child process per measurement --------------------------------------------------------------------


def memory_child(mode: str) -> dict:
    """Runs in the child: ``nn`` (best) onto an 8000 x 8000 target; ru_maxrss before and after one call.

    ``whole_call``: ``estimate_mapping`` from scratch (describing the two images, then the dense mapping).
    ``mapping_stage``: the images described first (cached), the peak reset (``/proc/self/clear_refs``), then
    ``estimate_mapping``: the correlation and the dense mapping only. ``mapping_stage_replaced_code``: the same with
    the code the chunked float32 upsampling replaced (``resize_mapping`` of the whole image, then a float64 copy).
    """
    import resource

    import numpy as np
    import torch

    from corrmark import load_matcher
    from corrmark.io import read_image
    from corrmark.ops import resize_mapping

    torch.set_num_threads(THREADS)
    matcher = load_matcher("nn", preset="best")
    pair = json.loads((ROOT / "examples" / "pairs.json").read_text())["pairs"][0]
    source = read_image(ROOT / "examples" / pair["source"])
    target = np.random.default_rng(0).integers(0, 256, (BIG_SIDE, BIG_SIDE, 3), dtype=np.uint8)
    if mode != "whole_call":
        matcher.coarse_mapping(source, target)  # describes (and caches) both images
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS restarts from the current RSS
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "mapping_stage_replaced_code":
        grid = torch.from_numpy(np.asarray(matcher.coarse_mapping(source, target).grid, dtype=np.float32))[None]
        result = resize_mapping(grid, target.shape[:2], extrapolate=False)[0].numpy().astype(np.float64)
    else:
        result = matcher.estimate_mapping(source, target)
    seconds = time.perf_counter() - started
    after_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": round(seconds, 2), "maxrss_before_call_mb": round(before_mb, 1),
            "maxrss_after_call_mb": round(after_mb, 1), "call_peak_increase_mb": round(after_mb - before_mb, 1),
            "result_dtype": str(result.dtype), "result_shape": list(result.shape),
            "result_mb": round(result.nbytes / 2**20, 1), "target_image_mb": round(target.nbytes / 2**20, 1)}


def measure_memory() -> list[dict]:
    rows = []
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                                os.environ.get("PYTHONPATH")]))}
    for mode in MEMORY_MODES:
        done = subprocess.run([sys.executable, __file__, "--memory-child", mode], capture_output=True, text=True,
                              env=environment, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --- keypoint transfer against the backbone ------------------------------------------------------------------------


def backbone_call(matcher):
    """``image -> frozen features`` of a matcher: its preprocessing and frozen backbone(s), nothing learned."""
    from corrmark.models.jlad import JLADMatcher
    from corrmark.models.scorrsan import ScorrsanMatcher
    from corrmark.models.sfnet import SFNetMatcher
    from corrmark.models.zero_shot import NearestNeighbourMatcher

    if isinstance(matcher, NearestNeighbourMatcher):  # its descriptor is the frozen backbone's output
        return matcher._describe_uncached
    if isinstance(matcher, SFNetMatcher):
        return lambda image: matcher.features(matcher.preprocess.to_input(image, device=matcher.device))
    if isinstance(matcher, ScorrsanMatcher):
        return lambda image: matcher.extractor(matcher.preprocess.to_input(image).to(matcher.device))
    if isinstance(matcher, JLADMatcher):
        runtime = matcher.runtime
        return lambda image: runtime.frozen(runtime.preprocess.to_input(image).to(runtime.device))
    raise TypeError(f"no backbone call known for {type(matcher).__name__}")


def seconds(call, *arguments) -> float:
    started = time.perf_counter()
    call(*arguments)
    return time.perf_counter() - started


def measure_matcher(label: str, matcher, pairs: list) -> dict:
    import torch

    from corrmark.bench import forget_descriptors

    describe = backbone_call(matcher)
    forget_descriptors(matcher)
    matcher.transfer_keypoints(*pairs[0])  # warm-up: lazy initialisation is not timed
    per_pair = []
    for source, target, points in pairs:
        transfer, backbone = [], []
        for _ in range(REPEATS):
            forget_descriptors(matcher)
            transfer.append(seconds(matcher.transfer_keypoints, source, target, points))
            with torch.no_grad():
                backbone.append(seconds(describe, source) + seconds(describe, target))
        per_pair.append({"transfer_seconds": round(statistics.median(transfer), 4),
                         "backbone_seconds": round(statistics.median(backbone), 4),
                         "ratio": round(statistics.median(transfer) / statistics.median(backbone), 3),
                         "points": len(points)})
    ratio = statistics.median(row["ratio"] for row in per_pair)
    return {"matcher": label, "describe": matcher.describe(),
            "transfer_seconds_median": round(statistics.median(row["transfer_seconds"] for row in per_pair), 4),
            "backbone_seconds_median": round(statistics.median(row["backbone_seconds"] for row in per_pair), 4),
            "ratio": round(ratio, 3), "meets_goal": ratio <= GOAL_RATIO, "per_pair": per_pair}


def matchers_to_measure():
    """(label, build) for every zoo matcher whose file is present, then ``nn`` (best)."""
    from corrmark import load_matcher
    from corrmark.zoo import list_zoo, load_zoo_matcher

    builds = [(entry.name, lambda name=entry.name: load_zoo_matcher(name)) for entry in list_zoo()
              if entry.kind == "matcher" and entry.available]
    return builds + [("nn (best)", lambda: load_matcher("nn", preset="best"))]


def measure_keypoints() -> tuple[list[dict], list[str]]:
    import numpy as np
    import torch

    from corrmark.io import read_image

    torch.set_num_threads(THREADS)
    listed = json.loads((ROOT / "examples" / "pairs.json").read_text())["pairs"][:PAIRS]
    pairs = [(read_image(ROOT / "examples" / pair["source"]), read_image(ROOT / "examples" / pair["target"]),
              np.asarray(pair["source_points"], dtype=float)) for pair in listed]
    rows = []
    for label, build in matchers_to_measure():
        rows.append(measure_matcher(label, build(), pairs))
        print(json.dumps({key: value for key, value in rows[-1].items() if key != "describe"}), flush=True)
    return rows, [f"{pair['source']} -> {pair['target']}" for pair in listed]


def result_parts(memory: list[dict], rows: list[dict], pair_names: list[str]) -> tuple[dict, dict, list[str]]:
    """(metrics, protocol, model) of the result record: the two measurements, how they were made (this module's
    docstring and constants), and the labels of the matchers measured."""
    metrics = {
        "keypoint_transfer": {"goal_ratio": GOAL_RATIO, "pairs": pair_names, "repeats": REPEATS, "threads": THREADS,
                              "timing": "cold transfer_keypoints vs the frozen backbone on both images; medians",
                              "rows": rows},
        "mapping_memory": {"matcher": "nn (best)", "target": [BIG_SIDE, BIG_SIDE], "measure": "ru_maxrss, own process",
                           "rows": memory},
    }
    protocol = {"description": __doc__.strip(), "pairs": PAIRS, "repeats": REPEATS, "threads": THREADS,
                "goal_ratio": GOAL_RATIO, "big_side": BIG_SIDE, "memory_modes": list(MEMORY_MODES)}
    return metrics, protocol, [row["matcher"] for row in rows]


def main() -> None:
    started = time.perf_counter()
    memory = measure_memory()  # first, while this process is small
    rows, pair_names = measure_keypoints()
    from common import write_script_result  # here, not at the top: a memory child stays as small as before

    metrics, protocol, model = result_parts(memory, rows, pair_names)
    write_script_result(OUT, metrics, protocol, model, seconds=time.perf_counter() - started,
                        extra={"benchmark": "keypoint_cost", "load_average_after": list(os.getloadavg())})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory-child"]:
        print(json.dumps(memory_child(sys.argv[2])))
    else:
        main()
