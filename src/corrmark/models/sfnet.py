"""SFNet (Lee et al., CVPR 2019): object-aware semantic flow from frozen features and learned adaptation layers.

Pipeline (paper Sec. 3.1): both images resized to a square ``image_size`` -> frozen backbone features at two (or more)
*levels* -> per level a residual adaptation layer ``x + ReLU(BN(conv(x)))`` -> L2 normalisation -> all levels resized
(bilinear) to the grid of the first level -> one cosine correlation per level, clamped at 0 and combined by
element-wise product -> source->target and target->source matches by the kernel soft argmax (eqs. 2-3: a Gaussian of
std ``sigma`` cells centred on the hard argmax, which carries no gradient, times the L2-normalised correlation,
softmax with temperature ``beta``) -> at test time the grid flow is upsampled bilinearly to the image.

A level is a list of ``"backbone:layer"`` sources; several sources in one level are each L2-normalised, scaled to
unit RMS per channel, resized to the grid of the level's first source and concatenated. Defaults (measured, see
docs/SFNET.md): level 1 = DINOv2-S block 8 (stride 14) + EfficientNet-Lite0 stage 3 (stride 16), level 2 =
EfficientNet-Lite0 stage 4 (stride 32). The paper's ResNet-101 conv4-23 / conv5-3 is
``[["timm:resnet101:3"], ["timm:resnet101:4"]]`` with ``weights_files={"timm:resnet101": path}``.

Only the adaptation layers (``SFNetHead``) are trained and checkpointed; the frozen ``SFNetFeatures`` are rebuilt from
the config stored in the checkpoint.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import build_backbone
from ..cache import DescriptorCache
from ..checkpoints import check_state_keys, read_checkpoint
from ..device import resolve_device
from ..errors import CheckpointError, CorrmarkError, UnknownNameError
from ..io import ImageLike, read_image
from ..ops import (correlation_4d, correlation_argmax, kernel_soft_argmax, l2_normalize, mutual_nn_filter,
                   soft_argmax_4d)
from ..preprocess import Preprocess
from ..registry import register_matcher
from .base import CoarseMapping, Matcher, MethodConfig

DEFAULT_LEVELS = [["dinov2_vits14:8", "efficientnet_lite0:3"], ["efficientnet_lite0:4"]]
ARGMAX_MODES = ("kernel", "soft", "hard")
SOURCE_SCALINGS = ("channels", "equal")
ADAPTATION_CONVS = (1, 2)


@dataclass
class SFNetConfig(MethodConfig):
    label: ClassVar[str] = "SFNet"  # error messages name the method
    levels: list = field(default_factory=lambda: [list(level) for level in DEFAULT_LEVELS])
    image_size: int = 224  # square input side (rounded to the backbones' size multiple)
    kernel_sizes: list | None = None  # adaptation conv kernel per level (default 3 everywhere)
    adaptation: bool = True  # False: no adaptation layers (the zero-shot SFNet baseline)
    residual_init: float = 0.1  # initial BatchNorm scale of the residual branch
    adaptation_convs: int = 1  # convolutions per adaptation layer: 1 (the paper's) or 2 (a deeper residual branch)
    beta: float = 50.0  # softmax temperature of the kernel soft argmax
    sigma: float = 5.0  # Gaussian kernel std, in cells of the correlation grid
    train_argmax: str = "kernel"  # "kernel" | "soft"
    test_argmax: str = "kernel"  # "kernel" | "soft" | "hard"
    test_mutual: bool = False  # soft mutual-NN filtering of the correlation at test time (an option; not in the paper)
    # "channels": every source of a level scaled to unit RMS per channel (wide sources weigh more); "equal": every
    # source the same norm, so an unadapted level's cosine is exactly the zero-shot matcher's fused descriptor's
    source_scaling: str = "channels"
    argmax_normalize: bool = True  # L2-normalise correlation maps before the kernel soft argmax (the paper's eq. 3)
    # test time: target cells whose best adapted score is below this cosine take the frozen features' match instead
    # (0 = off); a trained head then cannot do worse than the zero-shot match where it is unsure
    fallback: float = 0.0

    def __post_init__(self):
        self.levels = [[str(source) for source in level] for level in self.levels]
        if not self.levels or any(not level for level in self.levels):
            raise CorrmarkError(f"SFNet needs at least one non-empty feature level, got {self.levels!r}")
        if self.kernel_sizes is None:
            self.kernel_sizes = [3] * len(self.levels)
        if len(self.kernel_sizes) != len(self.levels):
            raise CorrmarkError(f"give one adaptation kernel size per level: {self.kernel_sizes} vs {self.levels}")
        for name, allowed in (("train_argmax", ("kernel", "soft")), ("test_argmax", ARGMAX_MODES),
                              ("source_scaling", SOURCE_SCALINGS), ("adaptation_convs", ADAPTATION_CONVS)):
            value = getattr(self, name)
            if isinstance(value, bool) or value not in allowed:
                raise CorrmarkError(f"SFNet {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")



def parse_source(source: str) -> tuple[str, int]:
    """``"dinov2_vits14:8"`` -> ("dinov2_vits14", 8); ``"timm:resnet101:3"`` -> ("timm:resnet101", 3)."""
    name, _, layer = str(source).rpartition(":")
    if not name or not layer.lstrip("-").isdigit():
        raise CorrmarkError(f"an SFNet feature source is 'backbone:layer' (e.g. dinov2_vits14:8), got {source!r}")
    return name, int(layer)


class SFNetFeatures(nn.Module):
    """Frozen multi-level features: ``forward(images (B, 3, S, S) in [0, 1])`` -> one ``(B, C_l, h_l, w_l)`` map per
    level (see the module docstring). Each backbone is built once, with the union of the layers its levels use."""

    def __init__(self, levels: list, device="cpu", weights_files: dict | None = None, source_scaling: str = "channels"):
        super().__init__()
        weights_files = weights_files or {}
        self.source_scaling = source_scaling
        self.levels = [[parse_source(source) for source in level] for level in levels]
        wanted: dict[str, set] = OrderedDict()
        for level in self.levels:
            for name, layer in level:
                wanted.setdefault(name, set()).add(layer)
        self.backbones = nn.ModuleDict()
        self._keys: dict[tuple[str, int], tuple[str, str]] = {}
        for index, (name, layers) in enumerate(wanted.items()):
            layers = sorted(layers)
            backbone = build_backbone(name, layers=layers, weights=weights_files.get(name), device=device)
            slot = f"b{index}"
            self.backbones[slot] = backbone
            for layer, key in zip(layers, backbone.feature_specs):
                self._keys[(name, layer)] = (slot, key)
        self.size_multiple = int(np.lcm.reduce([b.size_multiple for b in self.backbones.values()]))
        self.level_channels = [
            sum(self._spec(source).channels for source in level) for level in self.levels
        ]
        self.level_strides = [self._spec(level[0]).stride for level in self.levels]

    def _spec(self, source):
        slot, key = self._keys[source]
        return self.backbones[slot].feature_specs[key]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = {slot: backbone(images) for slot, backbone in self.backbones.items()}
        levels = []
        for level, channels in zip(self.levels, self.level_channels):
            parts, grid = [], None
            for source in level:
                slot, key = self._keys[source]
                feature = outputs[slot][key]
                grid = grid or tuple(feature.shape[-2:])
                # the level's mean square per channel is 1 either way, the scale BN outputs have
                width = feature.shape[1] if self.source_scaling == "channels" else channels / len(level)
                feature = l2_normalize(feature, dim=1) * math.sqrt(width)
                if tuple(feature.shape[-2:]) != grid:
                    feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
                parts.append(feature)
            levels.append(torch.cat(parts, dim=1))
        return levels


class Adaptation(nn.Module):
    """Residual adaptation layer: ``x + ReLU(BN(conv(x)))``, the paper's (Sec. 4.1: one convolution per level).

    ``convs=2`` puts a first ``ReLU(BN(conv))`` (``conv_in``, ``bn_in``) before it, a deeper residual branch that is
    an option here, not the paper's. ``bn`` (the last BatchNorm) starts at scale ``residual_init``, so a small value
    starts the layer near the identity; the state-dict keys of ``convs=1`` are those of every earlier checkpoint.
    """

    def __init__(self, channels: int, kernel_size: int, residual_init: float, convs: int = 1):
        super().__init__()
        if isinstance(convs, bool) or convs not in ADAPTATION_CONVS:
            raise CorrmarkError(f"SFNet adaptation_convs must be one of {ADAPTATION_CONVS}, got {convs!r}")
        self.conv_in = _adaptation_conv(channels, kernel_size) if convs == 2 else None
        self.bn_in = nn.BatchNorm2d(channels) if convs == 2 else None
        self.conv = _adaptation_conv(channels, kernel_size)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.constant_(self.bn.weight, residual_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = x if self.conv_in is None else F.relu(self.bn_in(self.conv_in(x)))
        return x + F.relu(self.bn(self.conv(branch)))


def _adaptation_conv(channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)


class SFNetHead(nn.Module):
    """The trainable part: adaptation layers, correlation, kernel soft argmax.

    ``forward(levels_s, levels_t)`` -> ``{"correlation" (B, h, w, h, w) s->t, "mapping_s2t", "mapping_t2s"
    (B, h, w, 2) grid coordinates in the other image's grid}``.
    """

    def __init__(self, config: SFNetConfig, level_channels: list[int]):
        super().__init__()
        self.config = config
        if len(level_channels) != len(config.levels):
            raise CorrmarkError(f"{len(level_channels)} level widths for {len(config.levels)} levels")
        self.adaptations = nn.ModuleList(
            Adaptation(channels, kernel, config.residual_init, config.adaptation_convs) if config.adaptation
            else nn.Identity()
            for channels, kernel in zip(level_channels, config.kernel_sizes)
        )

    def adapt(self, levels: list[torch.Tensor], frozen: bool = False) -> list[torch.Tensor]:
        """Adapted (``frozen``: as given), L2-normalised features of every level, on the first level's grid."""
        grid = tuple(levels[0].shape[-2:])
        adapted = []
        for feature, layer in zip(levels, self.adaptations):
            feature = feature if frozen else layer(feature)
            if tuple(feature.shape[-2:]) != grid:
                feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
            adapted.append(l2_normalize(feature, dim=1))
        return adapted

    @staticmethod
    def correlate(adapted_a: list[torch.Tensor], adapted_b: list[torch.Tensor]) -> torch.Tensor:
        """Eq. (1) per level, combined by element-wise product of the (non-negative parts of the) cosines."""
        correlation = None
        for a, b in zip(adapted_a, adapted_b):
            level = correlation_4d(a, b, normalize=False).clamp(min=0)
            correlation = level if correlation is None else correlation * level
        return correlation

    def argmax(self, correlation: torch.Tensor, mode: str) -> torch.Tensor:
        """Matches in B for every cell of A: ``(B, hA, wA, 2)`` grid (x, y)."""
        normalize = self.config.argmax_normalize
        if mode == "kernel":
            return kernel_soft_argmax(correlation, beta=self.config.beta, sigma=self.config.sigma, normalize=normalize)
        if mode == "soft":
            if normalize:
                correlation = l2_normalize(correlation.flatten(3), dim=3).reshape(correlation.shape)
            return soft_argmax_4d(correlation, beta=self.config.beta)
        return correlation_argmax(correlation)[0]

    def forward(self, levels_s: list[torch.Tensor], levels_t: list[torch.Tensor], mode: str | None = None) -> dict:
        mode = mode or (self.config.train_argmax if self.training else self.config.test_argmax)
        adapted_s, adapted_t = self.adapt(levels_s), self.adapt(levels_t)
        correlation = self.correlate(adapted_s, adapted_t)
        return {
            "correlation": correlation,
            "mapping_s2t": self.argmax(correlation, mode),
            "mapping_t2s": self.argmax(correlation.permute(0, 3, 4, 1, 2), mode),
        }


class SFNetMatcher(Matcher):
    """The Matcher interface over a (trained) ``SFNetHead``; see the module docstring."""

    name = "sfnet"

    def __init__(self, config: SFNetConfig | dict | None = None, head_state: dict | None = None, device="cpu",
                 weights_files: dict | None = None, checkpoint: str | None = None, precision: str | None = None):
        self.config = config if isinstance(config, SFNetConfig) else SFNetConfig.from_dict(config)
        self.device = resolve_device(device)
        self.set_precision(precision, self.device)  # of the features and adaptation (models.base.MixedPrecision)
        self.checkpoint = checkpoint
        self.features = SFNetFeatures(self.config.levels, device=self.device, weights_files=weights_files,
                                      source_scaling=self.config.source_scaling).eval()
        self.head = SFNetHead(self.config, self.features.level_channels).to(self.device).eval()
        if head_state is not None:
            check_state_keys(self.head, head_state, source=f"SFNet checkpoint {checkpoint or ''}".strip())
            self.head.load_state_dict(head_state, strict=True)
        self.preprocess = Preprocess(self.config.image_size, self.features.size_multiple)
        self.input_size = self.preprocess.square_size
        self._cache = DescriptorCache(64)

    def describe(self) -> dict:
        return {"name": self.name, **self.config.to_dict(), "input_size": self.input_size,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, **self.precision_fields()}

    def _described(self, image: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """(adapted levels, frozen levels or None): normalised, on the first level's grid; the frozen ones are kept
        only when the fallback needs them. Cached by image content."""
        return self._cache.get_or_compute(image, lambda: self._describe_uncached(image), self.precision)

    @torch.no_grad()
    def _describe_uncached(self, image: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        def forward():
            levels = self.features(self.preprocess.to_input(image, device=self.device))
            frozen = self.head.adapt(levels, frozen=True) if self.config.fallback > 0 else None
            return self.head.adapt(levels), frozen
        return self.at_precision(forward, self.device)

    def match_grids(self, target_levels, source_levels) -> tuple[torch.Tensor, torch.Tensor]:
        """Target-grid matches ``(h, w, 2)`` in the source grid and each cell's best score ``(h, w)``."""
        correlation = self.head.correlate(target_levels, source_levels)
        if self.config.test_mutual:
            correlation = mutual_nn_filter(correlation)
        score = correlation.flatten(3).max(dim=3).values[0]
        return self.head.argmax(correlation, self.config.test_argmax)[0], score

    def grid_mapping(self, source: ImageLike, target: ImageLike) -> torch.Tensor:
        """Target-grid mapping into the source grid, ``(h, w, 2)`` grid coordinates."""
        target_described = self._described(read_image(target))
        return self._match_described(target_described, self._described(read_image(source)))

    @torch.no_grad()
    def _match_described(self, target_described, source_described) -> torch.Tensor:
        """:meth:`grid_mapping` from the two images' cached descriptions (:meth:`_described`)."""
        (target_adapted, target_frozen), (source_adapted, source_frozen) = target_described, source_described
        mapping, score = self.match_grids(target_adapted, source_adapted)
        if self.config.fallback > 0:
            frozen_mapping, _ = self.match_grids(target_frozen, source_frozen)
            unsure = (score < self.config.fallback)[..., None]
            mapping = torch.where(unsure, frozen_mapping, mapping)
        return mapping

    def coarse_mapping(self, source: np.ndarray, target: np.ndarray) -> CoarseMapping:
        """The target-grid mapping into the source grid; each image is described (and hashed) once."""
        target_described, source_described = self._described(target), self._described(source)
        grid = self._match_described(target_described, source_described)
        source_grid_hw = tuple(source_described[0][0].shape[-2:])
        return CoarseMapping(grid, source_grid_hw, tuple(source.shape[:2]), extrapolate=False)

    def estimate_mapping(self, source: ImageLike, target: ImageLike) -> np.ndarray:
        source_image, target_image = read_image(source), read_image(target)
        return self.coarse_mapping(source_image, target_image).dense(target_image.shape[:2])


@register_matcher("sfnet")
def load_sfnet(checkpoint, device="cpu", weights_files: dict | None = None, precision: str | None = None,
               **overrides) -> SFNetMatcher:
    """An ``SFNetMatcher`` from a training checkpoint (``corrmark.train`` format), loaded strictly.

    ``overrides`` may change test-time settings only (``test_argmax``, ``test_mutual`` (also as ``mutual``), ``beta``,
    ``sigma``, ``image_size``); ``precision`` is the forward's (``models.base.MixedPrecision``).
    """
    if "mutual" in overrides:  # the option's name on the other matchers and on the command line (--mutual)
        overrides["test_mutual"] = overrides.pop("mutual")
    payload = read_checkpoint(checkpoint, method="sfnet")
    config = dict((payload.get("config") or {}).get("model") or {})
    if not config and "sfnet_config" in payload:
        config = dict(payload["sfnet_config"])
    allowed = {"test_argmax", "test_mutual", "beta", "sigma", "image_size", "fallback"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise UnknownNameError(f"option(s) {', '.join(bad)} cannot change a trained SFNet; allowed: {', '.join(sorted(allowed))}")
    config.update(overrides)
    try:
        return SFNetMatcher(config, payload["model"], device=device, weights_files=weights_files, checkpoint=checkpoint,
                            precision=precision)
    except CheckpointError:
        raise
    except UnknownNameError as error:
        raise CheckpointError(f"checkpoint {checkpoint}: {error}") from error
