"""C3 losses (Xu et al. 2020, our reading in docs/C3.md), one function per training signal.

Conventions: images ``(B, 3, H, W)`` in [0, 1]; landmark points ``(B, K, 2)`` and flow mappings ``(B, h, w, 2)`` in
the normalised ``[-1, 1]`` coordinates of ``grid_sample`` (``align_corners=False``); a flow mapping is defined on the
*target* grid and holds source coordinates. Every loss is averaged over the batch.

The concentration and separation regularisers and the landmark equivariance under a known mapping are JLAD's
(``losses.jlad``: eqs. (8), (9), (2)); they are re-exported here so the C3 step reads as one list of terms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import build_backbone
from ..models.c3 import swap_twice  # the model's two swaps, re-exported: the cycle term's inputs
from ..ops import inside_map, normalized_to_pixel, pixel_to_normalized, resize_mapping, sample_field
from .jlad import (concentration_loss, default_margin, detection_loss, equivariance_loss, separation_loss,
                   synthetic_alignment_loss)

__all__ = ["PerceptualDistance", "ReconstructionDistance", "concentration_loss", "cycle_loss", "default_margin",
           "detection_loss", "equivariance_loss", "flow_equivariance_loss", "flow_photometric_loss",
           "flow_supervision_loss", "separation_loss", "swap_twice"]


# --- image distances ------------------------------------------------------------------------------------------------


class PerceptualDistance(nn.Module):
    """Distance between images on frozen ImageNet features (VGG is not available offline; EfficientNet-Lite0 is).

    For every feature level: mean absolute feature difference divided by the mean absolute target feature (detached),
    so each level counts about equally whatever its scale; the levels are averaged. The backbone stays frozen and in
    eval mode (``build_backbone``); gradients reach the *output* images only.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", layers=(0, 1, 2), device="cpu", weights: str | None = None,
                 eps: float = 1e-6):
        super().__init__()
        self.backbone = build_backbone(backbone, layers=list(layers), weights=weights, device=device)
        self.eps = eps

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = list(self.backbone(target).values())
        output_features = list(self.backbone(output).values())
        levels = []
        for produced, wanted in zip(output_features, target_features):
            scale = wanted.abs().mean(dim=(1, 2, 3)).clamp_min(self.eps)
            levels.append(((produced - wanted).abs().mean(dim=(1, 2, 3)) / scale).mean())
        return torch.stack(levels).mean()


class ReconstructionDistance:
    """``perceptual_weight * perceptual + pixel_weight * L1``; returns ``{"total", "perceptual", "pixel"}``.
    ``perceptual=None`` keeps the pixel term only (tests)."""

    def __init__(self, perceptual: Callable | None = None, perceptual_weight: float = 1.0, pixel_weight: float = 1.0):
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight) if perceptual is not None else 0.0
        self.pixel_weight = float(pixel_weight)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pixel = (output - target).abs().mean()
        perceptual = self.perceptual(output, target) if self.perceptual is not None else torch.zeros_like(pixel)
        return {"total": self.perceptual_weight * perceptual + self.pixel_weight * pixel, "perceptual": perceptual,
                "pixel": pixel}


# --- the cross-image cycle (the swaps themselves are the model's, models.c3.swap_twice) ------------------------------


def cycle_loss(images_a: torch.Tensor, images_b: torch.Tensor, cycled_a: torch.Tensor, cycled_b: torch.Tensor,
               distance: Callable) -> dict[str, torch.Tensor]:
    """Distance of ``x_a'`` to ``x_a`` and of ``x_b'`` to ``x_b`` (averaged over the two, one distance call)."""
    return distance(torch.cat([cycled_a, cycled_b]), torch.cat([images_a, images_b]))


# --- flow -----------------------------------------------------------------------------------------------------------


