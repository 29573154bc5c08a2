"""Middlebury ``.flo`` optical-flow files: float32 magic 202021.25, int32 width, int32 height, then float32 (u, v)
interleaved row by row. Values above 1e9 in magnitude mean "unknown" (Middlebury convention)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESHOLD = 1e9


def read_flo(path: str | os.PathLike, *, unknown_to_nan: bool = True) -> np.ndarray:
    """Read a ``.flo`` file into float32 (H, W, 2) displacements (u, v); unknown entries become NaN by default."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read flow file {path}: {error}") from None
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise DatasetError(f"not a Middlebury .flo file (bad magic number): {path}")
    width, height = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    expected = 12 + 8 * width * height
    if width <= 0 or height <= 0 or len(raw) != expected:
        raise DatasetError(f"flow file {path} holds {len(raw)} bytes, expected {expected} for {width}x{height}")
    flow = np.frombuffer(raw[12:], "<f4").reshape(height, width, 2).astype(np.float32)
    if unknown_to_nan:
        flow[np.abs(flow) > UNKNOWN_FLOW_THRESHOLD] = np.nan
    return flow


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write (H, W, 2) displacements to a ``.flo`` file; NaN is written as 1e10 (Middlebury "unknown")."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    flow = np.where(np.isfinite(flow), flow, np.float32(1e10))
    height, width = flow.shape[:2]
    header = np.asarray([FLO_MAGIC], "<f4").tobytes() + np.asarray([width, height], "<i4").tobytes()
    Path(path).write_bytes(header + flow.astype("<f4").tobytes())


def flow_to_mapping(flow: np.ndarray) -> np.ndarray:
    """Displacements (H, W, 2) defined on grid A -> absolute (x, y) pixel coordinates in image B (a mapping)."""
    height, width = flow.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return flow + np.stack([xs, ys], axis=-1)
