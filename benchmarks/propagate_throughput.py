"""Images per second of ``propagate_keypoints`` on a folder: reading ahead and sharding against one image at a time.

    OMP_NUM_THREADS=1 python benchmarks/propagate_throughput.py \
        --stanfordextra ../shared/data/stanfordextra-sample/sample_imgs --pf-willow ../shared/data/pf-willow

Protocol (written into the result):
- images: the StanfordExtra and PF-WILLOW images (sorted, StanfordExtra first), at most ``--images`` (default 200)
  targets; the first StanfordExtra image is the annotated one, with a 3x3 grid of points, and is not a target.
- every mode propagates to the same targets with a freshly loaded matcher (``--preset``, default ``best``), so no
  descriptor is cached from an earlier mode; its time is the run's own ``seconds`` (matcher loading excluded).
- modes: ``one at a time`` (1 torch thread, images read in turn), ``read ahead`` (1 thread, ``--workers`` DataLoader
  processes decoding ``--batch-size`` images at a time), ``2 shards`` (2 processes of 1 thread, gloo, the merged
  output written by rank 0; timed on rank 0 from a common start), ``2 threads`` (one process, 2 torch threads).
- the outputs of ``read ahead`` and ``2 shards`` must equal the one-at-a-time output byte for byte (asserted);
  ``2 threads`` is compared and reported only (a different thread count may sum in another order).
- ``cpu_seconds_per_image``: CPU time of the run in all its processes (DataLoader workers and shards included) per
  image; ``cores_busy`` = CPU time / wall time, the cores the mode actually got (on a shared machine, what limits a
  speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import torch
from common import results_dir, write_script_result

from corrmark import load_matcher
from corrmark.io import read_image
from corrmark.propagate import IMAGE_EXTENSIONS, propagate_keypoints

RESULT = results_dir("propagate") / "propagate_throughput.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stanfordextra", default="../shared/data/stanfordextra-sample/sample_imgs")
    parser.add_argument("--pf-willow", default="../shared/data/pf-willow")
    parser.add_argument("--images", type=int, default=200, help="at most this many target images")
    parser.add_argument("--preset", default="best", help="nn matcher preset")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes of the read-ahead mode")
    parser.add_argument("--batch-size", type=int, default=4, help="images a worker decodes at a time")
    parser.add_argument("--json", default=str(RESULT))
    return parser.parse_args(argv)


def image_files(roots: list[str]) -> list[Path]:
    files = []
    for root in roots:
        files += sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return files


def grid_points(path: Path):
    height, width = read_image(path).shape[:2]
    return [[width * fx, height * fy] for fy in (0.25, 0.5, 0.75) for fx in (0.25, 0.5, 0.75)]


def cpu_seconds(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_mode(preset: str, annotated, targets, out: Path, threads: int = 1, **options) -> dict:
    """One process (and its DataLoader workers, counted once they exit): the run's summary and CPU seconds."""
    torch.set_num_threads(threads)
    matcher = load_matcher("nn", preset=preset, device="cpu")
    before = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)
    summary = propagate_keypoints(matcher, annotated, targets, out, resume=False, progress=False, **options)
    torch.set_num_threads(1)
    return {**summary, "cpu_seconds": cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - before}


def shard_worker(rank: int, world_size: int, port: int, preset: str, annotated, targets, out: str, report: str):
    """One process of the sharded mode: load, wait for the other, propagate the shard; each writes its CPU seconds,
    rank 0 also the summary."""
    import torch.distributed as dist

    from corrmark.train.distributed import DistributedSetup, start_process_group

    torch.set_num_threads(1)
    matcher = load_matcher("nn", preset=preset, device="cpu")
    setup = DistributedSetup(world_size=world_size, rank=rank, init_method=f"tcp://127.0.0.1:{port}")
    start_process_group(setup, "cpu")
    dist.barrier()  # both matchers loaded: the timing starts together
    before = cpu_seconds()
    summary = propagate_keypoints(matcher, annotated, targets, out, resume=False, progress=False, distributed=setup)
    Path(f"{report}.{rank}").write_text(json.dumps({**summary, "cpu_seconds": cpu_seconds() - before}))
    dist.destroy_process_group()


def run_shards(preset: str, annotated, targets, out: Path, world_size: int = 2) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = out.with_suffix(".summary.json")
    mp.spawn(shard_worker, args=(world_size, port, preset, annotated, targets, str(out), str(report)),
             nprocs=world_size, join=True)
    reports = [json.loads(Path(f"{report}.{rank}").read_text()) for rank in range(world_size)]
    return {**reports[0], "cpu_seconds": sum(part["cpu_seconds"] for part in reports)}


def decode_milliseconds(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        read_image(path)
    return 1000 * (time.perf_counter() - started) / len(paths)


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    files = image_files([args.stanfordextra, args.pf_willow])
    source, targets = files[0], files[1:args.images + 1]
    annotated = [(source, grid_points(source))]
    torch.set_num_threads(1)
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        modes = [("one at a time", {}), ("read ahead", {"workers": args.workers, "batch_size": args.batch_size}),
                 ("2 shards", None), ("2 threads", {"threads": 2})]
        outputs = {}
        for index, (mode, options) in enumerate(modes):
            out = folder / f"mode{index}.json"
            print(f"{mode} ...", flush=True)
            if options is None:
                summary = run_shards(args.preset, annotated, targets, out)
            else:
                summary = run_mode(args.preset, annotated, targets, out, **options)
            outputs[mode] = out.read_bytes()
            rows.append({"mode": mode, "workers": (options or {}).get("workers", 0),
                         "batch_size": (options or {}).get("batch_size"), "processes": 2 if options is None else 1,
                         "threads_per_process": (options or {}).get("threads", 1), "seconds": summary["seconds"],
                         "images_per_second": round(len(targets) / summary["seconds"], 3),
                         "cpu_seconds_per_image": round(summary["cpu_seconds"] / len(targets), 3),
                         "cores_busy": round(summary["cpu_seconds"] / summary["seconds"], 2),
                         "identical_to_one_at_a_time": outputs[mode] == outputs["one at a time"]})
            print(rows[-1], flush=True)
    for row in rows:
        row["speedup"] = round(row["images_per_second"] / rows[0]["images_per_second"], 3)
    for mode in ("read ahead", "2 shards"):
        assert outputs[mode] == outputs["one at a time"], f"{mode}: the output differs from one at a time"
    metrics = {"modes": rows, "decode_ms_per_image": round(decode_milliseconds(targets), 2)}
    protocol = {"description": __doc__.split("(written into the result):")[1].strip(), "targets": len(targets),
                "requested": args.images, "annotated": str(source), "roots": [args.stanfordextra, args.pf_willow]}
    load = {"load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    write_script_result(args.json, metrics, protocol, {"name": "nn", "preset": args.preset}, extra=load,
                        seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
