"""Seconds per pair of corrmark's SFNet against the official SFNet code, same backbone, same process (issue 20).

    PYTHONPATH=src python benchmarks/speed_vs_official_sfnet.py --official /path/to/SFNet
    PYTHONPATH=src python benchmarks/speed_vs_official_sfnet.py --corrmark-only --json /tmp/corrmark_rows.json

The official code (github.com/cvlab-yonsei/SFNet) is fetched by the user; ``--official`` is its folder, called
through an adapter (``--adapter FILE.py``; default ``benchmarks/official_sfnet_adapter.py``, whose docstring lists
what it assumes about that code). Without the official code, ``--corrmark-only`` measures the corrmark rows alone and
writes them only to ``--json``: the comparison stays absent rather than guessed. The result of a comparison goes to
``speed_vs_official_sfnet.json`` in benchmarks/results/speed/ unless ``--json`` says otherwise.

Protocol (written into the result):
- contestants, all with a ResNet-101 (``--backbone``, a timm name, for corrmark) with random weights (nothing is
  downloaded) at ``--size`` px (320): corrmark SFNet on conv4 + conv5 (``timm:<backbone>:3`` and ``:4``) with
  adaptation kernels [3, 3] and with the paper's [5, 3]; the official SFNet through its adapter.
- one pair, the first of examples/pairs.json, with its 10 source keypoints. ``dense``: corrmark ``estimate_mapping``
  (cold descriptor cache), the official model on the two resized, ImageNet-normalised images (corrmark's resizing)
  plus its flow resized to the target image; ``keypoints``: corrmark ``transfer_keypoints`` of the 10 points (its
  sparse path, cold cache), the official model on the pair in the other direction plus its flow read at the points
  (``dense_to_keypoints``). ``backbone``: corrmark's frozen features of both images alone (resizing and backbone).
- one process, ``--threads`` torch threads (2); one warm-up call of everything first; then ``--repetitions`` (15)
  repetitions, each timing every contestant's dense and keypoint calls once in turn (the order rotated by one each
  repetition) and the backbone once; the ratios are taken per repetition and their medians reported:
  ``speedup_dense`` / ``speedup_keypoints`` = official seconds / corrmark [3, 3] seconds (goal >= 2), ``*_per_backbone``
  = a contestant's seconds / the backbone's seconds of the same repetition.
- peak RSS (``resource.getrusage``): the process's peak during a contestant's timed calls, all models being loaded;
  on Linux the peak is restarted before each call (``/proc/self/clear_refs``), so ``peak_rss_increase_mb`` is what the
  call itself added.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import ROOT, results_dir, write_script_result

from corrmark.io import read_image
from corrmark.models.sfnet import SFNetMatcher
from corrmark.ops import normalized_to_pixel, pixel_to_normalized
from corrmark.preprocess import Preprocess

RESULT = results_dir("speed") / "speed_vs_official_sfnet.json"
DEFAULT_ADAPTER = Path(__file__).with_name("official_sfnet_adapter.py")
OFFICIAL = "official SFNet"
KERNELS = {"corrmark SFNet [3,3]": [3, 3], "corrmark SFNet [5,3]": [5, 3]}
REFERENCE = "corrmark SFNet [3,3]"  # the speed-ups are official / this
PAPER_KERNELS = "corrmark SFNet [5,3]"
GOAL_SPEEDUP = 2.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROG = "speed_vs_official_sfnet.py"


class HarnessError(SystemExit):
    """Ends the script with one line on stderr (exit status 1)."""

    def __init__(self, message: str):
        super().__init__(f"{PROG}: error: {' '.join(str(message).split())}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--official", help="folder of a checkout of github.com/cvlab-yonsei/SFNet (fetched by you)")
    parser.add_argument("--adapter", help="Python file calling the official code (default: official_sfnet_adapter.py)")
    parser.add_argument("--corrmark-only", action="store_true", help="no official code: measure the corrmark rows")
    parser.add_argument("--json", help=f"result file (default with --official: {RESULT.name} in {RESULT.parent})")
    parser.add_argument("--size", type=int, default=320, help="square input side, px")
    parser.add_argument("--backbone", default="resnet101", help="timm model name of corrmark's backbone")
    parser.add_argument("--repetitions", type=int, default=15)
    parser.add_argument("--threads", type=int, choices=(1, 2), default=2, help="torch threads")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for what cannot be measured as asked."""
    if args.official is None and not args.corrmark_only:
        raise HarnessError("give --official PATH (a checkout of github.com/cvlab-yonsei/SFNet, fetched by you) or "
                           "--corrmark-only")
    if args.official is not None and args.corrmark_only:
        raise HarnessError("--official and --corrmark-only exclude each other")
    if args.official is not None and not Path(args.official).is_dir():
        raise HarnessError(f"--official {args.official}: no such folder (expected a checkout of "
                           "github.com/cvlab-yonsei/SFNet, fetched by you)")
    if args.adapter is not None and args.official is None:
        raise HarnessError("--adapter calls the official code: give --official PATH too")
    if args.adapter is not None and not Path(args.adapter).is_file():
        raise HarnessError(f"--adapter {args.adapter}: no such file")
    if args.corrmark_only and args.json is not None and Path(args.json).resolve() == RESULT.resolve():
        raise HarnessError(f"--corrmark-only does not write {RESULT.name}: the official rows would be missing")
    if args.repetitions < 1 or args.size < 32:
        raise HarnessError("--repetitions must be >= 1 and --size >= 32")


