"""Dense descriptors for matching: one or several backbones, resized to one grid, normalised and concatenated.

Shared by the zero-shot matcher, the trained methods that start from frozen features, and the feature banks of
``corrmark.data`` (so it lives with the backbones, below both).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CorrmarkError
from . import build_backbone


class DescriptorExtractor(torch.nn.Module):
    """Concatenates L2-normalised feature maps of several (backbone, layers) onto the grid of the first one.

    ``specs`` is a list of (backbone name, layers, weight): each layer's map is normalised, scaled by its weight
    and resized bilinearly to the reference grid; the concatenation is normalised again.
    """

    def __init__(self, specs: list[tuple[str, list[int] | None, float]], device="cpu", weights_files=None):
        super().__init__()
        if not specs:
            raise CorrmarkError("a descriptor needs at least one backbone")
        weights_files = weights_files or {}
        self.backbones = torch.nn.ModuleList(
            build_backbone(name, layers=layers, weights=weights_files.get(name), device=device) for name, layers, _ in specs
        )
        self.weights = [float(weight) for _, _, weight in specs]
        self.size_multiple = int(np.lcm.reduce([b.size_multiple for b in self.backbones]))
        reference = next(iter(self.backbones[0].feature_specs.values()))
        self.stride = reference.stride

    def reference_grid(self, images: torch.Tensor) -> tuple[int, int]:
        """The grid ``(h, w)`` of the first backbone on ``images`` ``(B, 3, H, W)``: every map is resized to it."""
        return images.shape[-2] // self.stride, images.shape[-1] // self.stride

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.reference_grid(images)
        parts = [descriptor_part(feature, weight, grid)
                 for backbone, weight in zip(self.backbones, self.weights) for feature in backbone(images).values()]
        return fuse_parts(parts)


def descriptor_part(feature: torch.Tensor, weight: float, grid: tuple[int, int]) -> torch.Tensor:
    """One map ``(B, C, h, w)`` of a descriptor: L2-normalised along channels, resized bilinearly to ``grid``,
    times its weight -> ``(B, C, *grid)``."""
    feature = F.normalize(feature, dim=1)
    if tuple(feature.shape[-2:]) != tuple(grid):
        feature = F.interpolate(feature, size=tuple(grid), mode="bilinear", align_corners=False)
    return feature * weight


def fuse_parts(parts: list[torch.Tensor]) -> torch.Tensor:
    """The descriptor of its parts (:func:`descriptor_part`, in order): concatenated and L2-normalised."""
    return F.normalize(torch.cat(parts, dim=1), dim=1)


def parse_backbone_spec(backbone: str, layers) -> list[tuple[str, list[int] | None, float]]:
    """Turn ``"dinov2_vits14+efficientnet_lite0"`` and layers ``[[8, 9], [3]]`` (or ``[8]`` for one backbone)
    into extractor specs. A weight can follow a name: ``"dinov2_vits14*1.0+efficientnet_lite0*0.5"``."""
    names = [part.strip() for part in backbone.split("+") if part.strip()]
    if layers is None:
        per_backbone = [None] * len(names)
    elif len(names) == 1:
        per_backbone = [list(layers) if not _is_nested(layers) else list(layers[0])]
    else:
        if not _is_nested(layers) or len(layers) != len(names):
            raise CorrmarkError(f"give one layer list per backbone for '{backbone}', got {layers!r}")
        per_backbone = [list(group) if group is not None else None for group in layers]
    specs = []
    for name, group in zip(names, per_backbone):
        name, _, weight = name.partition("*")
        specs.append((name, group, float(weight) if weight else 1.0))
    return specs


def _is_nested(layers) -> bool:
    return any(isinstance(item, (list, tuple)) or item is None for item in layers)
