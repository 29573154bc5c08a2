"""PCK (percentage of correct keypoints) with every protocol choice explicit.

Published semantic-correspondence numbers depend on four choices (see the evaluation-protocols notes); a
``PCKProtocol`` names all of them and is written into every result:

- ``direction``: which image's keypoints go in and which are the ground truth (``evaluation_side``).
  ``s2t``: ``pred = matcher.transfer_keypoints(source, target, source_points[valid])``, compared with
  ``target_points[valid]``; the threshold length comes from the *target* side (its image, box or keypoints).
  ``t2s``: ``pred = matcher.transfer_keypoints(target, source, target_points[valid])`` (equivalently: the
  target-to-source mapping ``matcher.estimate_mapping(source, target)`` read at the target keypoints), compared with
  ``source_points[valid]``; the threshold length comes from the *source* side.
  In both cases the side holding the ground truth is called the *reference* side below.
- ``threshold``: the length L (``threshold_length``): ``img`` = max(H, W) of the reference image, ``bbox`` = max(w, h)
  of the reference object box, ``kp-bbox`` = max(w, h) of the box around the reference's *valid* keypoints.
  A keypoint is correct iff ``||pred - gt|| <= alpha * L`` (the boundary counts as correct, with a 1e-9 relative
  tolerance for float rounding of alpha * L).
- ``averaging``: ``pair`` = mean over pairs of each pair's fraction of correct keypoints (pairs without a valid
  keypoint are skipped and counted); ``keypoint`` = all keypoints pooled.
- ``resolution``: ``"original"`` measures in original pixels; an int R measures as if the reference image had been
  resized to R x R (x scaled by R / W, y by R / H, for predictions, ground truth and the threshold box or keypoints;
  the ``img`` length becomes R). Predictions are always given in original reference-image pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from ..errors import CorrmarkError, InvalidKeypointsError, UnknownNameError

DIRECTIONS = ("t2s", "s2t")
THRESHOLDS = ("img", "bbox", "kp-bbox")
AVERAGING = ("pair", "keypoint")
DEFAULT_ALPHAS = (0.05, 0.1, 0.15)
BOUNDARY_TOLERANCE = 1e-9


def alpha_key(alpha: float) -> str:
    """The string key of an alpha in results: 0.05 -> "0.05", 0.1 -> "0.1"."""
    return f"{float(alpha):g}"


# --- threshold length ----------------------------------------------------------------------------------------------


def threshold_length(kind: str, image_shape_hw, bbox=None, points=None, valid=None) -> float:
    """The PCK threshold length L of the reference side.

    ``img``: max(H, W) of ``image_shape_hw``. ``bbox``: max(x1 - x0, y1 - y0) of ``bbox`` = (x0, y0, x1, y1).
    ``kp-bbox``: max(w, h) of the box around the keypoints that are valid (``valid`` (N,), default all) *and* finite:
    padded or missing keypoints (NaN, or rows excluded by ``valid``) never enlarge the box.
    """
    _check_choice(kind, THRESHOLDS, "PCK threshold")
    if kind == "img":
        height, width = _shape(image_shape_hw)
        return float(max(height, width))
    if kind == "bbox":
        if bbox is None:
            raise CorrmarkError("PCK threshold 'bbox' needs an object box; this sample has none (use img or kp-bbox)")
        x0, y0, x1, y1 = np.asarray(bbox, dtype=np.float64).reshape(4)
        return float(max(x1 - x0, y1 - y0))
    return _keypoint_box_length(points, valid)


def _keypoint_box_length(points, valid) -> float:
    if points is None:
        raise CorrmarkError("PCK threshold 'kp-bbox' needs the reference keypoints")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    keep = np.isfinite(points).all(axis=1)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool).reshape(-1)
    if not keep.any():
        raise InvalidKeypointsError("PCK threshold 'kp-bbox' needs at least one valid keypoint")
    real = points[keep]
    extent = real.max(axis=0) - real.min(axis=0)
    return float(extent.max())


def _shape(image_shape_hw) -> tuple[int, int]:
    shape = tuple(int(v) for v in tuple(image_shape_hw)[:2])
    if len(shape) != 2 or min(shape) < 1:
        raise CorrmarkError(f"image shape must be (H, W) with positive sizes, got {image_shape_hw!r}")
    return shape


# --- per pair ------------------------------------------------------------------------------------------------------


def pck_per_pair(pred, gt, valid, length: float, alphas=DEFAULT_ALPHAS) -> dict[float, tuple[int, int]]:
    """For each alpha, ``(n_correct, n_valid)`` of one pair.

    ``gt`` (N, 2) and ``valid`` (N,) cover all keypoints; ``pred`` is (N, 2) or (n_valid, 2) (one row per valid
    keypoint, in order). A keypoint is correct iff its distance <= alpha * length; a NaN prediction is wrong.
    """
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    given_valid = _valid_mask(valid, gt)
    pred = expand_predictions(pred, given_valid)
    valid = given_valid & np.isfinite(gt).all(axis=1)
    with np.errstate(invalid="ignore"):
        distances = np.linalg.norm(pred[valid] - gt[valid], axis=1)  # a NaN prediction is never <= alpha * L
        # The boundary counts as correct; the tiny relative tolerance keeps it so when alpha * L rounds down
        # (0.15 * 100 and similar products are not exact in binary floating point).
        return {
            alpha: (int(np.sum(distances <= alpha * length * (1 + BOUNDARY_TOLERANCE))), int(valid.sum()))
            for alpha in alphas
        }


def _valid_mask(valid, gt: np.ndarray) -> np.ndarray:
    mask = np.asarray(valid, dtype=bool).reshape(-1)
    if len(mask) != len(gt):
        raise InvalidKeypointsError(f"valid has {len(mask)} entries but there are {len(gt)} ground-truth keypoints")
    return mask


def expand_predictions(pred, valid: np.ndarray) -> np.ndarray:
    """Predictions for all N keypoints: (N, 2) is returned as is, (n_valid, 2) is scattered into NaN rows."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    if len(pred) == len(valid):
        return pred
    if len(pred) != int(valid.sum()):
        raise InvalidKeypointsError(
            f"predictions have {len(pred)} rows; expected {len(valid)} (all keypoints) "
            f"or {int(valid.sum())} (the valid ones)"
        )
    full = np.full((len(valid), 2), np.nan)
    full[valid] = pred
    return full


