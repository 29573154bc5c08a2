"""The two interfaces every method answers: ``Matcher`` (correspondence) and ``LandmarkModel`` (landmarks).

Methods differ in how they compute a mapping or heatmaps, never in how callers use them: the evaluator, the CLI and
keypoint propagation speak only to these classes.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
import torch

from ..config import check_known_keys
from ..device import DEFAULT_PRECISION, autocast, check_autocast, check_precision
from ..errors import CorrmarkError
from ..io import ImageLike, check_keypoints, read_image
from ..ops.warp import read_mapping_at, read_upsampled_mapping, upsample_mapping


@dataclass(frozen=True)
class CoarseMapping:
    """A mapping at a model's working resolution and how it becomes a mapping of a whole image.

    ``grid``: ``(h, w, 2)`` tensor or array on a grid covering the image it is defined on; its values are
    coordinates in the other image: on its ``values_from_hw`` grid, converted to pixels of its ``values_to_hw`` size
    (both None: already pixels of the other image).
    ``extrapolate``: as for ``ops.resize_mapping`` (False repeats the edge cells over the outer half cells).
    """

    grid: torch.Tensor | np.ndarray
    values_from_hw: tuple[int, int] | None = None
    values_to_hw: tuple[int, int] | None = None
    extrapolate: bool = False

    def dense(self, size_hw) -> np.ndarray:
        """``(H, W, 2)`` float32 for an image of ``size_hw``, in bounded memory (``ops.upsample_mapping``)."""
        return upsample_mapping(self.grid, tuple(size_hw[:2]), self.values_from_hw, self.values_to_hw,
                                self.extrapolate)

    def read_at(self, size_hw, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` float64: ``read_mapping_at(self.dense(size_hw), points)``, computed at the points only."""
        return read_upsampled_mapping(self.grid, tuple(size_hw[:2]), points, self.values_from_hw, self.values_to_hw,
                                      self.extrapolate)


class MixedPrecision:
    """``precision``: how a model runs its per-image forward (backbone and learned layers): ``fp32`` (the default),
    ``bf16`` or ``fp16`` under ``corrmark.device.autocast``. What it returns keeps its dtype at every precision
    (the reduced-precision features are cast back to float32 before correlation and soft argmax); ``describe()``
    names a precision other than fp32. Set it when building the model (``load_matcher(..., precision="bf16")``)
    or later; the descriptor caches key on it."""

    _precision: str = DEFAULT_PRECISION

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str | None) -> None:
        self._precision = check_precision(value)

    def set_precision(self, precision: str | None, device) -> None:
        """Check that ``precision`` runs on ``device`` (one ``CorrmarkError`` otherwise) and use it."""
        self._precision = check_autocast(device, precision)

    def at_precision(self, compute: Callable[[], object], device):
        """``forward_at_precision`` at this model's precision."""
        return forward_at_precision(compute, device, self._precision)

    def precision_fields(self) -> dict:
        """``{"precision": ...}`` for ``describe()`` when it is not fp32; at fp32 nothing, so records, propagate
        outputs and their resume checks are those of code without the option."""
        return {} if self._precision == DEFAULT_PRECISION else {"precision": self._precision}


def forward_at_precision(compute: Callable[[], object], device, precision: str | None = DEFAULT_PRECISION):
    """``compute()`` (a per-image forward) under ``corrmark.device.autocast`` at ``precision``, its tensors (also
    inside lists and tuples) returned as float32: correlation, soft argmax and coordinates run at full precision.
    At fp32 it is ``compute()`` unchanged."""
    with autocast(device, precision):
        result = compute()
    return _as_float32(result)


def _as_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float()  # a no-op (the same tensor) when it already is float32
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float32(item) for item in value)
    return value


