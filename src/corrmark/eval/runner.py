"""Run a matcher over a pair dataset under an explicit PCK protocol, and print the result as a table."""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from ..models.base import Matcher
from ..provenance import machine_info
from .interocular import InterOcularPCK
from .pck import PCKAccumulator, PCKProtocol, evaluation_side


def evaluate_matcher(matcher: Matcher, dataset, protocol: PCKProtocol, limit: int | None = None,
                     progress: bool = True, eyes: tuple[int, int] | None = None) -> dict:
    """PCK of ``matcher`` on ``dataset`` (a sequence of pair samples with keypoints).

    For each pair, the query side's valid keypoints are transferred with ``matcher.transfer_keypoints`` (s2t: source
    -> target; t2s: target -> source) and scored on the reference side. The result holds the PCK summary of
    ``PCKAccumulator.result()`` plus the dataset, the matcher's settings, timing and the machine. With ``eyes``
    (faces: the indices of the two eye keypoints) the same transfers are also scored with the inter-ocular threshold
    (``InterOcularPCK``, same direction and alphas) under ``"inter-ocular"``.
    """
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    accumulator = PCKAccumulator(protocol)
    interocular = InterOcularPCK(protocol.direction, protocol.alphas, eyes) if eyes is not None else None
    started = time.perf_counter()
    match_seconds = 0.0
    for index in tqdm(range(count), desc=f"{getattr(dataset, 'name', 'pairs')} {protocol.direction}",
                      disable=not progress, unit="pair"):
        sample = dataset[index]
        side = evaluation_side(sample, protocol.direction)
        if not side["valid"].any():
            predicted = np.zeros((0, 2))
            accumulator.add(predicted, side["reference_points"], side["valid"], side["reference_shape"])
        else:
            tick = time.perf_counter()
            predicted = matcher.transfer_keypoints(side["query_image"], side["reference_image"], side["query_points"])
            match_seconds += time.perf_counter() - tick
            accumulator.add(predicted, side["reference_points"], side["valid"], side["reference_shape"],
                            bbox=side["reference_bbox"], category=side["category"])
        if interocular is not None:
            interocular.add(predicted, side["reference_points"], side["valid"])
    result = {"dataset": getattr(dataset, "name", type(dataset).__name__)}
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        result["dataset_info"] = describe()
    result.update(accumulator.result())
    if interocular is not None:
        result["inter-ocular"] = interocular.result()
    result.update({
        "limit": limit,
        "matcher": matcher.describe(),
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_per_pair": round(match_seconds / max(count, 1), 4),
        "machine": machine_info(),
    })
    return result


def format_pck_table(result: dict) -> str:
    """Per-category and overall PCK as an aligned text table, with the protocol underneath."""
    keys = list(result["pck"])
    header = ["category", "pairs"] + [f"PCK@{key}" for key in keys]
    rows = [[name, str(entry["pairs"])] + [_cell(entry.get(key)) for key in keys]
            for name, entry in result["per_category"].items()]
    rows.append(["all", str(result["pairs"])] + [_cell(result["pck"][key]) for key in keys])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))) for row in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    protocol = result["protocol"]
    lines.append(", ".join(f"{key}={value}" for key, value in protocol.items()))
    if "inter-ocular" in result:
        eyes = result["inter-ocular"]
        lines.append("inter-ocular threshold: " + "  ".join(f"PCK@{key} {_cell(value)}" for key, value in
                                                            eyes["pck"].items()) + f" ({eyes['pairs']} pairs)")
    if "seconds_per_pair" in result:
        lines.append(f"{result['seconds_per_pair']:.3f} s/pair (matching only), {result['seconds']:.1f} s in all")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"
