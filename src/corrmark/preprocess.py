"""Image -> network input, and pixel coordinates between an original image and that input.

Every model prepares its images the same way: uint8 RGB ``(H, W, 3)`` -> float ``(1, 3, H, W)`` in ``[0, 1]``
(``/ 255``) -> antialiased bilinear resize (``align_corners=False``, as the backbones were trained and the feature
banks were built) -> clamped to ``[0, 1]``. ``Preprocess`` holds the sizing rule: a square whose side is rounded to the
backbone's size multiple (the patch size of a ViT), or, with ``keep_aspect``, the image's aspect ratio.

Coordinates follow docs/CONVENTIONS.md (pixel centres at integers, an image spanning ``[-0.5, W - 0.5]``), so
resizing by ``s`` maps ``x`` to ``(x + 0.5) s - 0.5``.

Foundation layer: imports nothing from models, train or eval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CorrmarkError

ASPECT_RULES = ("area", "long-side")
MAX_ASPECT_SIDE = 4  # keep_aspect "area": the longer side stays within 4 x size


def round_to_multiple(value: float, multiple: int, up: bool = False) -> int:
    """``value`` rounded to a multiple of ``multiple``, never below ``multiple``.

    ``up=False`` takes the nearest multiple (Python's ``round``: ties to even, 21 -> 28 and 7 -> 14 for 14);
    ``up=True`` the next one up, after rounding ``value / multiple`` to 6 decimals so that float noise such as
    336.0000001 stays 336.
    """
    if up:
        return max(multiple, math.ceil(round(value / multiple, 6)) * multiple)
    return max(multiple, int(round(value / multiple)) * multiple)


def image_to_tensor(image: np.ndarray, device=None) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in ``[0, 1]``, converted on ``device`` (None: the CPU).

    The array is copied, so read-only and negatively strided arrays (a mirror view) work. Where the division runs
    matters for bit-exact results: CUDA divides by a scalar as a multiplication by its reciprocal.
    """
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    if device is not None:
        tensor = tensor.to(device)
    return tensor.permute(2, 0, 1)[None].float().div_(255.0)  # in place: one float image, not two, on big inputs


def resize_points(points: torch.Tensor, from_hw, to_hw) -> torch.Tensor:
    """``(..., 2)`` ``(x, y)`` pixels of a ``from_hw`` image -> pixels of the same image resized to ``to_hw``."""
    scale = torch.tensor([to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]], dtype=points.dtype, device=points.device)
    return (points + 0.5) * scale - 0.5


@dataclass(frozen=True)
class Preprocess:
    """How images become network inputs (see the module docstring).

    Attributes:
        size: side of the square input; with ``keep_aspect``, the side of the square that sets the size.
        multiple: every side is a multiple of this (the backbone's size multiple; 1 for none).
        keep_aspect: keep the image's aspect ratio instead of squashing it into the square.
        aspect_rule: with ``keep_aspect``, ``"area"`` gives the input the area of the square, each side rounded *up*
            (never fewer cells than the square, unless the longer side would pass ``MAX_ASPECT_SIDE * size``);
            ``"long-side"`` makes the longer side ``size``, each side rounded to the nearest multiple.
        clamp: clamp resized images to ``[0, 1]`` (antialiased downsampling can overshoot 1 by an ulp).
    """

    size: int
    multiple: int = 1
    keep_aspect: bool = False
    aspect_rule: str = "area"
    clamp: bool = True

    def __post_init__(self):
        if self.keep_aspect and self.aspect_rule not in ASPECT_RULES:
            raise CorrmarkError(f"aspect_rule must be one of {', '.join(ASPECT_RULES)}, got {self.aspect_rule!r}")

    @property
    def square_size(self) -> int:
        """The side of the square input (``size`` rounded to ``multiple``)."""
        return round_to_multiple(self.size, self.multiple)

    def working_size(self, image_hw=None) -> tuple[int, int]:
        """``(h, w)`` of the network input for an image of ``image_hw`` = ``(H, W, ...)`` (needed for keep_aspect)."""
        if not self.keep_aspect:
            return self.square_size, self.square_size
        height, width = image_hw[:2]
        if self.aspect_rule == "area":
            # capped so that a 1 x 5000 strip does not become a huge input: only past 16:1 are there fewer cells
            scale = min(self.size / math.sqrt(height * width), MAX_ASPECT_SIDE * self.size / max(height, width))
            return (round_to_multiple(height * scale, self.multiple, up=True),
                    round_to_multiple(width * scale, self.multiple, up=True))
        scale = self.size / max(height, width)
        return round_to_multiple(height * scale, self.multiple), round_to_multiple(width * scale, self.multiple)

    def to_input(self, image: np.ndarray, device=None) -> torch.Tensor:
        """``(H, W, 3)`` uint8 -> ``(1, 3, h, w)`` float network input, converted and resized on ``device``."""
        return self.resize_batch(image_to_tensor(image, device))

    def resize_batch(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float -> ``(B, C, h, w)`` at the working size, on the images' device.

        An image already at the working size comes back as given (not clamped): the resize would be the identity.
        """
        working = self.working_size(tuple(images.shape[-2:]))
        if tuple(images.shape[-2:]) == working:
            return images
        resized = F.interpolate(images, size=working, mode="bilinear", align_corners=False, antialias=True)
        return resized.clamp(0, 1) if self.clamp else resized

    def to_working(self, points: torch.Tensor, image_hw) -> torch.Tensor:
        """``(..., 2)`` ``(x, y)`` pixels of an ``image_hw`` image -> pixels of its network input."""
        return resize_points(points, tuple(image_hw[:2]), self.working_size(image_hw))

    def to_original(self, points: torch.Tensor, image_hw) -> torch.Tensor:
        """``(..., 2)`` ``(x, y)`` pixels of the network input of an ``image_hw`` image -> pixels of that image."""
        return resize_points(points, self.working_size(image_hw), tuple(image_hw[:2]))
