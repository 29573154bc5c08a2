"""C3 (Xu et al., 2020): landmarks learned from unpaired images by cross-image cycle consistency (docs/C3.md).

Small convolutional networks trained from scratch on square ``image_size`` inputs (64 px for faces), sized for CPU:

- **pose encoder** (a small U-Net): image -> K score maps on a grid ``heatmap_stride`` times coarser than the
  image -> spatial softmax (``psi``, each map sums to one) -> soft-argmax coordinates (the expectation under
  ``psi``) in normalised ``[-1, 1]`` units -> Gaussian maps rendered at them (``ops.render_gaussians``).
- **appearance encoder**: image -> a feature map on the ``appearance_stride`` grid, pooled into one vector per
  landmark (weighted by that landmark's ``psi``) and one background vector (weighted by what the Gaussians of the
  image's own landmarks leave uncovered). Pooling under the landmarks is the bottleneck that keeps pose out of the
  appearance code: a spatial appearance map would let the generator copy its input, and the cycle would be
  satisfied without landmarks.
- **generator**: splats each part vector onto its landmark's Gaussian map (plus the background vector where no
  Gaussian is), concatenates the Gaussian maps at every scale, and decodes to an image in [0, 1].
- **flow module**: a small encoder of L2-normalised features on the ``flow_stride`` grid; the all-pairs cosine
  correlation of a target and a source image and a soft argmax over the source give, for every target cell, its
  match in the source (a target-to-source mapping, normalised coordinates).

A *code* is a dict ``{"points", "psi", "parts", "background"}`` for a batch of images; ``generate(appearance_code,
pose_code)`` draws the appearance of one code in the pose of another (the swap of the paper).

``C3Net`` is the trainable module (all of it is checkpointed); ``C3LandmarkModel`` the ``LandmarkModel`` wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import check_state_keys, read_checkpoint
from ..device import resolve_device
from ..errors import CheckpointError, CorrmarkError, UnknownNameError
from ..ops import (correlation_4d, l2_normalize, normalized_to_pixel, pixel_to_normalized, render_gaussians,
                   soft_argmax_4d, spatial_expectation, spatial_softmax)
from ..preprocess import Preprocess
from ..registry import register_landmark_model
from .base import LandmarkModel, MethodConfig


@dataclass
class C3Config(MethodConfig):
    label: ClassVar[str] = "C3"  # error messages name the method
    image_size: int = 64  # square network input
    num_landmarks: int = 10  # K
    heatmap_stride: int = 2  # landmark maps on an (image_size / stride)^2 grid
    pose_channels: int = 16  # width of the pose U-Net's first level (x2, x4, x4 deeper)
    appearance_channels: int = 32  # size of every part / background vector
    appearance_stride: int = 4  # grid of the appearance features and the generator's first level
    generator_channels: int = 64  # width of the generator's first level (halved at every upsampling, >= 16)
    gaussian_sigma: float = 0.1  # std of the rendered landmark maps, normalised [-1, 1] units
    flow_channels: int = 32  # feature size of the flow module
    flow_stride: int = 4  # grid of the flow module
    flow_beta: float = 20.0  # soft argmax temperature over the cosine correlation

    def __post_init__(self):
        for name in ("image_size", "num_landmarks", "pose_channels", "appearance_channels", "generator_channels",
                     "flow_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CorrmarkError(f"C3 {name} must be a positive int, got {value!r}")
        for name, allowed in (("heatmap_stride", (1, 2, 4, 8)), ("appearance_stride", (2, 4, 8)),
                              ("flow_stride", (2, 4, 8))):
            if getattr(self, name) not in allowed:
                raise CorrmarkError(f"C3 {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.image_size % 8:
            raise CorrmarkError(f"C3 image_size must be a multiple of 8, got {self.image_size}")
        if not self.gaussian_sigma > 0 or not self.flow_beta > 0:
            raise CorrmarkError("C3 gaussian_sigma and flow_beta must be positive")



def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + GroupNorm + ReLU. GroupNorm, not BatchNorm: no batch statistics, so real and generated images
    passed separately are treated alike and train / eval modes compute the same function."""
    groups = 8 if out_channels % 8 == 0 else 1
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True))


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --- pose -----------------------------------------------------------------------------------------------------------


