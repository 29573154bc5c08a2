"""``corrmark bench``: seconds per pair and peak memory of matchers, per model and image size.

Each (matcher, size) runs in a fresh process (``spawn``), so its peak resident memory (that process's own peak:
the interpreter, torch, the model and the pairs) is its own and nothing accumulates from one row to the next. A
pair is timed cold: the descriptor caches are emptied before every call, so both images are described, as for a
user matching one new pair. One warm-up pair runs first (lazy initialisation is not timed, its memory is).

    rows = bench_matchers([preset_spec("best")], example_pairs(), sizes=[224, 336], repeats=1, device="cpu")
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .cache import DescriptorCache
from .data import open_dataset
from .demo import examples_dir
from .errors import CheckpointError, CorrmarkError, UnknownNameError
from .io import read_image
from .models import load_matcher
from .provenance import machine_info

DEFAULT_PRESETS = ("dinov2-block8", "best")  # the demo's two zero-shot matchers
DEFAULT_PF_WILLOW_PAIRS = 20


@dataclass(frozen=True)
class MatcherSpec:
    """A matcher to benchmark: a ``load_matcher`` name, checkpoint and options, or a ``factory``
    ``(device=..., **options) -> Matcher`` (a picklable top-level function: it is called in the child process)."""

    name: str = "nn"
    checkpoint: str | None = None
    options: dict = field(default_factory=dict)
    factory: Callable | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        title = f"{self.name}:{self.checkpoint}" if self.checkpoint else self.name
        if self.options:
            title += "(" + ", ".join(f"{key}={value}" for key, value in sorted(self.options.items())) + ")"
        return title

    def build(self, device, image_size: int | None):
        options = dict(self.options)
        if image_size is not None:
            options["image_size"] = int(image_size)
        if self.factory is not None:
            return self.factory(device=device, **options)
        return load_matcher(self.name, checkpoint=self.checkpoint, device=device, **options)


def parse_matcher_spec(text: str) -> MatcherSpec:
    """``name`` or ``name:checkpoint`` (e.g. ``sfnet:runs/sfnet_cub/final.pt``)."""
    name, _, checkpoint = str(text).partition(":")
    if not name:
        raise CorrmarkError(f"a matcher is given as name or name:checkpoint, got {text!r}")
    return MatcherSpec(name, checkpoint or None)


def preset_spec(preset: str) -> MatcherSpec:
    """The zero-shot ``nn`` matcher with a named preset (``dinov2-block8``, ``best``)."""
    return MatcherSpec("nn", options={"preset": preset})


# --- input pairs ----------------------------------------------------------------------------------------------------


def example_pairs(limit: int | None = None) -> list[dict]:
    """The bundled example pairs (``examples/pairs.json``): works offline on a fresh machine."""
    folder = examples_dir()
    pairs = json.loads((folder / "pairs.json").read_text())["pairs"]
    chosen = [{"source": str(folder / pair["source"]), "target": str(folder / pair["target"]),
               "source_points": pair["source_points"]} for pair in pairs]
    return _spread(chosen, limit)


def pf_willow_pairs(root, limit: int | None = DEFAULT_PF_WILLOW_PAIRS) -> list[dict]:
    """``limit`` PF-WILLOW pairs spread evenly over the dataset (paths and annotated source keypoints)."""
    dataset = open_dataset("pf-willow", root, load_images=False)
    picked = _spread(list(range(len(dataset))), limit)
    pairs = []
    for index in picked:
        sample = dataset[index]
        points = np.asarray(sample["source_points"], dtype=float)
        pairs.append({"source": str(sample["source_path"]), "target": str(sample["target_path"]),
                      "source_points": points[np.isfinite(points).all(axis=1)].tolist()})
    return pairs


def _spread(items: list, limit: int | None) -> list:
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise CorrmarkError(f"the number of pairs must be at least 1, got {limit}")
    return [items[i * len(items) // limit] for i in range(limit)]


# --- measuring --------------------------------------------------------------------------------------------------------


def bench_matchers(specs, image_pairs: list[dict], sizes=(None,), repeats: int = 1, device="cpu",
                   threads: int | None = None, report: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per (matcher, image size), each measured in a fresh process.

    ``specs``: :class:`MatcherSpec` objects or ``"name[:checkpoint]"`` strings. ``image_pairs``: dicts with
    ``source``, ``target`` (paths or arrays) and ``source_points`` (N, 2). ``sizes``: image sizes passed as the
    matcher's ``image_size``; None = the matcher's own. A matcher whose input size is fixed by its checkpoint is
    measured once, at that size (its row says ``fixed_size``). ``report`` is called with each row as it is done.
    In a script, call it under ``if __name__ == "__main__":`` (the spawned children re-import the main module).
    """
    if not image_pairs:
        raise CorrmarkError("the benchmark needs at least one image pair")
    if int(repeats) < 1:
        raise CorrmarkError(f"repeats must be at least 1, got {repeats}")
    specs = [parse_matcher_spec(spec) if isinstance(spec, str) else spec for spec in specs]
    for spec in specs:  # fail before the first (possibly long) measurement, not after it
        if spec.checkpoint and not os.path.isfile(spec.checkpoint):
            raise CheckpointError(f"checkpoint file not found: {spec.checkpoint} (matcher {spec.title})")
    rows = []
    for spec in specs:
        for size in list(sizes) or [None]:
            row = _measure_in_child(spec, image_pairs, size, int(repeats), str(device), threads)
            rows.append(row)
            if report is not None:
                report(row)
            if row.get("fixed_size"):
                break  # the other sizes would measure the same model again
    return rows


