"""JLAD (Jeon et al., 2019): joint learning of semantic alignment and object landmark detection.

The three sub-networks of the paper's Fig. 3, on top of a frozen backbone (docs/JLAD.md):

- **W_F** (feature extraction): frozen backbone features (default DINOv2-S block 8, stride 14) scaled to unit RMS per
  channel, then trainable layers (1x1 conv, ReLU, 3x3 conv), L2-normalised along channels.
- **similarity, eq. (3)**: ``C^st = ops.local_correlation(F^s, F^t, r)`` (cross, on the source grid, channel ``d``
  = displacement ``window_offsets(r)[d]``), ``C^ss``, ``C^tt`` = ``ops.dense_self_similarity(F, r)``; each normalised
  over the window (radius ``r = 5`` cells by default).
- **W_A** (alignment module): an encoder-decoder on ``C^st`` -> a locally varying transformation field ``tau``: for
  every source cell, the ``(x, y)`` target grid coordinates it corresponds to. ``tau = identity + d_soft + delta``,
  where ``d_soft`` is the parameter-free soft argmax of ``C^st`` over the window (``ops.local_correlation_soft_argmax``,
  a starting estimate) and ``delta`` the decoder's output (``residual_soft_argmax: false`` drops ``d_soft``).
- **W_C** (uncertainty module): convolutions on ``C^st`` -> ``log sigma`` (log-variance, so ``1 / sigma`` is safe).
- **W_D** (landmark detector): a decoder on ``[F, C^ss]`` (``self_similarity: false`` drops ``C^ss``, the "wo/SS"
  ablation) upsampling ``upsample`` times -> ``K + 1`` score maps (K landmarks + background), softmax over channels
  (eq. 4) and the normalised expectation of the coordinates (eq. 5).

Coordinates: ``tau`` is in feature-grid cells; landmark heatmaps live on a grid ``upsample`` times finer; ``points``
(eq. 5) are returned in heatmap-grid cells and in the normalised ``[-1, 1]`` coordinates of ``grid_sample``
(``align_corners=False``) used by the losses; the wrappers convert to input pixels (docs/CONVENTIONS.md).

``tune_block: true`` makes the last requested DINOv2 block (and the final LayerNorm of the ``norm`` facet) part of
W_F: the frozen part then stops at the tokens entering that block, and ``TunedBlock`` (inside ``JLADNet``, started as
a copy of the pretrained block) finishes the descriptor, so the features at initialisation equal the frozen ones.

Only ``JLADNet`` (the trainable part) is checkpointed; the frozen backbone is rebuilt from the config stored in the
checkpoint. ``JLADMatcher`` is the Matcher (alignment side), ``JLADLandmarks`` the LandmarkModel (detection side).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.descriptors import DescriptorExtractor, descriptor_part, fuse_parts, parse_backbone_spec
from ..backbones.dinov2 import PATCH_SIZE, DinoV2Backbone, facet_map
from ..cache import DescriptorCache
from ..checkpoints import check_state_keys, read_checkpoint
from ..device import DEFAULT_PRECISION, resolve_device
from ..errors import CheckpointError, CorrmarkError, UnknownNameError
from ..io import ImageLike, read_image
from ..ops import (dense_self_similarity, grid_stride, grid_to_pixel, l2_normalize, local_correlation,
                   local_correlation_soft_argmax, pixel_grid, pixel_to_normalized, spatial_expectation)
from ..preprocess import Preprocess
from ..registry import register_landmark_model, register_matcher
from .base import CoarseMapping, LandmarkModel, Matcher, MethodConfig, forward_at_precision


@dataclass
class JLADConfig(MethodConfig):
    label: ClassVar[str] = "JLAD"  # error messages name the method
    backbone: str = "dinov2_vits14"  # frozen part of W_F (backbones.descriptors.parse_backbone_spec syntax)
    layers: list | None = field(default_factory=lambda: [8])
    image_size: int = 224  # square network input (rounded to the backbone's size multiple)
    feature_channels: int = 128  # output channels of the trainable layers of W_F
    radius: int = 5  # window radius of eq. (3), in feature cells
    num_landmarks: int = 10  # K
    detector_channels: int = 64  # width of W_D at the feature resolution (halved at every upsampling)
    upsample: int = 2  # heatmap grid = upsample x feature grid (a power of two)
    alignment_channels: int = 64  # width of W_A
    uncertainty_channels: int = 32  # width of W_C
    self_similarity: bool = True  # feed C^ss to W_D (False = the paper's "wo/SS" ablation)
    uncertainty: bool = True  # predict sigma (False = sigma = 1 everywhere, the "wo/UM" ablation)
    residual_soft_argmax: bool = True  # tau = identity + soft argmax of C^st + W_A output
    soft_argmax_beta: float = 20.0  # temperature of that soft argmax (C^st is in [-1, 1] after eq. (3))
    tune_block: bool = False  # train the last requested DINOv2 block (+ final LayerNorm) as part of W_F

    def __post_init__(self):
        if self.layers is not None and not isinstance(self.layers, (list, tuple)):
            self.layers = [self.layers]
        if self.layers is not None:
            self.layers = list(self.layers)
        for name in ("feature_channels", "num_landmarks", "detector_channels", "alignment_channels",
                     "uncertainty_channels", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CorrmarkError(f"JLAD {name} must be a positive int, got {value!r}")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 1:
            raise CorrmarkError(f"JLAD radius must be an int >= 1, got {self.radius!r}")
        if self.upsample < 1 or self.upsample & (self.upsample - 1):
            raise CorrmarkError(f"JLAD upsample must be a power of two >= 1, got {self.upsample!r}")
        if not isinstance(self.tune_block, bool):
            raise CorrmarkError(f"JLAD tune_block must be true or false, got {self.tune_block!r}")


    @property
    def window(self) -> int:
        return (2 * self.radius + 1) ** 2


# --- the frozen part of W_F -----------------------------------------------------------------------------------------


@dataclass
class FrozenParts:
    """The frozen input of W_F with ``tune_block``: what the tuned DINOv2 block and the rest of the descriptor need.

    ``maps`` ``(B, C - D, H, W)``: every other backbone's descriptor part (normalised, weighted, resized to the
    reference grid), in the configured order; ``tokens`` ``(B, 1 + h * w, D)``: the DINOv2 tokens entering the tuned
    block (class token first, position embedding added); ``grid``: the DINOv2 patch grid ``(h, w)``.
    """

    maps: torch.Tensor
    tokens: torch.Tensor
    grid: tuple[int, int]

    @classmethod
    def from_batch(cls, values: dict) -> FrozenParts:
        """From the dict a training batch carries (``maps``, ``tokens``, ``grid``)."""
        return cls(values["maps"], values["tokens"], tuple(int(size) for size in values["grid"]))

    @classmethod
    def cat(cls, parts: list[FrozenParts]) -> FrozenParts:
        """The parts of several batches (one grid) as one batch."""
        return cls(torch.cat([part.maps for part in parts]), torch.cat([part.tokens for part in parts]), parts[0].grid)


def frozen_input(value: torch.Tensor | FrozenParts | dict) -> torch.Tensor | FrozenParts:
    """A batch's frozen part as ``JLADNet`` takes it: a tensor as it is, the dict of a ``tune_block`` bank as
    ``FrozenParts``."""
    return FrozenParts.from_batch(value) if isinstance(value, dict) else value


def unit_rms(described: torch.Tensor) -> torch.Tensor:
    """A descriptor ``(B, C, h, w)`` of unit length along channels, scaled to unit RMS per channel."""
    return described * math.sqrt(described.shape[1])


class FrozenFeatures(nn.Module):
    """Frozen backbone features ``(B, C, h, w)`` of square ``(B, 3, S, S)`` images, unit RMS per channel.

    With ``tune_block`` it gives ``FrozenParts`` instead (the DINOv2 entry stops at the tokens entering its last
    requested block); ``trainable_block()`` is then the network part that turns them into those features.
    """

    def __init__(self, config: JLADConfig, device="cpu", weights_files: dict | None = None):
        super().__init__()
        self.extractor = DescriptorExtractor(parse_backbone_spec(config.backbone, config.layers), device=device,
                                             weights_files=weights_files).eval()
        self.size_multiple = self.extractor.size_multiple
        self.stride = self.extractor.stride
        self.preprocess = Preprocess(config.image_size, self.size_multiple)
        self.input_size = self.preprocess.square_size
        self.tuned_entry = tuned_dinov2_entry(self.extractor, config.backbone) if config.tune_block else None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor | FrozenParts:
        if self.tuned_entry is None:
            return unit_rms(self.extractor(images))  # the extractor's output is L2-normalised along channels
        return self._parts(images)

    def _parts(self, images: torch.Tensor) -> FrozenParts:
        grid = self.extractor.reference_grid(images)
        maps, tokens, token_grid = [], None, None
        for index, (backbone, weight) in enumerate(zip(self.extractor.backbones, self.extractor.weights)):
            if index == self.tuned_entry:
                tokens, token_grid = backbone.tokens_entering(images, backbone.layers[-1])
            else:
                maps.extend(descriptor_part(feature, weight, grid) for feature in backbone(images).values())
        maps = torch.cat(maps, dim=1) if maps else images.new_zeros(images.shape[0], 0, *grid)
        return FrozenParts(maps, tokens, token_grid)

    def trainable_block(self) -> TunedBlock | None:
        """A trainable copy of the tuned block (and final LayerNorm) with its place in the descriptor; None without
        ``tune_block``."""
        if self.tuned_entry is None:
            return None
        backbone = self.extractor.backbones[self.tuned_entry]
        offset = sum(spec.channels for earlier in self.extractor.backbones[:self.tuned_entry]
                     for spec in earlier.feature_specs.values())
        final_norm = backbone.vit.norm if backbone.facet == "norm" else None
        block = backbone.vit.blocks[backbone.layers[-1]]
        return TunedBlock(block, final_norm, self.extractor.weights[self.tuned_entry], offset)

    @property
    def channels(self) -> int:
        return sum(spec.channels for backbone in self.extractor.backbones for spec in backbone.feature_specs.values())


def tuned_dinov2_entry(extractor: DescriptorExtractor, spec: str) -> int:
    """The index of the one DINOv2 backbone of ``extractor`` whose block ``tune_block`` trains; CorrmarkError unless
    there is exactly one, with one layer, the ``token`` or ``norm`` facet and patch stride 14."""
    found = [index for index, backbone in enumerate(extractor.backbones) if isinstance(backbone, DinoV2Backbone)]
    if len(found) != 1:
        raise CorrmarkError(f"JLAD tune_block needs exactly one DINOv2 entry in backbone {spec!r}, found {len(found)}")
    backbone = extractor.backbones[found[0]]
    if len(backbone.layers) != 1:
        raise CorrmarkError(f"JLAD tune_block trains one DINOv2 block: give {backbone.name} one layer, got "
                            f"{backbone.layers}")
    if backbone.facet not in ("token", "norm"):
        raise CorrmarkError(f"JLAD tune_block needs the token or norm facet of DINOv2, got {backbone.facet!r}")
    if backbone.patch_stride != PATCH_SIZE:
        raise CorrmarkError(f"JLAD tune_block needs DINOv2 patch stride {PATCH_SIZE}, got {backbone.patch_stride} "
                            f"({backbone.name})")
    return found[0]


# --- the trainable sub-networks -------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)


class FeatureLayers(nn.Module):
    """Trainable layers of W_F: 1x1 conv, ReLU, 3x3 conv; the caller L2-normalises."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.reduce = _conv(in_channels, channels, 1)
        self.mix = _conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(F.relu(self.reduce(x)))


