"""How sure a transferred point is (cycle consistency) and which annotated image's proposal wins."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..io import points_inside
from ..models.base import Matcher
from .inputs import AnnotatedImage

CYCLE_SCALE = 0.05  # cycle error, as a fraction of the annotated keypoint-box diagonal, that scores exp(-1)
CONFIDENCE_RULE = (f"forward-backward cycle consistency: exp(-d / ({CYCLE_SCALE} * diagonal of the annotated "
                   f"keypoint box)), d = distance between an annotated point and its round trip through the target")
COMBINATION_RULE = "per point, the annotated image whose proposal has the highest confidence (ties: the earlier one)"


def cycle_scale(points: np.ndarray, image_shape: tuple[int, int]) -> float:
    """The length s of the confidence rule: CYCLE_SCALE x the keypoint-box diagonal (image diagonal if degenerate)."""
    diagonal = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0))) if len(points) else 0.0
    if diagonal < 1.0:
        diagonal = float(np.hypot(*image_shape))
    return CYCLE_SCALE * diagonal


def transfer_with_confidence(matcher: Matcher, source: AnnotatedImage, target: np.ndarray):
    """Propose target locations for the source's labelled points.

    Returns (points (N, 2), confidence (N,), similarity (N,) or None); rows the source does not label or the matcher
    sends off the target are NaN with confidence 0.
    """
    count = len(source.points)
    points, confidence = np.full((count, 2), np.nan), np.zeros(count)
    similarity = np.full(count, np.nan) if hasattr(matcher, "match_points") else None
    labelled = np.flatnonzero(source.visible)
    if len(labelled) == 0:
        return points, confidence, similarity
    forward, forward_similarity = _transfer(matcher, source.image, target, source.points[labelled])
    on_target = points_inside(forward, target.shape[:2])
    if similarity is not None:
        similarity[labelled[on_target]] = forward_similarity[on_target]
    kept = labelled[on_target]
    if len(kept) == 0:
        return points, confidence, similarity
    back, _ = _transfer(matcher, target, source.image, forward[on_target])
    distances = np.linalg.norm(back - source.points[kept], axis=1)
    scale = cycle_scale(source.points[labelled], source.image.shape[:2])
    points[kept] = forward[on_target]
    confidence[kept] = np.nan_to_num(np.exp(-distances / scale), nan=0.0)  # a NaN round trip is no evidence
    return points, confidence, similarity


def _transfer(matcher: Matcher, source: np.ndarray, target: np.ndarray, points: np.ndarray):
    """Transfer points; also the matcher's own similarity per point when it offers one."""
    if hasattr(matcher, "match_points"):
        moved, similarity = matcher.match_points(source, target, points)
        return np.asarray(moved, dtype=np.float64).reshape(-1, 2), np.asarray(similarity, dtype=np.float64)
    return np.asarray(matcher.transfer_keypoints(source, target, points), dtype=np.float64).reshape(-1, 2), None


def combine_proposals(proposals: Sequence[tuple]):
    """Per point, the proposal (points, confidence, similarity) with the highest confidence.

    Returns (points, confidence, similarity or None, source index per point, -1 where no proposal has the point).
    """
    all_points = np.stack([p for p, _, _ in proposals])  # (S, N, 2)
    confidences = np.stack([confidence for _, confidence, _ in proposals])  # (S, N)
    # a missing proposal ranks below any real one, even one whose confidence underflowed to 0
    ranked = np.where(np.isfinite(all_points).all(axis=2), confidences, -1.0)
    best = ranked.argmax(axis=0)  # the first maximum: ties go to the earlier annotated image
    columns = np.arange(confidences.shape[1])
    points = all_points[best, columns]
    confidence = confidences[best, columns]
    similarity = None
    if proposals[0][2] is not None:
        similarity = np.stack([s for _, _, s in proposals])[best, columns]
    found = np.isfinite(points).all(axis=1)
    return points, np.where(found, confidence, 0.0), similarity, np.where(found, best, -1)