# --- the contestants --------------------------------------------------------------------------------------------


@dataclass
class Pair:
    source: np.ndarray  # (H_s, W_s, 3) uint8
    target: np.ndarray  # (H_t, W_t, 3) uint8
    points: np.ndarray  # (N, 2) source (x, y) pixels
    name: str


@dataclass
class Contestant:
    """``dense()`` and ``keypoints()`` compute one pair; ``reset()`` runs untimed before each (emptying caches)."""

    name: str
    dense: Callable[[], object]
    keypoints: Callable[[], object]
    reset: Callable[[], None] = lambda: None
    model: dict = field(default_factory=dict)


def example_pair() -> Pair:
    listed = json.loads((ROOT / "examples" / "pairs.json").read_text())["pairs"][0]
    return Pair(read_image(ROOT / "examples" / listed["source"]), read_image(ROOT / "examples" / listed["target"]),
                np.asarray(listed["source_points"], dtype=float), f"{listed['source']} -> {listed['target']}")


def random_weights_file(backbone: str, folder: Path) -> Path:
    """A seeded random state dict of the timm model, so corrmark builds the backbone without downloading."""
    from corrmark.backbones.timm_features import create_timm_model

    torch.manual_seed(0)
    path = folder / f"{backbone}_random.pth"
    torch.save(create_timm_model(backbone, pretrained=False).state_dict(), path)
    return path


def corrmark_matchers(backbone: str, size: int, weights: Path) -> dict[str, SFNetMatcher]:
    levels = [[f"timm:{backbone}:3"], [f"timm:{backbone}:4"]]
    return {name: SFNetMatcher({"levels": levels, "image_size": size, "kernel_sizes": kernels},
                               weights_files={f"timm:{backbone}": str(weights)})
            for name, kernels in KERNELS.items()}


def corrmark_contestant(name: str, matcher: SFNetMatcher, pair: Pair) -> Contestant:
    return Contestant(name, dense=lambda: matcher.estimate_mapping(pair.source, pair.target),
                      keypoints=lambda: matcher.transfer_keypoints(pair.source, pair.target, pair.points),
                      reset=matcher._cache.clear, model={"contestant": name, **matcher.describe()})


def backbone_call(matcher: SFNetMatcher, pair: Pair) -> Callable[[], None]:
    """corrmark's frozen features of both images: resizing and the backbone, nothing learned."""
    def describe_both():
        with torch.no_grad():
            for image in (pair.source, pair.target):
                matcher.features(matcher.preprocess.to_input(image, device=matcher.device))
    return describe_both


