"""Seconds per image and grid of the frozen descriptors: DINOv2 at stride 14 against overlapping patches (stride 7).

Issue 16's finer-descriptor table: for each descriptor (backbone spec, layers, square input side) the grid it gives
and the seconds one image costs (``DescriptorExtractor`` forward of a batch of ``--batch`` random images, after one
warm-up batch; median over ``--repeats`` batches, divided by the batch). ``--threads`` torch threads (default 1: on a
shared machine the ratios between rows, not the absolute seconds, are the point).

    PYTHONPATH=src python benchmarks/descriptor_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import results_dir, write_script_result

from corrmark.backbones.descriptors import DescriptorExtractor, parse_backbone_spec

RESULT = results_dir("speed") / "descriptor_cost.json"
#: (label, backbone, layers, input side): the JLAD face descriptors at 168 px and the zero-shot ones
DESCRIPTORS = [
    ("jlad 21 x 21 (effnet first)", "efficientnet_lite0+dinov2_vits14@norm", [[2, 3, 4], [9]], 168),
    ("jlad stride 7", "dinov2_vits14_s7@norm+efficientnet_lite0", [[9], [2, 3, 4]], 168),
    ("best (stride 14)", "dinov2_vits14@norm+efficientnet_lite0", [[9], [3, 4]], 336),
    ("best at stride 7, 224 px", "dinov2_vits14_s7@norm+efficientnet_lite0", [[9], [3, 4]], 224),
    ("best at stride 7, 336 px", "dinov2_vits14_s7@norm+efficientnet_lite0", [[9], [3, 4]], 336),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(RESULT))
    return parser.parse_args(argv)


@torch.no_grad()
def measure(backbone: str, layers, side: int, batch: int, repeats: int) -> dict:
    extractor = DescriptorExtractor(parse_backbone_spec(backbone, layers)).eval()
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    grid = tuple(extractor(images).shape[-2:])  # also the warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        extractor(images)
        seconds.append((time.perf_counter() - started) / batch)
    return {"backbone": backbone, "layers": layers, "image_size": side, "grid": list(grid),
            "seconds_per_image": round(statistics.median(seconds), 4)}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started, rows = time.perf_counter(), []
    for label, backbone, layers, side in DESCRIPTORS:
        rows.append({"descriptor": label, **measure(backbone, layers, side, args.batch, args.repeats)})
        print(rows[-1], flush=True)
    protocol = {"description": __doc__.split("\n\n")[1], "batch": args.batch, "repeats": args.repeats,
                "threads": args.threads}
    write_script_result(args.json, {"rows": rows}, protocol, {"descriptors": [row["descriptor"] for row in rows]},
                        seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