class TunedBlock(nn.Module):
    """The trainable DINOv2 block of W_F (``tune_block``), a copy of the pretrained ``block`` (and of the model's
    ``final_norm`` for the ``norm`` facet), followed by the rest of the descriptor arithmetic of
    ``DescriptorExtractor`` and ``FrozenFeatures``: on ``FrozenParts`` it gives the unit-RMS features ``(B, C, H, W)``,
    equal to the frozen ones as long as the weights are the pretrained ones.

    ``weight`` is the DINOv2 entry's descriptor weight, ``offset`` the channels of the parts before it.
    """

    def __init__(self, block: nn.Module, final_norm: nn.Module | None, weight: float, offset: int):
        super().__init__()
        self.block = copy.deepcopy(block).requires_grad_(True)  # the backbone's own copy stays frozen
        self.norm = copy.deepcopy(final_norm).requires_grad_(True) if final_norm is not None else None
        self.descriptor_weight = float(weight)
        self.offset = int(offset)

    def forward(self, frozen: FrozenParts) -> torch.Tensor:
        dinov2 = facet_map(self.block(frozen.tokens), frozen.grid, self.norm)
        part = descriptor_part(dinov2, self.descriptor_weight, tuple(frozen.maps.shape[-2:]))
        maps = frozen.maps.to(part.dtype)
        return unit_rms(fuse_parts([maps[:, :self.offset], part, maps[:, self.offset:]]))