def load_adapter(path: Path):
    spec = importlib.util.spec_from_file_location(f"sfnet_adapter_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as for an import (dataclasses in the adapter look their module up)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise HarnessError(f"cannot import adapter {path}: {type(error).__name__}: {error}") from error
    if not callable(getattr(module, "build", None)):
        raise HarnessError(f"adapter {path} has no build(size, device, official)")
    return module


def adapter_failure(path: Path, stage: str, error: Exception) -> HarnessError:
    """One line: where it failed and why (the default adapter's errors already name the assumption and the way
    out)."""
    message = f"adapter {path} failed while {stage}: {type(error).__name__}: {error}"
    if "--adapter" not in message:
        message += "; pass --adapter FILE.py to call the official code another way"
    return HarnessError(message)


def official_contestant(adapter_path: Path, official: Path, size: int, pair: Pair) -> Contestant:
    """The official model through its adapter: ``forward`` is built here and checked on the pair once."""
    adapter = load_adapter(adapter_path)
    try:
        forward = adapter.build(size, "cpu", official)
    except Exception as error:
        raise adapter_failure(adapter_path, "building the official model", error) from error
    to_keypoints = getattr(adapter, "dense_to_keypoints", read_flow_at_points)
    preprocess = Preprocess(size)

    def flow(first: np.ndarray, second: np.ndarray) -> torch.Tensor:
        with torch.no_grad():  # inference, whatever the adapter does
            return forward(imagenet_input(preprocess, first), imagenet_input(preprocess, second))

    def dense():
        return flow_to_mapping(flow(pair.source, pair.target), pair.target.shape[:2], pair.source.shape[:2])

    def keypoints():  # the flow on the source grid, values in the target: read at the source points
        return to_keypoints(flow(pair.target, pair.source), pair.points, pair.source.shape[:2], pair.target.shape[:2])

    try:
        check_flow(flow(pair.source, pair.target))
    except Exception as error:
        raise adapter_failure(adapter_path, "calling the official model", error) from error
    return Contestant(OFFICIAL, dense, keypoints, model={"contestant": OFFICIAL, "code": str(official),
                                                         "code_commit": git_commit(official),
                                                         "adapter": str(adapter_path)})


def imagenet_input(preprocess: Preprocess, image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, S, S)``: corrmark's resizing, then torchvision's ImageNet normalisation."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (preprocess.to_input(image) - mean) / std


def check_flow(flow) -> None:
    if not (isinstance(flow, torch.Tensor) and flow.ndim == 4 and flow.shape[0] == 1 and flow.shape[-1] == 2):
        shape = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"forward must return a (1, h, w, 2) tensor, got {shape}")


def flow_to_mapping(flow: torch.Tensor, target_hw, source_hw) -> np.ndarray:
    """``(1, h, w, 2)`` ``[-1, 1]`` target-grid flow -> ``(H_t, W_t, 2)`` float32 source pixels (bilinear)."""
    resized = F.interpolate(flow.permute(0, 3, 1, 2), size=tuple(target_hw), mode="bilinear", align_corners=False)
    return normalized_to_pixel(resized[0].permute(1, 2, 0), source_hw).numpy().astype(np.float32, copy=False)


def read_flow_at_points(flow: torch.Tensor, points: np.ndarray, source_hw, target_hw) -> np.ndarray:
    """``(1, h, w, 2)`` ``[-1, 1]`` source-grid flow read (bilinearly) at ``(N, 2)`` source pixels -> ``(N, 2)``
    float64 target pixels: the default ``dense_to_keypoints``."""
    grid = pixel_to_normalized(torch.as_tensor(points, dtype=flow.dtype), source_hw).view(1, 1, -1, 2)
    values = F.grid_sample(flow.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False)  # (1, 2, 1, N)
    return normalized_to_pixel(values[0, :, 0].T, target_hw).double().numpy()


def git_commit(folder: Path) -> str | None:
    """The checkout's commit, recorded with the result (None when it is not a git checkout)."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


# --- timing -----------------------------------------------------------------------------------------------------


def restart_peak_rss() -> bool:
    """Linux: the peak RSS restarts from the current RSS (False where that is not possible)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(call: Callable[[], object], reset: Callable[[], None]) -> dict:
    """Seconds, process peak RSS (MB) and the peak's increase during one call; ``reset`` runs first, untimed."""
    reset()
    restart_peak_rss()
    before = peak_rss_mb()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    after = peak_rss_mb()
    return {"seconds": seconds, "peak_rss_mb": after, "peak_rss_increase_mb": after - before}


def interleaved(contestants: list[Contestant], backbone: Callable[[], None], repetitions: int) -> dict:
    """``{name: {"dense": [...], "keypoints": [...]}, "backbone": {"backbone": [...]}}``: one timing dict per
    repetition, after one untimed warm-up of everything; each repetition starts one contestant later."""
    for contestant in contestants:
        contestant.reset()
        contestant.dense()
        contestant.reset()
        contestant.keypoints()
    backbone()
    timings = {contestant.name: {"dense": [], "keypoints": []} for contestant in contestants}
    timings["backbone"] = {"backbone": []}
    for repetition in range(repetitions):
        shift = repetition % len(contestants)
        for contestant in contestants[shift:] + contestants[:shift]:
            timings[contestant.name]["dense"].append(timed(contestant.dense, contestant.reset))
            timings[contestant.name]["keypoints"].append(timed(contestant.keypoints, contestant.reset))
        timings["backbone"]["backbone"].append(timed(backbone, lambda: None))
        print(f"repetition {repetition + 1}/{repetitions}: " + ", ".join(
            f"{name} {kind} {runs[-1]['seconds']:.3f} s" for name, kinds in timings.items()
            for kind, runs in kinds.items()), flush=True)
    return timings


