"""Unsupervised landmark evaluation: linear regression (no bias) from discovered to annotated landmarks.

Protocol (shared/notes/evaluation-protocols.md, Thewlis et al. 2017 / Jakab et al. 2018):

1. Run the landmark model on every image; the K discovered landmarks are taken in **pixel coordinates of the
   evaluated image** (0-based, docs/CONVENTIONS.md), flattened to ``2K`` numbers ``(x_1, y_1, ..., x_K, y_K)``.
2. Fit a linear map **without bias** ``W`` (``2K x 2L``) by least squares from those ``2K`` numbers to the ``2L``
   annotated coordinates on the training split. Each output coordinate is fitted on the images where that annotated
   landmark is valid (finite).
3. Apply ``W`` to the test split. Error of a landmark = L2 distance between prediction and annotation divided by the
   normalising length of the image: ``inter-ocular`` = distance between annotated landmarks ``eyes`` (faces; MTFL:
   points 1 and 2, indices 0 and 1) or ``kp-bbox`` = max(w, h) of the box around the image's valid annotations
   (objects). Reported in percent: per landmark (mean over test images) and the mean over all valid (image,
   landmark) entries.

Without a bias term the coordinate origin matters; the origin here is the centre of the top-left pixel of each
image, as every coordinate in corrmark.

Object protocol (PF-WILLOW, per category with the SCorrSAN image split): one regressor per category, errors divided
by the kp-bbox length, mean over categories (``per_category=True``, :func:`pfwillow_landmark_images`).

API: :func:`fit_landmark_regressor`, :func:`apply_landmark_regressor`, :func:`normalized_errors` (pure numpy);
:func:`evaluate_landmark_points` (arrays in, result dict out); :func:`evaluate_landmarks` (model + train/test datasets
-> result dict, optional figure); :func:`landmark_equivariance` (the label-free check). Elsewhere: the annotated
image sets (``eval.landmark_images``), running a model over images and the ``corrmark landmarks`` export
(``eval.landmark_detection``), the figure (``viz.landmarks``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.synthetic import SyntheticWarp, WarpConfig
from ..errors import CorrmarkError, InvalidKeypointsError, UnknownNameError
from ..io import ImageLike, read_image
from ..models.base import read_mapping_at
from ..preprocess import Preprocess
from ..provenance import machine_info
from ..viz.landmarks import landmark_figure
from .interocular import interocular_distance
from .landmark_detection import detect_landmarks
from .pck import threshold_length

NORMALISATIONS = ("inter-ocular", "kp-bbox")
DEFAULT_EYES = (0, 1)  # MTFL: the two eyes are its points 1 and 2
# The protocol of each benchmark of ``corrmark eval-landmarks``: the error length, and whether every image category
# gets its own regressor ("auto": when the fit images show more than one category).
BENCHMARK_PROTOCOLS = {"mtfl": {"normalisation": "inter-ocular", "per_category": False},
                       "pf-willow": {"normalisation": "kp-bbox", "per_category": True},
                       "coco": {"normalisation": "kp-bbox", "per_category": "auto"}}


# --- regression -----------------------------------------------------------------------------------------------------


def _as_points(points, name: str, ndim: int = 3) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != ndim or array.shape[-1] != 2:
        raise InvalidKeypointsError(f"{name} must have shape {'(N, K, 2)' if ndim == 3 else '(K, 2)'}, got {array.shape}")
    return array


def fit_landmark_regressor(discovered, annotated, ridge: float = 0.0) -> np.ndarray:
    """Least-squares linear map without bias from discovered to annotated landmarks.

    Args:
        discovered: ``(N, K, 2)`` discovered landmarks (pixels of each image); must be finite.
        annotated: ``(N, L, 2)`` annotations; NaN rows = not annotated (those images are left out of the fit of
            that landmark's two outputs).
        ridge: optional Tikhonov weight (0 = plain least squares, the protocol).

    Returns:
        ``W`` ``(2K, 2L)``: ``annotated.reshape(N, 2L) ~ discovered.reshape(N, 2K) @ W``.
    """
    discovered = _as_points(discovered, "discovered landmarks")
    annotated = _as_points(annotated, "annotated landmarks")
    if len(discovered) != len(annotated):
        raise InvalidKeypointsError(f"{len(discovered)} images of discovered landmarks but {len(annotated)} annotated")
    if not np.isfinite(discovered).all():
        raise InvalidKeypointsError("discovered landmarks must be finite")
    inputs = discovered.reshape(len(discovered), -1)
    targets = annotated.reshape(len(annotated), -1)
    weights = np.zeros((inputs.shape[1], targets.shape[1]))
    for column in range(targets.shape[1]):
        rows = np.isfinite(targets[:, column])
        if rows.sum() < 1:
            raise InvalidKeypointsError(f"annotated landmark {column // 2} is missing in every training image")
        x, y = inputs[rows], targets[rows, column]
        if ridge > 0:
            weights[:, column] = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        else:
            weights[:, column] = np.linalg.lstsq(x, y, rcond=None)[0]
    return weights


def apply_landmark_regressor(weights: np.ndarray, discovered) -> np.ndarray:
    """``(N, K, 2)`` discovered landmarks -> ``(N, L, 2)`` predicted annotations."""
    discovered = _as_points(discovered, "discovered landmarks")
    predicted = discovered.reshape(len(discovered), -1) @ np.asarray(weights)
    return predicted.reshape(len(discovered), -1, 2)


def normalizing_length(annotated_points, normalisation: str, eyes=DEFAULT_EYES) -> float:
    """The length errors of one image are divided by: inter-ocular distance or max side of the keypoint box."""
    if normalisation == "inter-ocular":
        return interocular_distance(annotated_points, eyes)
    if normalisation == "kp-bbox":
        points = _as_points(annotated_points, "annotated landmarks", ndim=2)
        return threshold_length("kp-bbox", (1, 1), points=points, valid=np.isfinite(points).all(axis=1))
    raise UnknownNameError(f"unknown landmark normalisation {normalisation!r}; choose one of: {', '.join(NORMALISATIONS)}")


def normalized_errors(predicted, annotated, normalisation: str = "inter-ocular", eyes=DEFAULT_EYES) -> np.ndarray:
    """``(N, L)`` errors ``||pred - gt|| / length`` (NaN where the annotation is missing)."""
    predicted = _as_points(predicted, "predicted landmarks")
    annotated = _as_points(annotated, "annotated landmarks")
    if predicted.shape != annotated.shape:
        raise InvalidKeypointsError(f"predicted {predicted.shape} and annotated {annotated.shape} landmarks differ")
    lengths = np.array([normalizing_length(points, normalisation, eyes) for points in annotated])
    distances = np.linalg.norm(predicted - annotated, axis=-1)  # NaN where not annotated
    return distances / lengths[:, None]


def evaluate_landmark_points(train_discovered, train_annotated, test_discovered, test_annotated,
                             normalisation: str = "inter-ocular", eyes=DEFAULT_EYES, ridge: float = 0.0,
                             train_categories=None, test_categories=None) -> dict:
    """The protocol on arrays: fit on train, errors on test. Returns ``mean_error`` (percent), ``per_landmark``
    (percent, one per annotated landmark), ``test_images``, ``train_images``, ``weights`` (2K x 2L list),
    ``errors`` (N_test x L array, fractions, NaN = not annotated) and ``predicted`` (N_test x L x 2).

    With ``train_categories`` / ``test_categories`` (one label per image) a separate regressor is fitted per category
    (object protocols: each category has its own keypoint set) and ``per_category`` holds each category's result;
    ``mean_error`` is then the mean over categories of their mean errors, ``per_landmark`` is None.
    """
    if normalisation not in NORMALISATIONS:
        raise UnknownNameError(f"unknown landmark normalisation {normalisation!r}; choose one of: {', '.join(NORMALISATIONS)}")
    if (train_categories is None) != (test_categories is None):
        raise CorrmarkError("give categories for both the training and the test images, or for neither")
    if train_categories is not None:
        return _evaluate_per_category(np.asarray(train_discovered, dtype=np.float64), np.asarray(train_annotated, dtype=np.float64),
                                      np.asarray(test_discovered, dtype=np.float64), np.asarray(test_annotated, dtype=np.float64),
                                      normalisation, eyes, ridge, np.asarray(train_categories), np.asarray(test_categories))
    weights = fit_landmark_regressor(train_discovered, train_annotated, ridge)
    predicted = apply_landmark_regressor(weights, test_discovered)
    errors = normalized_errors(predicted, test_annotated, normalisation, eyes)
    valid = np.isfinite(errors)
    per_landmark = [float(100 * np.mean(errors[valid[:, k], k])) if valid[:, k].any() else None
                    for k in range(errors.shape[1])]
    return {"mean_error": float(100 * errors[valid].mean()) if valid.any() else None, "per_landmark": per_landmark,
            "train_images": int(len(np.asarray(train_discovered))), "test_images": int(len(errors)),
            "weights": np.asarray(weights).tolist(), "errors": errors, "predicted": predicted}


def _evaluate_per_category(train_discovered, train_annotated, test_discovered, test_annotated, normalisation, eyes,
                           ridge, train_categories, test_categories) -> dict:
    per_category = {}
    errors = np.full(test_annotated.shape[:2], np.nan)
    predicted = np.full(test_annotated.shape, np.nan)
    for category in sorted(set(test_categories.tolist())):
        train_rows, test_rows = train_categories == category, test_categories == category
        if not train_rows.any():
            raise CorrmarkError(f"category {category!r} has test images but no training images")
        result = evaluate_landmark_points(train_discovered[train_rows], train_annotated[train_rows],
                                          test_discovered[test_rows], test_annotated[test_rows], normalisation, eyes,
                                          ridge)
        errors[test_rows], predicted[test_rows] = result.pop("errors"), result.pop("predicted")
        result.pop("weights")
        per_category[str(category)] = result
    means = [entry["mean_error"] for entry in per_category.values() if entry["mean_error"] is not None]
    return {"mean_error": float(np.mean(means)) if means else None, "per_landmark": None,
            "per_category": per_category, "averaging": "mean over categories",
            "train_images": int(len(train_discovered)), "test_images": int(len(test_discovered)),
            "errors": errors, "predicted": predicted}


# --- the protocol on a model ----------------------------------------------------------------------------------------


def _dataset_images(dataset, limit: int | None, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Paths, annotations ``(N, L, 2)`` (NaN = invalid) and categories of a dataset's images (a seeded subset with
    ``limit``)."""
    indices = np.arange(len(dataset))
    if limit is not None and int(limit) < len(indices):
        indices = np.sort(np.random.default_rng([int(seed), 29]).choice(len(indices), int(limit), replace=False))
    paths, annotations, categories = [], [], []
    for index in indices:
        record = dataset._records[int(index)] if hasattr(dataset, "_records") else dataset[int(index)]
        points = np.asarray(record["points"], dtype=np.float64).copy()
        valid = np.asarray(record.get("valid", np.isfinite(points).all(axis=1)), dtype=bool)
        points[~valid] = np.nan
        paths.append(str(record["path"]))
        annotations.append(points)
        categories.append(str(record.get("category", "")))
    if not paths:
        raise CorrmarkError("the landmark evaluation dataset is empty")
    return paths, np.stack(annotations), categories


def evaluate_landmarks(model, train_dataset, test_dataset, normalisation: str = "inter-ocular", eyes=DEFAULT_EYES,
                       train_limit: int | None = None, test_limit: int | None = None, seed: int = 0,
                       batch_size: int = 16, figure: str | os.PathLike | None = None, figure_images: int = 16,
                       progress: bool = False, dataset_names: tuple[str, str] | None = None,
                       per_category: bool = False, return_points: bool = False) -> dict:
    """The full protocol for a ``LandmarkModel`` on two image datasets (``ImageSample`` sequences with ``points``).

    Args:
        model: a ``LandmarkModel`` (``detect`` -> heatmaps, points in input pixels).
        train_dataset, test_dataset: e.g. ``open_image_dataset("mtfl", root, "train" / "test")``.
        normalisation: ``"inter-ocular"`` (faces) or ``"kp-bbox"`` (objects).
        eyes: indices of the two eye landmarks for ``inter-ocular`` (MTFL: 0, 1).
        train_limit, test_limit: seeded subsets (``None`` = all images; the CPU runs fit on a subset of the
            training split, recorded in the result).
        figure: optional image path: the discovered landmarks (top) and, below, the regressed annotated landmarks
            (dots) beside the ground truth (rings) on the first ``figure_images`` test images, with a legend.
        per_category: fit one regressor per image ``category`` (objects with category-specific keypoints, e.g.
            PF-WILLOW: ``pfwillow_landmark_images(root, "train" / "test")`` with ``normalisation="kp-bbox"``).
        return_points: also return ``points``: the discovered ``"train"`` / ``"test"`` landmarks ``(N, K, 2)`` and
            the annotations ``"train_annotated"`` / ``"test_annotated"`` ``(N, L, 2)`` (NaN = not annotated), for
            diagnostics beyond the protocol (numpy arrays: pop them before writing the result).

    Returns a JSON-ready dict: ``protocol``, ``mean_error`` (percent), ``per_landmark`` (percent), image counts,
    ``model`` (``model.describe()``), ``seconds``, ``machine``.
    """
    started = time.perf_counter()
    train_paths, train_annotated, train_categories = _dataset_images(train_dataset, train_limit, seed)
    test_paths, test_annotated, test_categories = _dataset_images(test_dataset, test_limit, seed)
    train_points, _ = detect_landmarks(model, train_paths, batch_size, progress)
    test_points, _ = detect_landmarks(model, test_paths, batch_size, progress)
    categories = (train_categories, test_categories) if per_category else (None, None)
    result = evaluate_landmark_points(train_points, train_annotated, test_points, test_annotated, normalisation, eyes,
                                      train_categories=categories[0], test_categories=categories[1])
    if figure is not None:
        count = min(int(figure_images), len(test_paths))
        landmark_figure([read_image(p) for p in test_paths[:count]], test_points[:count], figure,
                        regressed=result["predicted"][:count], truth=test_annotated[:count])
    result.pop("errors")
    result.pop("predicted")
    names = dataset_names or (getattr(train_dataset, "name", "train"), getattr(test_dataset, "name", "test"))
    result.update({
        "protocol": dict(landmark_protocol(normalisation, eyes, train_limit, test_limit, seed, names),
                         per_category=bool(per_category)),
        "model": model.describe() if hasattr(model, "describe") else {"name": type(model).__name__},
        "num_landmarks": int(train_points.shape[1]),
        "figure": str(figure) if figure is not None else None,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(),
    })
    if return_points:
        result["points"] = {"train": train_points, "test": test_points, "train_annotated": train_annotated,
                            "test_annotated": test_annotated}
    return result


def equivariance_images(dataset, limit: int | None = None, seed: int = 0) -> list[str]:
    """The paths of ``limit`` images of ``dataset`` drawn with ``seed`` (all of them without ``limit``), in dataset
    order: the images of the equivariance rows of docs/BENCHMARKS.md (500 CUB test birds, 500 AFLW faces)."""
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    chosen = np.random.default_rng(int(seed)).choice(len(dataset), count, replace=False)
    return [str(dataset[int(index)]["path"]) for index in sorted(chosen)]


EQUIVARIANCE_WARP = {"rotation": 15.0, "scale": (0.9, 1.1), "aspect": 0.05, "shear": 0.05, "translation": 0.05,
                     "tps_probability": 0.5, "tps_strength": 0.03, "flip_probability": 0.0, "jitter": {}}


def landmark_equivariance(model, images: Sequence[ImageLike], size: int = 224, warp: dict | None = None,
                          seed: int = 0, batch_size: int = 16, progress: bool = False) -> dict:
    """A label-free measure of a landmark model: how far its landmarks land from where a known warp carries them.

    Every image is resized to ``size`` x ``size``; a seeded random warp (``EQUIVARIANCE_WARP`` unless ``warp`` is
    given: rotation, zoom, shear, TPS, no mirror, no colour change) makes a second view. The K landmarks found on the
    view, carried back into the image through the warp, should meet the K landmarks found on the image. Returns
    ``mean_error`` and ``median_error`` (percent of the image side, over every landmark carried back inside the
    image), ``per_landmark`` (percent), ``compared`` (fraction of landmarks that were), ``images`` and ``protocol``.
    Landmarks stuck at a fixed image position score the warp's displacement, not zero.
    """
    warp_values = {**EQUIVARIANCE_WARP, **dict(warp or {})}
    warper = SyntheticWarp(WarpConfig.from_dict(warp_values))
    generator = torch.Generator().manual_seed(int(seed))
    square = Preprocess(size)
    errors, inside = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="equivariance", disable=not progress, unit="batch"):
        batch = torch.cat([square.to_input(read_image(image)) for image in images[start:start + batch_size]])
        view = warper.view(batch, None, generator)
        with torch.no_grad():
            _, points = model.detect(batch)
            _, view_points = model.detect(view["image"])
        for image_points, found, mapping in zip(points.detach().double().numpy(),
                                                view_points.detach().double().numpy(), view["mapping"].double().numpy()):
            carried = read_mapping_at(mapping, found)
            ok = np.all((carried >= -0.5) & (carried <= size - 0.5), axis=1)
            errors.append(np.where(ok, np.linalg.norm(carried - image_points, axis=1), np.nan) / size)
            inside.append(ok)
    errors = np.asarray(errors) * 100.0
    return {"mean_error": float(np.nanmean(errors)), "median_error": float(np.nanmedian(errors)),
            "per_landmark": np.nanmean(errors, axis=0).tolist(), "compared": float(np.mean(inside)),
            "images": len(images), "model": model.describe(),
            "protocol": {"task": "landmark equivariance under a known synthetic warp", "size": int(size),
                         "warp": {key: list(value) if isinstance(value, tuple) else value
                                  for key, value in warp_values.items()},
                         "seed": int(seed), "units": "percent of the image side"}}


def landmark_protocol(normalisation: str, eyes, train_limit, test_limit, seed, names=("train", "test")) -> dict:
    return {"task": "unsupervised landmarks", "regression": "linear least squares, no bias, 2K -> 2L",
            "coordinates": "0-based pixels of each evaluated (original) image", "normalisation": normalisation,
            "eyes": list(eyes) if normalisation == "inter-ocular" else None, "fit_on": names[0], "test_on": names[1],
            "train_limit": train_limit, "test_limit": test_limit, "subset_seed": seed, "units": "percent"}