def _measure_in_child(spec: MatcherSpec, pairs, size, repeats, device, threads) -> dict:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: the child's peak memory is its own
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, spec, pairs, size, repeats, device, threads), daemon=True)
    process.start()
    sender.close()  # the child holds the only sending end: recv() fails instead of hanging if it dies
    try:
        outcome = receiver.recv()
    except EOFError:
        process.join()
        raise CorrmarkError(f"benchmarking {spec.title} at {_size_text(size)}: its process ended without a result "
                            f"(exit code {process.exitcode}; out of memory, or see the error above)") from None
    finally:
        receiver.close()
    process.join()
    if "error" in outcome:
        raise CorrmarkError(f"benchmarking {spec.title} at {_size_text(size)}: {outcome['error']}")
    return outcome["row"]


def _size_text(size) -> str:
    return "its own size" if size is None else f"size {size}"


def _child(sender, spec, pairs, size, repeats, device, threads) -> None:
    try:
        outcome = {"row": measure_matcher(spec, pairs, size, repeats, device, threads)}
    except CorrmarkError as error:
        outcome = {"error": str(error)}
    except Exception as error:  # reported to the parent in one line; the child's stderr has the traceback
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    sender.send(outcome)
    sender.close()


def measure_matcher(spec: MatcherSpec, pairs: list[dict], size: int | None = None, repeats: int = 1, device="cpu",
                    threads: int | None = None) -> dict:
    """Time one matcher in THIS process (``bench_matchers`` calls it in a fresh child); its peak RSS is this
    process's."""
    if threads:
        torch.set_num_threads(int(threads))
    matcher, fixed_size = _build(spec, device, size)
    loaded = [(read_image(pair["source"]), read_image(pair["target"]), np.asarray(pair["source_points"], float))
              for pair in pairs]
    _match(matcher, *loaded[0])  # warm-up: lazy initialisation is not timed
    keypoints, dense = [], []
    for source, target, points in loaded * repeats:
        seconds = _match(matcher, source, target, points)
        keypoints.append(seconds[0])
        dense.append(seconds[1])
    described = matcher.describe()
    row = {
        "matcher": spec.title,
        "describe": described,
        "image_size": _native_size(described) if size is None or fixed_size else int(size),
        "seconds_per_pair_keypoints": round(float(np.mean(keypoints)), 4),
        "seconds_per_pair_dense": round(float(np.mean(dense)), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "pairs": len(loaded), "repeats": repeats, "device": str(device),
        "machine": machine_info(),
    }
    if fixed_size:
        row["fixed_size"] = True
    if torch.device(device).type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def _build(spec: MatcherSpec, device, size):
    """``(matcher, fixed_size)``: a matcher that takes no ``image_size`` option is built at its own size."""
    if size is None:
        return spec.build(device, None), False
    try:
        return spec.build(device, size), False
    except (UnknownNameError, TypeError) as error:
        if "image_size" not in str(error):
            raise
        return spec.build(device, None), True


def _match(matcher, source, target, points) -> tuple[float, float]:
    """Seconds of one keypoint transfer and of one dense mapping."""
    return (_cold_seconds(matcher, matcher.transfer_keypoints, source, target, points),
            _cold_seconds(matcher, matcher.estimate_mapping, source, target))


def _cold_seconds(matcher, call, *arguments) -> float:
    forget_descriptors(matcher)  # both images are described inside the timed call
    started = time.perf_counter()
    call(*arguments)
    return time.perf_counter() - started


def forget_descriptors(matcher) -> None:
    """Empty the per-image descriptor caches (``_cache``) of the matcher and of the objects it holds."""
    for owner in (matcher, *vars(matcher).values()):
        cache = getattr(owner, "_cache", None)
        if isinstance(cache, (DescriptorCache, dict)):
            cache.clear()


def _native_size(described: dict):
    return described.get("image_size", described.get("input_size"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status, the peak of this process's own memory map. ``ru_maxrss`` is not used
    there because the kernel carries the parent's peak over into it at ``exec``: a child spawned by a process holding
    700 MB would report at least 700 MB. Elsewhere: ``ru_maxrss`` (kilobytes; bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # POSIX only: imported where /proc is missing (macOS), never on Windows

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- the command ------------------------------------------------------------------------------------------------------


def run_bench(matchers=None, presets=None, sizes=None, pairs: int | None = None, pf_willow=None, repeats: int = 1,
              device="cpu", threads: int | None = None, report: Callable[[dict], None] | None = None,
              precision: str | None = None) -> dict:
    """What ``corrmark bench`` writes: the rows and how they were measured. Without ``matchers`` / ``presets`` the
    demo's zero-shot presets are measured; without ``pf_willow`` the bundled example pairs are used. ``precision``
    (``bf16``, ``fp16``) is given to every matcher; None keeps their default (fp32)."""
    specs = [parse_matcher_spec(text) for text in matchers or []] + [preset_spec(name) for name in presets or []]
    specs = specs or [preset_spec(name) for name in DEFAULT_PRESETS]
    if precision is not None:
        specs = [replace(spec, options={**spec.options, "precision": precision}) for spec in specs]
    if pf_willow:
        image_pairs = pf_willow_pairs(pf_willow, pairs if pairs is not None else DEFAULT_PF_WILLOW_PAIRS)
        source = f"pf-willow {pf_willow}"
    else:
        image_pairs, source = example_pairs(pairs), "examples/pairs.json"
    rows = bench_matchers(specs, image_pairs, sizes or [None], repeats, device, threads, report)
    return {"benchmark": "corrmark bench", "pairs_from": source, "pairs": len(image_pairs), "rows": rows,
            "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def format_row(row: dict) -> str:
    return (f"{row['matcher']} @ {row['image_size']}: {row['seconds_per_pair_keypoints']:.3f} s/pair keypoints, "
            f"{row['seconds_per_pair_dense']:.3f} s/pair dense, peak RSS {row['peak_rss_mb']:.0f} MB, "
            f"{row['threads']} threads")