def flow_equivariance_loss(points_source: torch.Tensor, points_target: torch.Tensor, mapping: torch.Tensor,
                           mapping_back: torch.Tensor | None = None, tolerance: float = 0.125,
                           detach_flow: bool = True) -> dict[str, torch.Tensor]:
    """Cross-image equivariance: the target's landmarks carried into the source by the flow must meet the source's
    landmarks. Without ``mapping_back`` this is ``losses.jlad.equivariance_loss`` with the predicted flow in place of
    a known mapping.

    ``mapping_back`` (source grid -> target coordinates, the flow the other way) turns on a forward-backward check:
    a landmark whose round trip target -> source -> target ends ``e`` away from where it started counts with weight
    ``exp(-e^2 / (2 tolerance^2))`` (no gradient). Measured on MTFL: an untrained, blurry flow sends every point
    towards the image centre, and the unweighted loss then pulls all landmarks together; the round trip of such a
    flow fails, so the check mutes it until the flow is trustworthy.

    ``detach_flow``: the flow teaches the landmarks but is not moved by them (it is trained by its own terms); this
    keeps the two from agreeing on a wrong answer together.

    Returns ``{"loss": squared distance (weighted) summed over landmarks, averaged over the batch, "trust": mean
    weight}``.
    """
    flow = mapping.detach() if detach_flow else mapping
    if mapping_back is None:
        loss = equivariance_loss(points_source, points_target, flow)
        return {"loss": loss, "trust": torch.ones_like(loss)}
    carried = _read_flow(flow, points_target)
    with torch.no_grad():
        returned = _read_flow(mapping_back, carried)
        round_trip = (returned - points_target).pow(2).sum(dim=-1)
        trust = torch.exp(-round_trip / (2 * tolerance**2))
    squared = (carried - points_source).pow(2).sum(dim=-1)
    return {"loss": (trust * squared).sum(dim=1).mean(), "trust": trust.mean()}


def _read_flow(mapping: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A ``(B, h, w, 2)`` mapping read (bilinear, border) at normalised points ``(B, K, 2)`` of its own grid."""
    return sample_field(mapping, normalized_to_pixel(points, tuple(mapping.shape[1:3])), channels_last=True)


def flow_supervision_loss(predicted: torch.Tensor, true_mapping: torch.Tensor, image_hw: tuple[int, int]
                          ) -> torch.Tensor:
    """The flow on a synthetic pair against the known warp: mean squared error (normalised units) over the flow
    cells whose true match lies on the source (``losses.jlad.synthetic_alignment_loss``).

    Args:
        predicted: ``(B, h, w, 2)`` normalised source coordinates of the target's flow grid.
        true_mapping: ``(B, H, W, 2)`` the warp's target-to-source mapping in image pixels (``data.synthetic``).
        image_hw: ``(H, W)`` of the source image.
    """
    on_grid = resize_mapping(true_mapping, tuple(predicted.shape[1:3]))  # read at the flow cells' centres
    valid = inside_map(on_grid, image_hw)
    return synthetic_alignment_loss(predicted, pixel_to_normalized(on_grid, image_hw), valid)


def flow_photometric_loss(source_images: torch.Tensor, target_images: torch.Tensor, mapping: torch.Tensor,
                          downsample: int = 2) -> torch.Tensor:
    """Warping ``source_images`` by the flow must explain ``target_images``: mean L1 over the pixels whose match
    lies on the source, compared at ``1 / downsample`` resolution (generated sources are blurrier than real targets).
    """
    size = tuple(target_images.shape[-2:])
    dense = resize_mapping(mapping, size)  # linear extrapolation at the border keeps affine flows exact
    warped = F.grid_sample(source_images, dense, mode="bilinear", padding_mode="border", align_corners=False)
    valid = (dense.abs() <= 1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2).to(warped.dtype)
    if downsample > 1:
        warped, target_images = F.avg_pool2d(warped, downsample), F.avg_pool2d(target_images, downsample)
        valid = F.avg_pool2d(valid, downsample)
    error = (warped - target_images).abs().mean(dim=1, keepdim=True)
    return (error * valid).sum() / valid.sum().clamp_min(1.0)
