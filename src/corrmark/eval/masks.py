"""Mask-transfer metrics (Caltech-101, TSS): label-transfer accuracy and intersection over union.

Both compare a predicted foreground mask (e.g. the source mask warped onto the target grid) with the ground-truth
mask of the same image; the two must have the same shape. Anything that is not bool is binarised with ``> 0.5``
(so probability maps and 0/1 masks both work; 0/255 masks also work).
"""

from __future__ import annotations

import numpy as np

from ..errors import CorrmarkError


def _binary(mask, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise CorrmarkError(f"{name} must be a 2-D (H, W) mask, got shape {array.shape}")
    return array if array.dtype == bool else array > 0.5


def _pair(pred_mask, gt_mask) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _binary(pred_mask, "pred_mask"), _binary(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise CorrmarkError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    return pred, gt


def label_transfer_accuracy(pred_mask, gt_mask, region=None) -> float:
    """LT-ACC: the fraction of pixels whose foreground/background label equals the ground truth.

    ``region`` (bool (H, W), optional) restricts the count to some pixels (e.g. where a warp is defined);
    an empty region raises ``CorrmarkError``.
    """
    pred, gt = _pair(pred_mask, gt_mask)
    agree = pred == gt
    if region is not None:
        region = _binary(region, "region")
        if region.shape != gt.shape:
            raise CorrmarkError(f"region shape {region.shape} differs from the masks' {gt.shape}")
        if not region.any():
            raise CorrmarkError("label_transfer_accuracy: the region is empty")
        agree = agree[region]
    return float(agree.mean())


def mask_iou(pred_mask, gt_mask) -> float:
    """Intersection over union of the foregrounds; two empty masks agree perfectly and give 1.0."""
    pred, gt = _pair(pred_mask, gt_mask)
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


class MaskAccumulator:
    """Mean LT-ACC and IoU over pairs, overall and per category.

    ``result()`` -> ``{"lt_acc": m, "iou": m, "pairs": n, "per_category": {cat: {"lt_acc", "iou", "pairs"}},
    "mean_over_categories": {"lt_acc", "iou"}}``; ``lt_acc``/``iou`` are means over all pairs (not of categories).
    """

    def __init__(self):
        self._rows: list[tuple[str | None, float, float]] = []

    def add(self, pred_mask, gt_mask, category: str | None = None) -> dict[str, float]:
        """Score one pair and return its ``{"lt_acc": ..., "iou": ...}``."""
        scores = (label_transfer_accuracy(pred_mask, gt_mask), mask_iou(pred_mask, gt_mask))
        self._rows.append((category, *scores))
        return {"lt_acc": scores[0], "iou": scores[1]}

    def result(self) -> dict:
        per_category = {}
        for category in sorted({c for c, _, _ in self._rows if c is not None}):
            per_category[category] = _means([r for r in self._rows if r[0] == category])
        return {
            **_means(self._rows),
            "per_category": per_category,
            "mean_over_categories": {
                key: float(np.mean([v[key] for v in per_category.values()])) if per_category else None
                for key in ("lt_acc", "iou")
            },
        }


def _means(rows) -> dict:
    if not rows:
        return {"lt_acc": None, "iou": None, "pairs": 0}
    values = np.asarray([(lt, iou) for _, lt, iou in rows], dtype=np.float64)
    return {"lt_acc": float(values[:, 0].mean()), "iou": float(values[:, 1].mean()), "pairs": len(rows)}
