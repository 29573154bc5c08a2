"""GPU check: speed and agreement of every matcher on a GPU at fp32, bf16 and fp16 against the CPU at fp32.

For the zero-shot ``nn`` matcher (``best`` preset) and every zoo matcher whose weights file is present (zoo/zoo.yaml),
on the bundled example pairs (examples/pairs.json):

1. the reference: ``transfer_keypoints`` on the CPU at fp32;
2. the same on ``--device`` (default cuda) at each of ``--precisions`` (default fp32 bf16 fp16), the matcher built
   once per device and its ``precision`` switched (the descriptor caches key on it).

Per (matcher, device, precision) it records seconds per pair (each pair timed cold: descriptor caches emptied, so
both images are described inside the call; one warm-up call first; the median of ``--repeats`` repetitions per pair,
then the median over pairs; ``torch.cuda.synchronize`` before each clock read on CUDA), the speed-up over the CPU
reference, peak CUDA memory, the distance of every transferred keypoint from the CPU reference (max, median, 95th
percentile, in pixels of the original images), PCK@0.1 against the pairs' ground truth (s2t, kp-bbox threshold,
pair-averaged, as the demo reports it) and, for information (no tolerance), how far the dense mappings
(``estimate_mapping``) move: their median distance and the share of pixels moved by more than 2 px. Dense mappings
move more than keypoints: in ambiguous regions (background, repeated texture) two matches nearly tie, and reduced
precision flips some of them by a feature cell.

Tolerances (``TOLERANCES``, written into the JSON protocol; a row outside them is ``within_tolerance: false`` and
the script exits with status 1):

- fp32 on the device: every point within 0.5 px of the CPU. The arithmetic is the same up to summation order (and,
  with torch's defaults, TF32 convolutions on recent NVIDIA GPUs; the flags are recorded), which moves a soft-argmax
  match by hundredths of a pixel; half a pixel allows that with a wide margin and still catches a real device bug
  (a wrong coordinate convention or device transfer moves points by a whole feature cell, 10 px or more here).
- bf16 and fp16: median within 2 px. Only the per-image forward runs at reduced precision (correlation, soft argmax
  and coordinates stay float32), so the descriptors' cosines move by about 1e-2 (bf16 keeps 8 significant bits,
  fp16 11) and most matches by a small fraction of a feature cell (a cell is 14 working pixels, about 12 px of a
  300 px example image). 2 px is a sixth of a cell; a few points may jump a cell where two matches nearly tie,
  which the median ignores and max / p95 report. A CPU dry run at bf16 (``--device cpu --precisions fp32 bf16
  --pairs 2``) gave medians of 0.06-0.39 px for nn best, both SFNet zoo models and SCorrSAN, maxima up to 4 px.

No GPU number in docs/ comes from this file until someone with a GPU runs it:
``PYTHONPATH=src python benchmarks/gpu_check.py``, sized for one run of under 8 minutes (per matcher two model
loads, one CPU pass over the pairs and about 80 GPU transfers; progress is printed as JSON lines; ``--budget-s``,
default 420, starts no new matcher after that many seconds). Writes gpu_check.json in benchmarks/results/speed/
(``--json``: elsewhere; the file is not in the repository until a GPU run writes it, so no path to it is named
here). A dry run of the plumbing on a machine without a GPU: ``--device cpu --precisions fp32 bf16 --pairs 1``.
Without CUDA, ``--device cuda`` stops at once with one line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, results_dir, write_script_result

from corrmark import load_matcher
from corrmark.bench import forget_descriptors
from corrmark.device import PRECISIONS, resolve_device
from corrmark.errors import CorrmarkError
from corrmark.eval.pck import pck_per_pair, threshold_length
from corrmark.io import read_image
from corrmark.zoo import list_zoo, load_zoo_matcher

OUT = results_dir("speed") / "gpu_check.json"
PAIRS_FILE = ROOT / "examples" / "pairs.json"
ALPHA = 0.1
NN_LABEL = "nn (best)"
TOLERANCES = {  # pixels of the original images, against the CPU at fp32 (module docstring says why)
    "fp32": {"max_px": 0.5},
    "bf16": {"median_px": 2.0},
    "fp16": {"median_px": 2.0},
}


# --- inputs -----------------------------------------------------------------------------------------------------------


def load_pairs(limit: int | None) -> list[dict]:
    """The first ``limit`` bundled pairs, read: images, source points and the target's ground truth."""
    listed = json.loads(PAIRS_FILE.read_text())["pairs"][:limit]
    folder = PAIRS_FILE.parent
    return [{"name": f"{pair['source']} -> {pair['target']}", "source": read_image(folder / pair["source"]),
             "target": read_image(folder / pair["target"]),
             "source_points": np.asarray(pair["source_points"], dtype=float),
             "target_points": np.asarray(pair["target_points"], dtype=float)} for pair in listed]