class AlignmentModule(nn.Module):
    """W_A: encoder-decoder on ``C^st`` (plus, optionally, its window soft argmax) -> a 2-channel offset field."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.enc1 = _conv(in_channels, channels)
        self.enc2 = _conv(channels, 2 * channels, stride=2)
        self.enc3 = _conv(2 * channels, 2 * channels)
        self.dec1 = _conv(2 * channels + channels, channels)
        self.out = _conv(channels, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.enc1(x))
        coarse = F.relu(self.enc3(F.relu(self.enc2(skip))))
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(F.relu(self.dec1(torch.cat([up, skip], dim=1))))


class UncertaintyModule(nn.Module):
    """W_C: three 3x3 convolutions on ``C^st`` -> ``log sigma`` (starts at 0: sigma = 1)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(in_channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())
        self.out = _conv(channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class LandmarkDetector(nn.Module):
    """W_D: decoder on ``[F, C^ss]`` -> ``K + 1`` score maps at ``upsample`` times the feature resolution.

    Every upsampling step is bilinear x2 followed by a 3x3 conv + ReLU with half the channels (at least 16).
    """

    def __init__(self, in_channels: int, channels: int, num_outputs: int, upsample: int):
        super().__init__()
        self.stem = nn.Sequential(_conv(in_channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())
        ups, width = [], channels
        for _ in range(int(math.log2(upsample))):
            ups.append(nn.Sequential(_conv(width, max(16, width // 2)), nn.ReLU()))
            width = max(16, width // 2)
        self.ups = nn.ModuleList(ups)
        self.out = _conv(width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.ups:
            x = layer(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.out(x)


def landmark_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Eq. (4): softmax over the ``K + 1`` channels of ``scores`` ``(B, K+1, h, w)``; channel 0 is the background.

    Returns ``psi`` ``(B, K, h, w)``, the K landmark channels (the background channel is dropped)."""
    return torch.softmax(scores, dim=1)[:, 1:]


class JLADNet(nn.Module):
    """The trainable part of JLAD: ``W_F`` (trainable layers), ``W_A``, ``W_C``, ``W_D``.

    Sub-network parameters are reachable as ``subnetworks()["F" | "A" | "C" | "D"]`` (the alternation of Sec. 3.4
    switches their ``requires_grad``). ``tuned_block`` (``FrozenFeatures.trainable_block()``) is given exactly when
    ``config.tune_block``: it is then the first part of W_F, and the net takes ``FrozenParts`` instead of tensors.
    """

    def __init__(self, config: JLADConfig, in_channels: int, tuned_block: TunedBlock | None = None):
        super().__init__()
        if (tuned_block is not None) != config.tune_block:
            raise CorrmarkError("JLADNet needs a tuned block (FrozenFeatures.trainable_block()) exactly when "
                                f"tune_block is true (tune_block: {config.tune_block})")
        self.config = config
        window = config.window
        self.feature_layers = FeatureLayers(in_channels, config.feature_channels)  # W_F
        extra = 2 if config.residual_soft_argmax else 0
        self.alignment = AlignmentModule(window + extra, config.alignment_channels)  # W_A
        self.uncertainty = UncertaintyModule(window, config.uncertainty_channels) if config.uncertainty else None  # W_C
        detector_in = config.feature_channels + (window if config.self_similarity else 0)
        self.detector = LandmarkDetector(detector_in, config.detector_channels, config.num_landmarks + 1,
                                         config.upsample)  # W_D
        self.tuned_block = tuned_block  # registered last: the parameter order of nets without it is unchanged

    def subnetworks(self) -> dict[str, nn.Module | None]:
        # a ModuleList made here only groups the modules; their state-dict keys stay those of the net
        features = self.feature_layers if self.tuned_block is None else nn.ModuleList([self.tuned_block,
                                                                                       self.feature_layers])
        return {"F": features, "A": self.alignment, "C": self.uncertainty, "D": self.detector}

    # --- the pieces ---------------------------------------------------------------------------------------------
    def features(self, frozen: torch.Tensor | FrozenParts) -> torch.Tensor:
        """W_F: (the tuned block on ``FrozenParts``, then) trainable layers on frozen features ``(B, C_in, h, w)``,
        L2-normalised along channels -> ``F`` ``(B, C, h, w)``."""
        if (self.tuned_block is not None) != isinstance(frozen, FrozenParts):
            raise CorrmarkError(f"JLADNet with tune_block {self.config.tune_block} got frozen input of type "
                                f"{type(frozen).__name__}")
        if self.tuned_block is not None:
            frozen = self.tuned_block(frozen)
        return l2_normalize(self.feature_layers(frozen), dim=1)

    def cross_similarity(self, features_s: torch.Tensor, features_t: torch.Tensor) -> torch.Tensor:
        """Eq. (3) ``C^st`` ``(B, (2r+1)^2, h, w)`` on the source grid."""
        return local_correlation(features_s, features_t, self.config.radius)

    def align(self, features_s: torch.Tensor, features_t: torch.Tensor) -> dict:
        """W_A and W_C: ``tau`` ``(B, h, w, 2)`` target grid ``(x, y)`` of every source cell, ``log_sigma``
        ``(B, 1, h, w)`` (zeros without the uncertainty module) and ``C^st``."""
        correlation = self.cross_similarity(features_s, features_t)
        inputs = correlation
        base = None
        if self.config.residual_soft_argmax:
            base = local_correlation_soft_argmax(correlation, self.config.radius, self.config.soft_argmax_beta)
            inputs = torch.cat([correlation, base / self.config.radius], dim=1)
        offsets = self.alignment(inputs)
        if base is not None:
            offsets = offsets + base
        height, width = correlation.shape[-2:]
        identity = pixel_grid(height, width, device=correlation.device, dtype=correlation.dtype)
        tau = identity + offsets.permute(0, 2, 3, 1)
        if self.uncertainty is not None:
            log_sigma = self.uncertainty(correlation)
        else:
            log_sigma = torch.zeros_like(correlation[:, :1])
        return {"tau": tau, "log_sigma": log_sigma, "correlation": correlation}

    def detect(self, features: torch.Tensor) -> dict:
        """W_D + eqs. (4)-(5): ``scores`` ``(B, K+1, H, W)``, ``psi`` ``(B, K, H, W)``, ``points`` ``(B, K, 2)``
        heatmap-grid ``(x, y)``, ``points_normalized`` ``(B, K, 2)`` in ``[-1, 1]``."""
        inputs = features
        if self.config.self_similarity:
            inputs = torch.cat([features, dense_self_similarity(features, self.config.radius)], dim=1)
        scores = self.detector(inputs)
        psi = landmark_probabilities(scores)
        points = spatial_expectation(psi, normalize_mass=True)  # eq. (5): psi lacks the background's mass
        return {"scores": scores, "psi": psi, "points": points,
                "points_normalized": pixel_to_normalized(points, tuple(psi.shape[-2:]))}

    def forward(self, frozen_s: torch.Tensor | FrozenParts, frozen_t: torch.Tensor | FrozenParts) -> dict:
        """Everything for a pair: ``features_s/t``, ``detection_s/t`` (dicts of :meth:`detect`), and the alignment
        of :meth:`align` (``tau``, ``log_sigma``, ``correlation``)."""
        pair = [frozen_s, frozen_t]
        features = self.features(FrozenParts.cat(pair) if isinstance(frozen_s, FrozenParts) else torch.cat(pair))
        features_s, features_t = features.chunk(2)
        detection = self.detect(features)
        split = {key: value.chunk(2) for key, value in detection.items()}
        out = {"features_s": features_s, "features_t": features_t,
               "detection_s": {key: value[0] for key, value in split.items()},
               "detection_t": {key: value[1] for key, value in split.items()}}
        out.update(self.align(features_s, features_t))
        return out


# --- runtime wrappers: the Matcher and the LandmarkModel ------------------------------------------------------------


class JLADRuntime:
    """Frozen features + a ``JLADNet`` in eval mode, with a small cache of described images."""

    def __init__(self, config: JLADConfig | dict | None = None, state: dict | None = None, device="cpu",
                 weights_files: dict | None = None, checkpoint: str | None = None):
        self.config = config if isinstance(config, JLADConfig) else JLADConfig.from_dict(config)
        self.device = resolve_device(device)
        self.checkpoint = checkpoint
        self.frozen = FrozenFeatures(self.config, device=self.device, weights_files=weights_files)
        # a tuned block starts as the pretrained one; the strict load below replaces it
        self.net = JLADNet(self.config, self.frozen.channels, self.frozen.trainable_block()).to(self.device).eval()
        if state is not None:
            check_state_keys(self.net, state, source=f"JLAD checkpoint {checkpoint or ''}".strip())
            self.net.load_state_dict(state, strict=True)
        self.preprocess = self.frozen.preprocess
        self.input_size = self.frozen.input_size
        self._cache = DescriptorCache(32)

    def describe(self) -> dict:
        return {**self.config.to_dict(), "input_size": self.input_size,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None}

    @torch.no_grad()
    def features_of(self, images: torch.Tensor, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
        """``F`` float32 of a batch ``(B, 3, H, W)`` in [0, 1] (resized to the square input); the backbone and W_F
        run at ``precision`` (``corrmark.device.autocast``), W_A, W_C and W_D at full precision on what they give."""
        square = self.preprocess.resize_batch(images.to(self.device).float())
        return forward_at_precision(lambda: self.net.features(self.frozen(square)), self.device, precision)

    def features_of_image(self, image: np.ndarray, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
        """``F`` ``(1, C, h, w)`` of an ``(H, W, 3)`` uint8 image, cached by content and precision."""
        return self._cache.get_or_compute(image, lambda: self.features_of(self.preprocess.to_input(image), precision),
                                          precision)


class JLADMatcher(Matcher):
    """The alignment side of JLAD as a Matcher: ``estimate_mapping(source, target)`` runs the network with the
    *target* as its first image, so ``tau`` is defined on the target grid with values in the source grid."""

    name = "jlad"

    def __init__(self, runtime: JLADRuntime, precision: str | None = None):
        self.runtime = runtime
        self.set_precision(precision, runtime.device)  # of the backbone and W_F (models.base.MixedPrecision)

    def describe(self) -> dict:
        return {"name": self.name, **self.runtime.describe(), **self.precision_fields()}

    @torch.no_grad()
    def grid_mapping(self, source: ImageLike, target: ImageLike) -> dict:
        """``tau`` ``(h, w, 2)`` target grid -> source grid coordinates, and ``sigma`` ``(h, w)``."""
        source_features = self.runtime.features_of_image(read_image(source), self.precision)
        target_features = self.runtime.features_of_image(read_image(target), self.precision)
        out = self.runtime.net.align(target_features, source_features)
        return {"tau": out["tau"][0], "sigma": out["log_sigma"][0, 0].exp()}

    def coarse_mapping(self, source: np.ndarray, target: np.ndarray) -> CoarseMapping:
        """``tau``, the target grid into the source grid (both images have this grid: one square input size)."""
        tau = self.grid_mapping(source, target)["tau"]
        return CoarseMapping(tau, tuple(tau.shape[:2]), tuple(source.shape[:2]), extrapolate=False)

    def estimate_mapping(self, source: ImageLike, target: ImageLike) -> np.ndarray:
        source_image, target_image = read_image(source), read_image(target)
        return self.coarse_mapping(source_image, target_image).dense(target_image.shape[:2])


class JLADLandmarks(LandmarkModel):
    """The detection side of JLAD as a LandmarkModel."""

    name = "jlad"

    def __init__(self, runtime: JLADRuntime, precision: str | None = None):
        self.runtime = runtime
        self.num_landmarks = runtime.config.num_landmarks
        self.set_precision(precision, runtime.device)  # of the backbone and W_F (models.base.MixedPrecision)

    def describe(self) -> dict:
        return {"name": self.name, "num_landmarks": self.num_landmarks, **self.runtime.describe(),
                **self.precision_fields()}

    @torch.no_grad()
    def detect_from_features(self, features: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps ``(B, K, h, w)`` and points ``(B, K, 2)`` in pixels of an ``image_hw`` image, from ``F``."""
        detection = self.runtime.net.detect(features)
        psi = detection["psi"]
        stride = grid_stride(tuple(image_hw), tuple(psi.shape[-2:]))
        return psi, grid_to_pixel(detection["points"], stride)

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise CorrmarkError(f"detect expects images of shape (B, 3, H, W) in [0, 1], got {shape}")
        features = self.runtime.features_of(images, self.precision)
        return self.detect_from_features(features, tuple(images.shape[-2:]))


def _runtime_from_checkpoint(checkpoint, device="cpu", weights_files=None) -> JLADRuntime:
    payload = read_checkpoint(checkpoint, method="jlad")
    config = dict((payload.get("config") or {}).get("model") or {})
    try:
        return JLADRuntime(config, payload["model"], device=device, weights_files=weights_files, checkpoint=checkpoint)
    except CheckpointError:
        raise
    except UnknownNameError as error:
        raise CheckpointError(f"checkpoint {checkpoint}: {error}") from error


@register_matcher("jlad")
def load_jlad_matcher(checkpoint, device="cpu", weights_files: dict | None = None,
                      precision: str | None = None) -> JLADMatcher:
    """The alignment side of a trained JLAD checkpoint (``corrmark.train`` format), loaded strictly."""
    return JLADMatcher(_runtime_from_checkpoint(checkpoint, device, weights_files), precision)


@register_landmark_model("jlad")
def load_jlad_landmarks(checkpoint, device="cpu", weights_files: dict | None = None,
                        precision: str | None = None) -> JLADLandmarks:
    """The landmark side of a trained JLAD checkpoint, loaded strictly."""
    return JLADLandmarks(_runtime_from_checkpoint(checkpoint, device, weights_files), precision)
