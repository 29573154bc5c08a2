"""The interface every backbone implements: images in [0, 1] in, a dict of named feature maps out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import nn

from ..errors import CorrmarkError


@dataclass(frozen=True)
class FeatureSpec:
    """Shape facts of one feature map: its channel count and its stride in input pixels."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """A frozen (by default) feature extractor.

    ``forward(images)`` takes ``(B, 3, H, W)`` RGB floats in ``[0, 1]``, normalises them with the backbone's own
    mean/std and returns ``{layer name: (B, C, h, w)}`` with the keys and order of ``feature_specs``.
    ``H`` and ``W`` must be multiples of ``size_multiple`` (the patch size of a ViT, 1 for CNNs).
    Subclasses implement ``extract(normalised_images)``.
    """

    def __init__(
        self,
        name: str,
        feature_specs: dict[str, FeatureSpec],
        mean: Sequence[float],
        std: Sequence[float],
        size_multiple: int = 1,
    ) -> None:
        super().__init__()
        self.name = name
        self.feature_specs = dict(feature_specs)
        self.size_multiple = int(size_multiple)
        self.trainable = True
        # Not persistent: normalisation is part of the architecture, not of the weights a checkpoint holds.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.extract(self.normalise(images))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Checked images in [0, 1] ``(B, 3, H, W)`` -> the network's input (per-channel mean / std)."""
        self.check_images(images)
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def extract(self, normalised: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of mean/std-normalised images; implemented by each backbone."""
        raise NotImplementedError

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a CorrmarkError for anything but a float (B, 3, H, W) batch with H, W multiples of size_multiple."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise CorrmarkError(f"backbone {self.name} expects images of shape (B, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise CorrmarkError(f"backbone {self.name} expects float images in [0, 1], got dtype {images.dtype}")
        height, width = images.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise CorrmarkError(
                f"backbone {self.name} needs image height and width divisible by {self.size_multiple}, "
                f"got {height}x{width}"
            )

    def set_trainable(self, trainable: bool) -> Backbone:
        """Freeze (no gradients, eval mode) or unfreeze the weights; returns self."""
        self.trainable = bool(trainable)
        self.requires_grad_(self.trainable)
        return self.train(self.training if self.trainable else False)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen backbone stays in eval mode: a parent model's .train() must not let BatchNorm layers update their
        # running statistics (or dropout fire) in weights nobody trains.
        return super().train(mode and self.trainable)


def check_layers(name: str, layers: Sequence[int], count: int | None = None) -> list[int]:
    """Sorted, de-duplicated layer indices, each in [0, count) (or just >= 0); CorrmarkError otherwise."""
    if isinstance(layers, (int, str)) or not layers:
        raise CorrmarkError(f"backbone {name} needs a non-empty list of layer indices, got {layers!r}")
    upper = float("inf") if count is None else count
    if any(isinstance(layer, bool) or not isinstance(layer, Integral) or not 0 <= layer < upper for layer in layers):
        allowed = "indices >= 0" if count is None else f"layers 0..{count - 1}"
        raise CorrmarkError(f"backbone {name} takes {allowed}, got {list(layers)}")
    return sorted({int(layer) for layer in layers})