def median_ratio(numerators: list[dict], denominators: list[dict]) -> float:
    """The median over repetitions of ``numerator seconds / denominator seconds`` (pairs by repetition)."""
    return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(numerators, denominators, strict=True))


def summarise(timings: dict) -> dict:
    """The metrics: per-contestant rows and, when the official code was timed, the speed-ups (medians of
    per-repetition ratios)."""
    backbone = timings["backbone"]["backbone"]
    rows = []
    for name, runs in timings.items():
        if name == "backbone":
            continue
        rows.append({"contestant": name,
                     "seconds_per_pair_dense": round(statistics.median(r["seconds"] for r in runs["dense"]), 4),
                     "seconds_per_pair_keypoints": round(statistics.median(r["seconds"] for r in runs["keypoints"]), 4),
                     "backbone_seconds": round(statistics.median(r["seconds"] for r in backbone), 4),
                     "dense_per_backbone": round(median_ratio(runs["dense"], backbone), 3),
                     "keypoints_per_backbone": round(median_ratio(runs["keypoints"], backbone), 3),
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["dense"] + runs["keypoints"]), 1),
                     "peak_rss_increase_mb": round(max(r["peak_rss_increase_mb"]
                                                       for r in runs["dense"] + runs["keypoints"]), 1),
                     "seconds_dense_each": [round(r["seconds"], 4) for r in runs["dense"]],
                     "seconds_keypoints_each": [round(r["seconds"], 4) for r in runs["keypoints"]]})
    metrics = {"official_compared": OFFICIAL in timings, "rows": rows,
               "backbone_seconds": round(statistics.median(r["seconds"] for r in backbone), 4),
               "backbone_seconds_each": [round(r["seconds"], 4) for r in backbone]}
    if OFFICIAL in timings:
        for suffix, corrmark in (("", REFERENCE), ("_paper_kernels", PAPER_KERNELS)):
            for kind in ("dense", "keypoints"):
                metrics[f"speedup_{kind}{suffix}"] = round(
                    median_ratio(timings[OFFICIAL][kind], timings[corrmark][kind]), 3)
        metrics["goal_speedup"] = GOAL_SPEEDUP
        metrics["meets_goal"] = min(metrics["speedup_dense"], metrics["speedup_keypoints"]) >= GOAL_SPEEDUP
    return metrics


# --- the run ----------------------------------------------------------------------------------------------------


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    peak_restartable = restart_peak_rss()
    torch.set_num_threads(args.threads)
    try:
        pair = example_pair()
        adapter = Path(args.adapter or DEFAULT_ADAPTER).resolve()
        contestants = []
        if args.official is not None:  # first: a broken adapter fails before the long corrmark set-up
            contestants.append(official_contestant(adapter, Path(args.official).resolve(), args.size, pair))
        with tempfile.TemporaryDirectory() as folder:
            matchers = corrmark_matchers(args.backbone, args.size, random_weights_file(args.backbone, Path(folder)))
        contestants += [corrmark_contestant(name, matcher, pair) for name, matcher in matchers.items()]
        timings = interleaved(contestants, backbone_call(matchers[REFERENCE], pair), args.repetitions)
    finally:
        torch.set_num_threads(threads)
    metrics = summarise(timings)
    print(json.dumps({key: value for key, value in metrics.items() if not key.endswith("_each")}, indent=1))
    json_path = args.json or (None if args.corrmark_only else RESULT)
    if json_path is None:
        print("not written: --corrmark-only without --json")
        return None
    protocol = {"description": __doc__.split("(written into the result):")[1].strip(), "size": args.size,
                "backbone": args.backbone, "repetitions": args.repetitions, "threads": args.threads,
                "pair": pair.name, "points": len(pair.points), "warm_up_calls": 1,
                "peak_rss_restarted_per_call": peak_restartable,
                "official": args.official, "adapter": str(adapter) if args.official else None}
    return write_script_result(json_path, metrics, protocol, [contestant.model for contestant in contestants],
                               seconds=time.perf_counter() - started, argv=argv)


if __name__ == "__main__":
    main()