# --- protocol ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCKProtocol:
    """The four choices behind a PCK number (see the module docstring); validated on construction.

    ``direction``, ``threshold`` and ``averaging`` have no default on purpose: published numbers differ by more than
    the gaps between methods when they differ, so every caller states them.
    """

    direction: str
    threshold: str
    averaging: str
    alphas: tuple = field(default=DEFAULT_ALPHAS)
    resolution: str | int = "original"

    def __post_init__(self):
        _check_choice(self.direction, DIRECTIONS, "PCK direction")
        _check_choice(self.threshold, THRESHOLDS, "PCK threshold")
        _check_choice(self.averaging, AVERAGING, "PCK averaging")
        alphas = tuple(float(a) for a in np.atleast_1d(self.alphas))
        if not alphas or any(not np.isfinite(a) or a <= 0 for a in alphas):
            raise CorrmarkError(f"PCK alphas must be positive numbers, got {self.alphas!r}")
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "resolution", _check_resolution(self.resolution))

    def to_dict(self) -> dict:
        """JSON-friendly form, written into every result."""
        data = asdict(self)
        data["alphas"] = list(self.alphas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PCKProtocol":
        return cls(**{**data, "alphas": tuple(data.get("alphas", DEFAULT_ALPHAS))})


def _check_choice(value, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise UnknownNameError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def _check_resolution(resolution):
    if resolution == "original":
        return resolution
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool) and resolution > 0:
        return int(resolution)
    raise CorrmarkError(f"PCK resolution must be 'original' or a positive int, got {resolution!r}")


def rescale_for_protocol(points, image_shape_hw, resolution) -> np.ndarray:
    """Points (or box corners) in original pixels -> the protocol's measuring frame (unchanged for "original")."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if resolution == "original":
        return points
    height, width = _shape(image_shape_hw)
    return points * np.asarray([resolution / width, resolution / height])


# --- which side is which -------------------------------------------------------------------------------------------


def evaluation_side(sample: dict, direction: str) -> dict:
    """Split a pair sample into what the matcher receives and what it is scored against.

    Returns ``query_image, query_points`` (the valid keypoints only, (n_valid, 2)), ``query_path``, ``query_side``
    and ``reference_image, reference_points`` (all N rows), ``reference_bbox, reference_shape, reference_path,
    reference_side, valid``, with ``s2t``: query = source, reference = target; ``t2s``: query = target, reference =
    source. The runner calls ``matcher.transfer_keypoints(query_image, reference_image, query_points)`` and passes the
    result to ``PCKAccumulator.add(pred, reference_points, valid, reference_shape, reference_bbox, category)``.
    Images are ``None`` when the dataset was opened with ``load_images=False``.
    """
    _check_choice(direction, DIRECTIONS, "PCK direction")
    query, reference = ("source", "target") if direction == "s2t" else ("target", "source")
    valid = np.asarray(sample["valid"], dtype=bool)
    return {
        "query_side": query,
        "query_image": sample.get(f"{query}_image"),
        "query_path": sample.get(f"{query}_path"),
        "query_points": np.asarray(sample[f"{query}_points"], dtype=np.float64)[valid],
        "reference_side": reference,
        "reference_image": sample.get(f"{reference}_image"),
        "reference_path": sample.get(f"{reference}_path"),
        "reference_points": np.asarray(sample[f"{reference}_points"], dtype=np.float64),
        "reference_bbox": sample.get(f"{reference}_bbox"),
        "reference_shape": _reference_shape(sample, reference),
        "valid": valid,
        "category": sample.get("category"),
    }


def _reference_shape(sample: dict, side: str):
    if sample.get(f"{side}_shape") is not None:
        return tuple(sample[f"{side}_shape"])
    image = sample.get(f"{side}_image")
    return None if image is None else tuple(image.shape[:2])


# --- accumulation --------------------------------------------------------------------------------------------------


class PCKAccumulator:
    """Collects per-pair counts under one ``PCKProtocol`` and reports PCK overall and per category.

    ``result()`` returns ``{"pck": {"0.05": ...}, "per_category": {cat: {"0.05": ..., "pairs": n, "keypoints": k}},
    "mean_over_categories": {"0.05": ...}, "pairs": n, "keypoints": k, "skipped_pairs": s, "protocol": {...}}``.
    ``pck`` is computed over all pairs at once with the protocol's averaging (it is *not* the mean of the categories;
    that is ``mean_over_categories``, the unweighted mean of the per-category values). ``pairs`` counts the pairs
    that entered the result; pairs without a valid keypoint are in ``skipped_pairs`` only. Pairs added with
    ``category=None`` count in ``pck`` but in no category. Values are fractions in [0, 1] (None when nothing was added).
    """

    def __init__(self, protocol: PCKProtocol):
        if not isinstance(protocol, PCKProtocol):
            raise CorrmarkError(f"PCKAccumulator needs a PCKProtocol, got {type(protocol).__name__}")
        self.protocol = protocol
        self._pairs: list[tuple[str | None, dict[float, tuple[int, int]]]] = []
        self.skipped_pairs = 0

    def add(self, pred, gt, valid, image_shape_hw, bbox=None, category: str | None = None) -> dict[str, float] | None:
        """Score one pair; all arguments describe the *reference* side (see ``evaluation_side``).

        ``pred``: (N, 2) or (n_valid, 2) predictions in original reference-image pixels; ``gt`` (N, 2), ``valid``
        (N,); ``image_shape_hw`` the reference image's (H, W); ``bbox`` its object box (for ``threshold='bbox'``).
        Returns this pair's PCK per alpha key, or None when the pair has no valid keypoint (then it is skipped).
        """
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        given_valid = _valid_mask(valid, gt)
        pred = expand_predictions(pred, given_valid)
        valid = given_valid & np.isfinite(gt).all(axis=1)
        if not valid.any():
            self.skipped_pairs += 1
            return None
        resolution = self.protocol.resolution
        gt_scaled = rescale_for_protocol(gt, image_shape_hw, resolution)
        pred_scaled = rescale_for_protocol(pred, image_shape_hw, resolution)
        length = self._length(image_shape_hw, bbox, gt_scaled, valid)
        counts = pck_per_pair(pred_scaled, gt_scaled, valid, length, self.protocol.alphas)
        self._pairs.append((category, counts))
        return {alpha_key(a): correct / total for a, (correct, total) in counts.items()}

    def _length(self, image_shape_hw, bbox, gt_scaled: np.ndarray, valid: np.ndarray) -> float:
        kind, resolution = self.protocol.threshold, self.protocol.resolution
        if kind == "img":
            return float(resolution) if resolution != "original" else threshold_length("img", image_shape_hw)
        if kind == "bbox":
            if bbox is None:
                threshold_length("bbox", image_shape_hw)  # raises the explanatory error
            corners = rescale_for_protocol(np.asarray(bbox, dtype=np.float64).reshape(2, 2), image_shape_hw, resolution)
            return threshold_length("bbox", image_shape_hw, bbox=corners.reshape(4))
        return threshold_length("kp-bbox", image_shape_hw, points=gt_scaled, valid=valid)

    def result(self) -> dict:
        """The summary described in the class docstring."""
        categories = sorted({c for c, _ in self._pairs if c is not None})
        per_category = {}
        for category in categories:
            chosen = [counts for c, counts in self._pairs if c == category]
            per_category[category] = {**self._average(chosen), "pairs": len(chosen), "keypoints": _keypoints(chosen)}
        all_counts = [counts for _, counts in self._pairs]
        return {
            "pck": self._average(all_counts),
            "per_category": per_category,
            "mean_over_categories": self._mean_of_categories(per_category),
            "pairs": len(all_counts),
            "keypoints": _keypoints(all_counts),
            "skipped_pairs": self.skipped_pairs,
            "protocol": self.protocol.to_dict(),
        }

    def _average(self, pairs: list[dict[float, tuple[int, int]]]) -> dict[str, float | None]:
        values = {}
        for alpha in self.protocol.alphas:
            counts = np.asarray([pair[alpha] for pair in pairs], dtype=np.float64).reshape(-1, 2)
            if len(counts) == 0:
                values[alpha_key(alpha)] = None
            elif self.protocol.averaging == "pair":
                values[alpha_key(alpha)] = float(np.mean(counts[:, 0] / counts[:, 1]))
            else:
                values[alpha_key(alpha)] = float(counts[:, 0].sum() / counts[:, 1].sum())
        return values

    def _mean_of_categories(self, per_category: dict) -> dict[str, float | None]:
        keys = [alpha_key(a) for a in self.protocol.alphas]
        if not per_category:
            return {key: None for key in keys}
        return {key: float(np.mean([entry[key] for entry in per_category.values()])) for key in keys}


def _keypoints(pairs: Iterable[dict[float, tuple[int, int]]]) -> int:
    return int(sum(next(iter(counts.values()))[1] for counts in pairs))