class PoseEncoder(nn.Module):
    """A U-Net with levels at strides 1, 2, 4, 8 (``c, 2c, 4c, 4c`` channels), decoded back to the heatmap stride."""

    def __init__(self, config: C3Config):
        super().__init__()
        c = config.pose_channels
        widths = [c, 2 * c, 4 * c, 4 * c]
        self.down = nn.ModuleList([
            conv_block(3, widths[0]),
            nn.Sequential(conv_block(widths[0], widths[1], 2), conv_block(widths[1], widths[1])),
            nn.Sequential(conv_block(widths[1], widths[2], 2), conv_block(widths[2], widths[2])),
            nn.Sequential(conv_block(widths[2], widths[3], 2), conv_block(widths[3], widths[3])),
        ])
        target_level = int(math.log2(config.heatmap_stride))
        ups, width = [], widths[3]
        for level in range(2, target_level - 1, -1):  # from stride 4 up to the heatmap stride
            ups.append(conv_block(width + widths[level], widths[level]))
            width = widths[level]
        self.up = nn.ModuleList(ups)
        self.target_level = target_level
        self.head = nn.Conv2d(width, config.num_landmarks, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips, x = [], images
        for block in self.down:
            x = block(x)
            skips.append(x)
        for offset, block in enumerate(self.up):
            skip = skips[2 - offset]
            x = block(torch.cat([upsample(x, tuple(skip.shape[-2:])), skip], dim=1))
        return self.head(x)


# --- appearance and generator ---------------------------------------------------------------------------------------


def strided_stem(channels: int, stride: int) -> tuple[list[nn.Module], int]:
    """Image ``(B, 3, H, W)`` -> ``(B, channels, H / stride, W / stride)`` layers: a first conv block (half width from 16
    channels up), then one stride-2 block per doubling of ``stride``. Returns the layers and their output width."""
    layers = [conv_block(3, channels // 2 if channels >= 16 else channels)]
    width = layers[0][0].out_channels
    for _ in range(int(math.log2(stride))):
        layers.append(conv_block(width, channels, 2))
        width = channels
    return layers, width


class AppearanceEncoder(nn.Module):
    """Image -> ``(B, C, image_size / appearance_stride, ...)`` features (one conv level per stride doubling)."""

    def __init__(self, config: C3Config):
        super().__init__()
        c = config.appearance_channels
        layers, width = strided_stem(c, config.appearance_stride)
        layers.append(nn.Conv2d(width, c, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def pool_parts(features: torch.Tensor, psi: torch.Tensor, own_gaussians: torch.Tensor, eps: float = 1e-6) -> dict:
    """Part vectors ``(B, K, C)``: features averaged under each landmark's ``psi`` (brought to the feature grid);
    background vector ``(B, C)``: averaged where the image's own Gaussians ``(B, K, h, w)`` leave the grid uncovered."""
    grid = tuple(features.shape[-2:])
    weights = F.adaptive_avg_pool2d(psi, grid) if tuple(psi.shape[-2:]) != grid else psi
    weights = weights / weights.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)
    parts = torch.einsum("bkhw,bchw->bkc", weights, features)
    uncovered = (1 - own_gaussians.sum(dim=1, keepdim=True).clamp(max=1.0))
    background = (uncovered * features).sum(dim=(-2, -1)) / uncovered.sum(dim=(-2, -1)).clamp_min(eps)
    return {"parts": parts, "background": background}


class Generator(nn.Module):
    """(part vectors, background vector, target points) -> image; Gaussian maps are fed at every scale."""

    def __init__(self, config: C3Config):
        super().__init__()
        self.config = config
        k, c = config.num_landmarks, config.appearance_channels
        width = config.generator_channels
        self.stem = nn.Sequential(conv_block(c + k, width), conv_block(width, width))
        blocks = []
        for _ in range(int(math.log2(config.appearance_stride))):  # one conv per finer level: most of the cost
            narrower = max(16, width // 2)
            blocks.append(conv_block(width + k, narrower))
            width = narrower
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, parts: torch.Tensor, background: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size // self.config.appearance_stride
        gaussians = render_gaussians(points, size, self.config.gaussian_sigma)
        coverage = gaussians.sum(dim=1, keepdim=True).clamp(max=1.0)
        splat = torch.einsum("bkhw,bkc->bchw", gaussians, parts) + (1 - coverage) * background[..., None, None]
        x = self.stem(torch.cat([splat, gaussians], dim=1))
        for block in self.blocks:
            size *= 2
            x = upsample(x, (size, size))
            x = block(torch.cat([x, render_gaussians(points, size, self.config.gaussian_sigma)], dim=1))
        return torch.sigmoid(self.out(x))


# --- flow -----------------------------------------------------------------------------------------------------------


class FlowModule(nn.Module):
    """Dense target-to-source correspondence from the correlation of small learned features."""

    def __init__(self, config: C3Config):
        super().__init__()
        c = config.flow_channels
        layers, width = strided_stem(c, config.flow_stride)
        layers += [conv_block(width, c), nn.Conv2d(c, c, 1)]
        self.features = nn.Sequential(*layers)
        self.beta = config.flow_beta

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``(B, h, w, 2)``: for every cell of the target's flow grid, its match in the source, normalised."""
        both = l2_normalize(self.features(torch.cat([target, source])), dim=1)
        target_features, source_features = both.chunk(2)
        correlation = correlation_4d(target_features, source_features, normalize=False)
        grid_points = soft_argmax_4d(correlation, beta=self.beta)  # source grid cells
        return pixel_to_normalized(grid_points, tuple(source_features.shape[-2:]))


# --- the whole network ----------------------------------------------------------------------------------------------


class C3Net(nn.Module):
    """Pose encoder, appearance encoder, generator and flow module (see the module docstring)."""

    def __init__(self, config: C3Config | dict | None = None):
        super().__init__()
        self.config = config if isinstance(config, C3Config) else C3Config.from_dict(config)
        self.pose = PoseEncoder(self.config)
        self.appearance = AppearanceEncoder(self.config)
        self.generator = Generator(self.config)
        self.flow = FlowModule(self.config)

    def detect(self, images: torch.Tensor) -> dict:
        """``scores`` and ``psi`` ``(B, K, h, w)``, ``points`` ``(B, K, 2)`` normalised ``[-1, 1]`` ``(x, y)``."""
        scores = self.pose(images)
        psi = spatial_softmax(scores)
        return {"scores": scores, "psi": psi, "points": spatial_expectation(psi, coordinates="normalized")}

    def describe_appearance(self, images: torch.Tensor, detection: dict) -> dict:
        """Part and background vectors of ``images``, pooled under their own ``detection``."""
        features = self.appearance(images)
        own = render_gaussians(detection["points"], tuple(features.shape[-2:]), self.config.gaussian_sigma)
        return pool_parts(features, detection["psi"], own)

    def encode(self, images: torch.Tensor, pose_images: torch.Tensor | None = None) -> dict:
        """The code of a batch: landmarks of ``pose_images`` (default: the images) and appearance of ``images``
        (pooled under the images' own landmarks). Also returns the two detections."""
        if pose_images is None:
            detection = pose = self.detect(images)
        else:  # one batch through the pose encoder instead of two
            both = self.detect(torch.cat([images, pose_images]))
            halves = {key: value.chunk(2) for key, value in both.items()}
            detection = {key: value[0] for key, value in halves.items()}
            pose = {key: value[1] for key, value in halves.items()}
        code = {"points": pose["points"], "psi": pose["psi"], **self.describe_appearance(images, detection)}
        return {**code, "appearance_detection": detection, "pose_detection": pose}

    def generate(self, appearance_code: dict, pose_code: dict) -> torch.Tensor:
        """The appearance of one code drawn in the pose (landmarks) of another."""
        return self.generator(appearance_code["parts"], appearance_code["background"], pose_code["points"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Self reconstruction (appearance and pose of the same images)."""
        code = self.encode(images)
        return self.generate(code, code)


# --- the cross-image swaps (C3's cycle, shared by training and ``C3LandmarkModel.swap``) -----------------------------


def concat_codes(first: dict, second: dict) -> dict:
    """Two codes (dicts of batch-first tensors) as one code of the concatenated batch."""
    return {key: torch.cat([first[key], second[key]]) for key in first if isinstance(first[key], torch.Tensor)}


def split_code(code: dict) -> tuple[dict, dict]:
    """Inverse of :func:`concat_codes` for two equal halves."""
    halves = {key: value.chunk(2) for key, value in code.items() if isinstance(value, torch.Tensor)}
    return {key: value[0] for key, value in halves.items()}, {key: value[1] for key, value in halves.items()}


def swap_twice(code_a: dict, code_b: dict, encode: Callable, generate: Callable) -> dict:
    """The swapping-reconstruction applied twice (the cross-image cycle).

    First swap: ``x_ab = G(app(a), pose(b))``, ``x_ba = G(app(b), pose(a))``. Second swap on the generated pair:
    ``x_a' = G(app(x_ab), pose(x_ba))`` (a's appearance, carried by x_ab, in a's pose, carried by x_ba) and
    ``x_b' = G(app(x_ba), pose(x_ab))``. ``generate(appearance_code, pose_code)`` draws the first code's appearance in
    the second code's pose; ``encode(images)`` returns a code. Both swaps run as one batch of ``2B``.

    Returns ``{"ab", "ba", "a_cycled", "b_cycled", "code_ab", "code_ba"}``.
    """
    first = generate(concat_codes(code_a, code_b), concat_codes(code_b, code_a))
    swapped_ab, swapped_ba = first.chunk(2)
    code_ab, code_ba = split_code(encode(first))
    second = generate(concat_codes(code_ab, code_ba), concat_codes(code_ba, code_ab))
    cycled_a, cycled_b = second.chunk(2)
    return {"ab": swapped_ab, "ba": swapped_ba, "a_cycled": cycled_a, "b_cycled": cycled_b,
            "code_ab": code_ab, "code_ba": code_ba}


# --- LandmarkModel wrapper ------------------------------------------------------------------------------------------


class C3LandmarkModel(LandmarkModel):
    """A trained C3 pose encoder as a LandmarkModel: images are resized to the square input; landmarks come back in
    pixels of the images as given (normalised coordinates scale with the image, so non-square inputs work)."""

    name = "c3"

    def __init__(self, net: C3Net, device="cpu", checkpoint: str | None = None):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.config = net.config
        self.preprocess = Preprocess(net.config.image_size)  # the training images were resized alike
        self.num_landmarks = net.config.num_landmarks
        self.checkpoint = checkpoint

    def describe(self) -> dict:
        return {"name": self.name, **self.config.to_dict(),
                "checkpoint": str(self.checkpoint) if self.checkpoint else None}

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise CorrmarkError(f"detect expects images of shape (B, 3, H, W) in [0, 1], got {shape}")
        square = self.preprocess.resize_batch(images.to(self.device).float())
        detection = self.net.detect(square)
        points = normalized_to_pixel(detection["points"], tuple(images.shape[-2:]))
        return detection["psi"], points

    @torch.no_grad()
    def swap(self, images_a: torch.Tensor, images_b: torch.Tensor) -> dict:
        """The two swaps of the cycle on two batches (for pictures): ``ab`` = appearance of a in the pose of b,
        ``ba``, then ``a_cycled`` / ``b_cycled`` (swapped back), and the self reconstructions ``a_self``, ``b_self``;
        all ``(B, 3, S, S)`` at the network size, plus ``points_a`` / ``points_b`` normalised."""
        a = self.preprocess.resize_batch(images_a.to(self.device).float())
        b = self.preprocess.resize_batch(images_b.to(self.device).float())
        code_a, code_b = self.net.encode(a), self.net.encode(b)
        swapped = swap_twice(code_a, code_b, self.net.encode, self.net.generate)
        return {"a": a, "b": b, "ab": swapped["ab"], "ba": swapped["ba"], "a_cycled": swapped["a_cycled"],
                "b_cycled": swapped["b_cycled"], "a_self": self.net.generate(code_a, code_a),
                "b_self": self.net.generate(code_b, code_b), "points_a": code_a["points"],
                "points_b": code_b["points"]}


@register_landmark_model("c3")
def load_c3_landmarks(checkpoint, device="cpu") -> C3LandmarkModel:
    """The pose side of a trained C3 checkpoint (``corrmark.train`` format), loaded strictly."""
    payload = read_checkpoint(checkpoint, method="c3")
    try:
        net = C3Net(dict((payload.get("config") or {}).get("model") or {}))
    except (UnknownNameError, CorrmarkError) as error:
        raise CheckpointError(f"checkpoint {checkpoint}: {error}") from error
    check_state_keys(net, payload["model"], source=f"C3 checkpoint {checkpoint}")
    net.load_state_dict(payload["model"], strict=True)
    return C3LandmarkModel(net, device=device, checkpoint=str(checkpoint))