class Matcher(MixedPrecision, abc.ABC):
    """Dense semantic correspondence between two images of the same kind of object.

    Coordinates are 0-based pixels of the ORIGINAL images (see docs/CONVENTIONS.md), whatever resolution the
    model works at internally. Dense mappings are float32 (half the memory of float64; below 16,384 px a
    coordinate is stored to 1/1024 px or better); keypoints are float64. ``precision`` (``MixedPrecision``) sets
    the precision of the per-image forward.
    """

    name: str = "matcher"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("estimate_mapping", "transfer_keypoints"):  # every matcher takes batches the same way
            if name in cls.__dict__:
                setattr(cls, name, _over_batches(cls.__dict__[name]))

    @abc.abstractmethod
    def estimate_mapping(self, source: ImageLike, target: ImageLike) -> np.ndarray:
        """Return (H_t, W_t, 2) float32: the source (x, y) matching every target pixel.

        Batches: ``source`` and/or ``target`` may be lists (of equal length, or one side a single image used for
        every pair); the result is then a list, one entry per pair.
        """

    def coarse_mapping(self, source: np.ndarray, target: np.ndarray) -> CoarseMapping | None:
        """The target-to-source mapping at the working resolution that ``estimate_mapping`` upsamples to the target
        image (``(H, W, 3)`` uint8 arrays in), or None for a matcher that has none (the default)."""
        return None

    def transfer_keypoints(self, source: ImageLike, target: ImageLike, points) -> np.ndarray:
        """Move ``points`` (N, 2) of the source image to the target image; returns (N, 2) float64 target (x, y).

        Points outside the source image or non-finite raise ``InvalidKeypointsError``; no points give a (0, 2) result.
        The default reads the mapping computed in the other direction (source image -> target) at the points: from
        its ``coarse_mapping`` when the matcher has one (only the four pixels around each point are computed; the
        numbers of the dense path), else from the dense ``estimate_mapping``. Methods with their own sparse path
        override this. Batches as for ``estimate_mapping``, with ``points`` a list of point arrays, one per pair.
        """
        source_image, target_image = read_image(source), read_image(target)
        points = check_keypoints(points, source_image.shape[:2], name="source keypoints")
        if len(points) == 0:
            return np.zeros((0, 2))
        coarse = self.coarse_mapping(target_image, source_image)  # defined on the source, values in the target
        if coarse is not None:
            return coarse.read_at(source_image.shape[:2], points)
        mapping_on_source = self.estimate_mapping(target_image, source_image)  # source pixels -> target coords
        return read_mapping_at(mapping_on_source, points)

    def describe(self) -> dict:
        """Settings that determine this matcher's output, recorded with every result."""
        return {"name": self.name, **self.precision_fields()}


class LandmarkModel(MixedPrecision, abc.ABC):
    """Unsupervised landmark detector: K heatmaps and K points per image (float32 at every ``precision``)."""

    name: str = "landmarks"
    num_landmarks: int

    @abc.abstractmethod
    def detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> heatmaps (B, K, h, w), points (B, K, 2) in input-pixel (x, y)."""

    def describe(self) -> dict:
        return {"name": self.name, "num_landmarks": self.num_landmarks, **self.precision_fields()}


def _over_batches(method):
    """Let ``method(self, source, target, *rest)`` take lists of images (see ``Matcher.estimate_mapping``)."""

    @functools.wraps(method)
    def batched(self, source, target, *rest, **options):
        if not isinstance(source, (list, tuple)) and not isinstance(target, (list, tuple)):
            return method(self, source, target, *rest, **options)
        lengths = {len(side) for side in (source, target) if isinstance(side, (list, tuple))}
        if len(lengths) > 1:
            raise CorrmarkError(f"batched matching: {len(source)} source and {len(target)} target images; give lists "
                                "of one length, or one single image for every pair")
        count = lengths.pop()
        sides = [list(side) if isinstance(side, (list, tuple)) else [side] * count for side in (source, target)]
        per_pair = [list(item) if isinstance(item, (list, tuple)) and len(item) == count else None for item in rest]
        if any(item is None for item in per_pair):
            raise CorrmarkError(f"batched transfer_keypoints needs one point list per pair ({count} pairs)")
        return [method(self, sides[0][index], sides[1][index], *(item[index] for item in per_pair), **options)
                for index in range(count)]

    return batched


Matcher.transfer_keypoints = _over_batches(Matcher.transfer_keypoints)  # the default, for matchers without their own


class MethodConfig:
    """Base of a method's settings dataclass: ``from_dict`` (unknown keys are one error naming them and the valid
    ones, prefixed by the method's ``label``) and ``to_dict``."""

    label: ClassVar[str] = "method"

    @classmethod
    def from_dict(cls, values: dict | None):
        check_known_keys(values, sorted(field.name for field in fields(cls)), cls.label)
        return cls(**(values or {}))

    def to_dict(self) -> dict:
        return asdict(self)