def matcher_builds(wanted: list[str] | None) -> list[tuple[str, object]]:
    """(label, build(device)) for ``nn`` (best) and every zoo matcher whose file is present; ``wanted`` picks some."""
    builds = [(NN_LABEL, lambda device: load_matcher("nn", preset="best", device=device))]
    builds += [(entry.name, lambda device, name=entry.name: load_zoo_matcher(name, device=device))
               for entry in list_zoo() if entry.kind == "matcher" and entry.available]
    if wanted:
        unknown = sorted(set(wanted) - {label for label, _ in builds})
        if unknown:
            raise CorrmarkError(f"unknown or absent matcher(s) {', '.join(unknown)}; available: "
                                f"{', '.join(label for label, _ in builds)}")
        builds = [(label, build) for label, build in builds if label in wanted]
    return builds


# --- measuring --------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_transfer(matcher, pair: dict, device: torch.device) -> tuple[np.ndarray, float]:
    """(transferred points (N, 2), seconds) of one cold ``transfer_keypoints``."""
    forget_descriptors(matcher)
    synchronize(device)
    started = time.perf_counter()
    points = matcher.transfer_keypoints(pair["source"], pair["target"], pair["source_points"])
    synchronize(device)
    return np.asarray(points, dtype=np.float64), time.perf_counter() - started


def run_matcher(matcher, pairs: list[dict], repeats: int, device: torch.device) -> tuple[list[np.ndarray], float]:
    """(points per pair from the first timed repetition, median seconds per pair) after one warm-up call."""
    timed_transfer(matcher, pairs[0], device)  # lazy initialisation (kernels, allocator) is not timed
    points, per_pair = [], []
    for pair in pairs:
        runs = [timed_transfer(matcher, pair, device) for _ in range(repeats)]
        points.append(runs[0][0])
        per_pair.append(statistics.median(seconds for _, seconds in runs))
    return points, statistics.median(per_pair)


def pck(points: list[np.ndarray], pairs: list[dict]) -> float:
    """Pair-averaged PCK@ALPHA (s2t, kp-bbox of the target's ground truth)."""
    scores = []
    for predicted, pair in zip(points, pairs):
        truth = pair["target_points"]
        valid = np.isfinite(truth).all(axis=1)
        length = threshold_length("kp-bbox", pair["target"].shape[:2], points=truth, valid=valid)
        correct, total = pck_per_pair(predicted, truth, valid, length, (ALPHA,))[ALPHA]
        scores.append(correct / max(total, 1))
    return float(np.mean(scores))


