"""PCK for faces with the inter-ocular threshold: L = distance between the reference face's two eye landmarks.

A separate accumulator (``corrmark.eval.pck`` is unchanged): same per-pair counting (``pck_per_pair``: a keypoint is
correct iff its error <= alpha * L, boundary included), averaged per pair. The eyes are landmarks ``eyes`` (MTFL:
0 = left eye, 1 = right eye) of the *reference* side, i.e. the side holding the ground truth (``t2s``: the source).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidKeypointsError
from .pck import DEFAULT_ALPHAS, alpha_key, pck_per_pair


def interocular_distance(points, eyes=(0, 1)) -> float:
    """Distance between landmarks ``eyes[0]`` and ``eyes[1]`` of ``points`` (K, 2); both must be finite."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    first, second = points[eyes[0]], points[eyes[1]]
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        raise InvalidKeypointsError("the inter-ocular threshold needs both eye landmarks")
    distance = float(np.linalg.norm(first - second))
    if distance <= 0:
        raise InvalidKeypointsError("the inter-ocular distance is zero (both eyes at the same point)")
    return distance


class InterOcularPCK:
    """Per-pair PCK with L = the reference inter-ocular distance; ``result()`` mirrors ``PCKAccumulator``'s keys."""

    def __init__(self, direction: str, alphas=DEFAULT_ALPHAS, eyes=(0, 1)):
        self.direction, self.alphas, self.eyes = direction, tuple(float(a) for a in alphas), tuple(eyes)
        self._pairs: list[dict] = []
        self.skipped_pairs = 0
        self.errors: list[float] = []  # per valid keypoint, error / L
        self.per_landmark: dict[int, list[float]] = {}

    def add(self, pred, gt, valid) -> dict[str, float] | None:
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        valid = np.asarray(valid, dtype=bool).reshape(-1) & np.isfinite(gt).all(axis=1)
        if not valid.any():
            self.skipped_pairs += 1
            return None
        length = interocular_distance(gt, self.eyes)
        counts = pck_per_pair(pred, gt, valid, length, self.alphas)
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
        if len(pred) == len(gt):
            pred = pred[valid]
        relative = np.linalg.norm(pred - gt[valid], axis=1) / length
        self.errors.extend(relative.tolist())
        for landmark, error in zip(np.flatnonzero(valid), relative):
            self.per_landmark.setdefault(int(landmark), []).append(float(error))
        self._pairs.append(counts)
        return {alpha_key(a): c / n for a, (c, n) in counts.items()}

    def protocol(self) -> dict:
        return {"direction": self.direction, "threshold": "inter-ocular", "averaging": "pair",
                "alphas": list(self.alphas), "resolution": "original", "eyes": list(self.eyes)}

    def result(self) -> dict:
        pck = {}
        for alpha in self.alphas:
            values = [counts[alpha][0] / counts[alpha][1] for counts in self._pairs]
            pck[alpha_key(alpha)] = float(np.mean(values)) if values else None
        keypoints = int(sum(next(iter(c.values()))[1] for c in self._pairs))
        return {"pck": pck, "pairs": len(self._pairs), "keypoints": keypoints, "skipped_pairs": self.skipped_pairs,
                "mean_error_interocular": float(np.mean(self.errors)) if self.errors else None,
                "per_landmark": {str(k): {"mean_error_interocular": float(np.mean(v)),
                                          **{alpha_key(a): float(np.mean(np.asarray(v) <= a)) for a in self.alphas}}
                                 for k, v in sorted(self.per_landmark.items())},
                "protocol": self.protocol()}
