"""Zero-shot matcher: nearest neighbours of frozen pretrained features, no training.

Pipeline: resize both images -> descriptors (one or several backbones, fused) -> 4D cosine correlation -> optional
soft mutual-nearest-neighbour filtering -> kernel soft argmax (a Gaussian window around the best match, then a
soft argmax inside it, for sub-cell precision) -> coordinates mapped back to the original images. With
``flip="auto"`` the target is also matched mirrored and the orientation with the stronger mutual agreement is kept
(objects of the same class often face opposite ways, and ViT features confuse left and right parts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..backbones.descriptors import DescriptorExtractor, parse_backbone_spec
from ..cache import DescriptorCache
from ..device import resolve_device
from ..errors import CorrmarkError, UnknownNameError
from ..io import ImageLike, check_keypoints, read_image
from ..ops import (correlation_4d, grid_stride, grid_to_pixel, kernel_soft_argmax, mutual_nn_filter, pixel_to_grid,
                   sample_field)
from ..preprocess import ASPECT_RULES, Preprocess
from ..registry import register_matcher
from .base import CoarseMapping, Matcher


@dataclass
class NNMatcherConfig:
    """The defaults are the ``best`` preset, the measured best zero-shot setting (docs/BENCHMARKS.md)."""

    # DINOv2 block 9 through the final LayerNorm ("@norm") fused with EfficientNet-Lite0 stages 3 and 4
    backbone: str = "dinov2_vits14@norm+efficientnet_lite0"
    layers: list | None = field(default_factory=lambda: [[9], [3, 4]])  # None: each backbone's default layers
    image_size: int = 336  # the side of the square (keep_aspect: of a square of the same area, see aspect_rule)
    keep_aspect: bool = False  # the square measured best (PF-WILLOW and StanfordExtra, docs/ZERO_SHOT.md)
    aspect_rule: str = "area"  # "area": as many cells as the square; "long-side": longer side = image_size (< 0.2)
    mutual: bool = True  # soft mutual-nearest-neighbour filtering
    beta: float = 50.0  # soft argmax temperature on cosine similarities
    sigma: float = 4.0  # Gaussian window (feature cells) around the hard match; 0 = plain argmax
    flip: str = "none"  # "none" | "auto"


# Named settings. "best" = the defaults; the others reproduce earlier published rows.
PRESETS = {
    "best": {},
    "dinov2-block8": {"backbone": "dinov2_vits14", "layers": [8], "image_size": 224, "mutual": False, "sigma": 0,
                      "keep_aspect": True, "aspect_rule": "long-side"},
    # the defaults of 0.1, before the best setting became the default (PF-WILLOW PCK@0.1 0.409, docs/BENCHMARKS.md)
    "dinov2-block8-soft": {"backbone": "dinov2_vits14", "layers": [8], "image_size": 224, "mutual": False,
                           "sigma": 2.0, "keep_aspect": True, "aspect_rule": "long-side"},
    # "best" of 0.1: the same descriptor, aspect kept with the longer side at 336 px (PF-WILLOW PCK@0.1 0.628)
    "best-long-side": {"keep_aspect": True, "aspect_rule": "long-side"},
    # the previous best (raw block 8 instead of normalised block 9), kept so its published rows reproduce
    "fused-block8": {"backbone": "dinov2_vits14+efficientnet_lite0", "layers": [[8], [3, 4]], "image_size": 336,
                     "mutual": True, "sigma": 4.0, "keep_aspect": True, "aspect_rule": "long-side"},
}


class NearestNeighbourMatcher(Matcher):
    """Matches by nearest neighbours of frozen descriptors; see the module docstring."""

    name = "nn"

    def __init__(self, config: NNMatcherConfig | None = None, device="cpu", weights_files=None,
                 precision: str | None = None, **overrides):
        preset = overrides.pop("preset", None)
        if preset is not None and preset not in PRESETS:
            raise UnknownNameError(f"unknown nn-matcher preset '{preset}'; presets: {', '.join(PRESETS)}")
        self.config = config or NNMatcherConfig(**PRESETS.get(preset, {}))
        if "backbone" in overrides and "layers" not in overrides:
            overrides["layers"] = None  # another backbone: its own default layers, not the preset's
        for key, value in overrides.items():
            if not hasattr(self.config, key):
                raise UnknownNameError(f"unknown nn-matcher option '{key}'; options: {', '.join(asdict(self.config))}")
            setattr(self.config, key, value)
        check_nn_config(self.config)
        self.device = resolve_device(device)
        self.set_precision(precision, self.device)  # the backbone forward's (models.base.MixedPrecision)
        specs = parse_backbone_spec(self.config.backbone, self.config.layers)
        self.extractor = DescriptorExtractor(specs, device=self.device, weights_files=weights_files).eval()
        self._cache = DescriptorCache(64)  # images whose descriptors are kept (about 0.4-2 MB each)

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.config), **self.precision_fields()}

    # --- public interface -------------------------------------------------------------------------------------
    def estimate_mapping(self, source: ImageLike, target: ImageLike) -> np.ndarray:
        source_image, target_image = read_image(source), read_image(target)
        return self.coarse_mapping(source_image, target_image).dense(target_image.shape[:2])

    def coarse_mapping(self, source: np.ndarray, target: np.ndarray) -> CoarseMapping:
        """The target grid's matches in source pixels. Not extrapolated at the border: nearest-neighbour fields are
        not smooth enough for that to be safe."""
        grid_mapping, _ = self._grid_mapping(target, source)
        return CoarseMapping(grid_mapping, extrapolate=False)

    def transfer_keypoints(self, source: ImageLike, target: ImageLike, points) -> np.ndarray:
        return self.match_points(source, target, points)[0]

    def match_points(self, source: ImageLike, target: ImageLike, points) -> tuple[np.ndarray, np.ndarray]:
        """Transfer source ``points`` to the target; also return each match's cosine similarity (N,)."""
        source_image, target_image = read_image(source), read_image(target)
        points = check_keypoints(points, source_image.shape[:2], name="source keypoints")
        if len(points) == 0:
            return np.zeros((0, 2)), np.zeros(0)
        with torch.no_grad():
            source_features = self._describe(source_image)
            correlation, flipped = self._correlate(source_features, target_image)
            query_grid = pixel_to_grid(torch.as_tensor(points, dtype=torch.float32, device=self.device),
                                       grid_stride(source_image.shape[:2], source_features.shape[-2:]))
            rows = _sample_source_rows(correlation, query_grid)  # (N, h_t, w_t)
            matched, score = self._soft_argmax(rows)
            target_hw = target_image.shape[:2]
            target_grid_hw = correlation.shape[-2:]
            matched = grid_to_pixel(matched, grid_stride(target_hw, target_grid_hw)).cpu().numpy().astype(np.float64)
        if flipped:
            matched[:, 0] = target_hw[1] - 1 - matched[:, 0]
        return matched, score.cpu().numpy()

    # --- internals ---------------------------------------------------------------------------------------------
    def _describe(self, image: np.ndarray) -> torch.Tensor:
        """Descriptors ``(1, C, h, w)`` of an image, cached by content: benchmarks and folders reuse each image in
        many pairs."""
        return self._cache.get_or_compute(image, lambda: self._describe_uncached(image), self.precision)

    def _describe_uncached(self, image: np.ndarray) -> torch.Tensor:
        # built from the config at each call: its options may be changed after construction
        preprocess = Preprocess(self.config.image_size, self.extractor.size_multiple, self.config.keep_aspect,
                                self.config.aspect_rule)
        return self.at_precision(lambda: self.extractor(preprocess.to_input(image, device=self.device)), self.device)

    def _correlate(self, source_features: torch.Tensor, target_image: np.ndarray):
        """(h_s, w_s, h_t, w_t) correlation with the target, or with its mirror image when that agrees better."""
        target_features = self._describe(target_image)
        correlation = self._filtered(correlation_4d(source_features, target_features)[0])
        if self.config.flip != "auto":
            return correlation, False
        mirrored_features = self._describe(np.ascontiguousarray(target_image[:, ::-1]))
        mirrored = self._filtered(correlation_4d(source_features, mirrored_features)[0])
        if _mutual_agreement(mirrored) > _mutual_agreement(correlation):
            return mirrored, True
        return correlation, False

    def _filtered(self, correlation: torch.Tensor) -> torch.Tensor:
        if not self.config.mutual:
            return correlation
        return mutual_nn_filter(correlation[None].clamp(min=0))[0]

    def _soft_argmax(self, rows: torch.Tensor):
        """rows (N, h, w) of scores -> (N, 2) grid (x, y) and the best score per row."""
        best = rows.flatten(1).max(dim=1).values
        if not self.config.sigma:
            index = rows.flatten(1).argmax(dim=1)
            width = rows.shape[-1]
            coords = torch.stack([index % width, index // width], dim=1).float()
            return coords, best
        coords = kernel_soft_argmax(rows[None, :, None], beta=self.config.beta, sigma=self.config.sigma, normalize=False)
        return coords[0, :, 0], best

    def _grid_mapping(self, query_image: np.ndarray, reference_image: np.ndarray):
        """For every cell of the query image's grid, the matching (x, y) in reference-image original pixels."""
        with torch.no_grad():
            query_features = self._describe(query_image)
            correlation, flipped = self._correlate(query_features, reference_image)
            h_q, w_q, h_r, w_r = correlation.shape
            matched, score = self._soft_argmax(correlation.reshape(h_q * w_q, h_r, w_r))
            reference_hw = reference_image.shape[:2]
            matched = grid_to_pixel(matched, grid_stride(reference_hw, (h_r, w_r)))
            mapping = matched.reshape(h_q, w_q, 2).cpu().numpy().astype(np.float64)
        if flipped:
            mapping[..., 0] = reference_hw[1] - 1 - mapping[..., 0]
        return mapping, score.reshape(h_q, w_q).cpu().numpy()


def check_nn_config(config: NNMatcherConfig) -> None:
    """Every option in its range, or one CorrmarkError naming it: checked when the matcher is built, so a bad value
    never turns into silently wrong points (e.g. image_size 0 mapping everything to the centre, sigma NaN)."""
    checks = [
        ("image_size", config.image_size, lambda v: _is_int(v) and 1 <= v <= 8192, "an integer from 1 to 8192"),
        ("beta", config.beta, lambda v: _is_real(v) and v > 0, "a positive number"),
        ("sigma", config.sigma, lambda v: _is_real(v) and v >= 0, "a number >= 0 (0 = hard argmax)"),
        ("keep_aspect", config.keep_aspect, lambda v: isinstance(v, bool), "true or false"),
        ("mutual", config.mutual, lambda v: isinstance(v, bool), "true or false"),
        ("aspect_rule", config.aspect_rule, lambda v: v in ASPECT_RULES, f"one of {', '.join(ASPECT_RULES)}"),
        ("flip", config.flip, lambda v: v in ("none", "auto"), "'none' or 'auto'"),
        ("backbone", config.backbone, lambda v: isinstance(v, str) and v.strip(), "a backbone name"),
    ]
    for name, value, valid, expected in checks:
        if not valid(value):
            raise CorrmarkError(f"nn-matcher option {name} must be {expected}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and bool(np.isfinite(value))


def _sample_source_rows(correlation: torch.Tensor, query_grid: torch.Tensor) -> torch.Tensor:
    """Bilinearly interpolate correlation rows at sub-cell source positions: (N, 2) grid -> (N, h_t, w_t)."""
    h_s, w_s, h_t, w_t = correlation.shape
    field = correlation.reshape(h_s, w_s, h_t * w_t).permute(2, 0, 1)[None]  # (1, h_t*w_t, h_s, w_s)
    rows = sample_field(field, query_grid[None], channels_last=False)[0]  # (N, h_t*w_t)
    return rows.reshape(-1, h_t, w_t)


def _mutual_agreement(correlation: torch.Tensor) -> float:
    """Mean similarity of mutual nearest neighbour pairs: higher when the two images are in the same orientation."""
    h_s, w_s, h_t, w_t = correlation.shape
    flat = correlation.reshape(h_s * w_s, h_t * w_t)
    forward = flat.argmax(dim=1)
    backward = flat.argmax(dim=0)
    mutual = backward[forward] == torch.arange(flat.shape[0], device=flat.device)
    if not mutual.any():
        return float("-inf")
    return float(flat.max(dim=1).values[mutual].sum() / flat.shape[0])


@register_matcher("nn", trained=False)
def load_nn_matcher(device="cpu", **options) -> NearestNeighbourMatcher:
    """The zero-shot matcher (no weights); ``options``: ``preset``, ``precision`` and the ``NNMatcherConfig``
    fields."""
    return NearestNeighbourMatcher(device=device, **options)