def agreement(points: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Distances (px) of every point from the reference: max, median, 95th percentile, and how many are not finite
    (NaN or inf: e.g. an fp16 overflow)."""
    distances = np.linalg.norm(np.concatenate(points) - np.concatenate(reference), axis=1)
    finite = distances[np.isfinite(distances)]
    summary = {"points": int(len(distances)), "non_finite_points": int(len(distances) - len(finite))}
    for key, value in (("max_px", np.max), ("median_px", np.median), ("p95_px", lambda d: np.percentile(d, 95))):
        summary[key] = round(float(value(finite)), 4) if len(finite) else None
    return summary


def mapping_agreement(mappings: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Dense mappings against the reference: median distance (px) and the share of pixels moved by more than 2 px."""
    distances = np.concatenate([np.linalg.norm(mapping - expected, axis=-1).ravel()
                                for mapping, expected in zip(mappings, reference)])
    finite = distances[np.isfinite(distances)]
    return {"mapping_median_px": round(float(np.median(finite)), 4) if len(finite) else None,
            "mapping_share_over_2px": round(float(np.mean(~(distances <= 2.0))), 4)}


def dense_mappings(matcher, pairs: list[dict]) -> list[np.ndarray]:
    return [matcher.estimate_mapping(pair["source"], pair["target"]) for pair in pairs]


def within_tolerance(precision: str, summary: dict) -> bool:
    if summary["non_finite_points"]:
        return False
    return all(summary[key] is not None and summary[key] <= limit for key, limit in TOLERANCES[precision].items())


def check_matcher(label: str, build, pairs: list[dict], device: torch.device, precisions: list[str],
                  repeats: int, cpu_repeats: int) -> tuple[list[dict], dict]:
    """The rows of one matcher (CPU reference first) and its ``describe()``."""
    cpu = torch.device("cpu")
    reference_matcher = build(cpu)
    described = reference_matcher.describe()
    reference, cpu_seconds = run_matcher(reference_matcher, pairs, cpu_repeats, cpu)
    reference = {"points": reference, "mappings": dense_mappings(reference_matcher, pairs),
                 "seconds": cpu_seconds, "pck": pck(reference, pairs)}
    del reference_matcher
    rows = [{"matcher": label, "device": "cpu", "precision": "fp32", "reference": True,
             "seconds_per_pair": round(cpu_seconds, 4), f"pck@{ALPHA}": round(reference["pck"], 4)}]
    report(rows[-1])
    matcher = build(device)
    for precision in precisions:
        row = {"matcher": label, "device": str(device), "precision": precision}
        try:
            row.update(measure_precision(matcher, precision, pairs, device, repeats, reference))
        except Exception as error:  # noqa: BLE001 (one failure, e.g. bf16 on a GPU without it, must not lose the
            # other rows of a GPU run; the row records it and fails the check)
            row.update(error=f"{type(error).__name__}: {error}", within_tolerance=False)
        rows.append(row)
        report(row)
    return rows, described


def measure_precision(matcher, precision: str, pairs: list[dict], device: torch.device, repeats: int,
                      reference: dict) -> dict:
    """Timing, agreement with the CPU reference and PCK of ``matcher`` at ``precision``."""
    matcher.set_precision(precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    points, seconds = run_matcher(matcher, pairs, repeats, device)
    summary = agreement(points, reference["points"])
    row = {"seconds_per_pair": round(seconds, 4), "speedup_vs_cpu": round(reference["seconds"] / seconds, 2),
           **summary, **mapping_agreement(dense_mappings(matcher, pairs), reference["mappings"])}
    row[f"pck@{ALPHA}"] = round(pck(points, pairs), 4)
    row["pck_change"] = round(row[f"pck@{ALPHA}"] - reference["pck"], 4)
    if device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["within_tolerance"] = within_tolerance(precision, summary)
    return row


def report(row: dict) -> None:
    print(json.dumps(row), flush=True)


# --- the script -------------------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check against the CPU (default cuda)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--pairs", type=int, default=None, help="the first N bundled pairs (default all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per pair on the device")
    parser.add_argument("--cpu-repeats", type=int, default=1, help="timed repetitions per pair of the CPU reference")
    parser.add_argument("--matchers", nargs="+", default=None,
                        help=f"only these: '{NN_LABEL}' and/or zoo matcher names (default: all present)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no new matcher after this many seconds (the rest are listed as skipped)")
    parser.add_argument("--json", default=str(OUT), help=f"result file (default {OUT.relative_to(ROOT)})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    started = time.perf_counter()
    try:
        device = resolve_device(args.device)  # no CUDA: one line, before anything is loaded
        if (args.pairs is not None and args.pairs < 1) or args.repeats < 1 or args.cpu_repeats < 1:
            raise CorrmarkError("--pairs, --repeats and --cpu-repeats must be at least 1")
        builds = matcher_builds(args.matchers)
    except CorrmarkError as error:
        print(f"gpu_check: error: {error}", file=sys.stderr)
        return 2
    pairs = load_pairs(args.pairs)
    print(f"gpu_check: {len(builds)} matcher(s), {len(pairs)} pair(s), CPU fp32 vs {device} "
          f"{' '.join(args.precisions)}", flush=True)
    rows, described, skipped = [], {}, []
    for label, build in builds:
        if time.perf_counter() - started > args.budget_s:
            skipped.append(label)
            print(f"gpu_check: skipping {label}: the {args.budget_s:.0f} s budget is spent", flush=True)
            continue
        print(f"gpu_check: {label} ({time.perf_counter() - started:.0f} s)", flush=True)
        try:
            matcher_rows, described[label] = check_matcher(label, build, pairs, device, args.precisions,
                                                           args.repeats, args.cpu_repeats)
        except Exception as error:  # noqa: BLE001 (a matcher that fails to load or run: the others still run)
            matcher_rows = [{"matcher": label, "error": f"{type(error).__name__}: {error}", "within_tolerance": False}]
            report(matcher_rows[0])
        rows.extend(matcher_rows)
    checked = [row for row in rows if not row.get("reference")]
    passed = all(row["within_tolerance"] for row in checked)
    protocol = {
        "pairs_from": str(PAIRS_FILE.relative_to(ROOT)), "pairs": [pair["name"] for pair in pairs],
        "reference": "cpu fp32", "device": str(device), "precisions": args.precisions,
        "repeats": args.repeats, "cpu_repeats": args.cpu_repeats, "warmup_calls": 1,
        "timing": "cold transfer_keypoints (descriptor caches emptied); median of repeats per pair, median over "
                  "pairs; torch.cuda.synchronize before each clock read on cuda",
        "tolerances": TOLERANCES, "distances": "pixels of the original images, from the CPU fp32 keypoints",
        "dense_mappings": "estimate_mapping against the CPU fp32 one, for information (no tolerance)",
        "pck": {"alpha": ALPHA, "direction": "s2t", "threshold": "kp-bbox", "averaging": "pair"},
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
    }
    if device.type == "cuda":
        protocol["gpu"] = torch.cuda.get_device_name(device)
    metrics = {"rows": rows, "all_within_tolerance": passed, "skipped_matchers": skipped}
    write_script_result(args.json, metrics, protocol, {"matchers": described},
                        seconds=time.perf_counter() - started, argv=argv)
    print(f"gpu_check: {'all rows within tolerance' if passed else 'some rows OUTSIDE tolerance'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
