"""Synthetic training views: a random geometric warp applied identically to an image and its foreground mask, plus
horizontal flip and colour jitter.

Every warp is represented by its dense **mapping**: ``(B, H, W, 2)``, for each pixel of the warped view the ``(x, y)``
pixel of the original image it was read from (a target-to-source mapping, docs/CONVENTIONS.md). The image and the
mask are both resampled through that one mapping with ``corrmark.ops.warp_backward``, so they stay aligned by
construction, and the mapping is the ground-truth correspondence between the view and the original.

Warps: a random affine transform about the image centre (rotation, isotropic scale, aspect change, shear,
translation), optionally followed by a thin-plate spline (kornia's TPS solver) on a coarse grid of randomly
displaced control points; then an optional horizontal mirror. Colour jitter uses ``kornia.enhance``. All randomness
comes from the ``torch.Generator`` the caller passes, so views are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ..ops import compose_mappings, pixel_grid, warp_backward


@dataclass
class WarpConfig:
    """Ranges of the random warp (angles in degrees, translations as fractions of the image size)."""

    rotation: float = 15.0  # uniform in [-r, r]
    scale: tuple = (0.8, 1.15)  # isotropic zoom of the view, uniform in log space
    aspect: float = 0.1  # log aspect-ratio change, uniform in [-a, a]
    shear: float = 0.1  # uniform in [-s, s]
    translation: float = 0.1  # uniform in [-t, t] x (W, H)
    tps_probability: float = 0.0  # chance of an additional TPS deformation
    tps_grid: int = 3  # control points per side
    tps_strength: float = 0.06  # std of control point displacement, fraction of the image size
    flip_probability: float = 0.5
    jitter: dict = field(default_factory=lambda: {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.03})

    @classmethod
    def from_dict(cls, values: dict | None) -> WarpConfig:
        config = cls()
        for key, value in (values or {}).items():
            if not hasattr(config, key):
                raise KeyError(f"unknown warp option '{key}'; options: {', '.join(asdict(config))}")
            setattr(config, key, tuple(value) if isinstance(value, list) else value)
        return config


def _uniform(generator: torch.Generator, batch: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator)


def random_affine_matrices(generator: torch.Generator, batch: int, config: WarpConfig) -> torch.Tensor:
    """``(B, 2, 2)`` linear parts of random affine maps from view coordinates to source coordinates (centred)."""
    angle = torch.deg2rad(_uniform(generator, batch, -config.rotation, config.rotation))
    low, high = (math.log(v) for v in config.scale)
    zoom = torch.exp(_uniform(generator, batch, low, high))
    aspect = torch.exp(_uniform(generator, batch, -config.aspect, config.aspect))
    shear = _uniform(generator, batch, -config.shear, config.shear)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    scaling = torch.diag_embed(torch.stack([zoom * aspect.sqrt(), zoom / aspect.sqrt()], -1))
    shearing = torch.eye(2).repeat(batch, 1, 1)
    shearing[:, 0, 1] = shear
    # a view zoomed in by `zoom` reads the source at 1/zoom of the distance from the centre
    return torch.linalg.inv(rotation @ scaling @ shearing)


def affine_mapping(linear: torch.Tensor, offset: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Mapping of ``p_src = c + linear @ (p_view - c) + offset`` on an ``(H, W)`` view; ``c`` is the image centre.

    Args:
        linear: ``(B, 2, 2)``; offset: ``(B, 2)`` pixels.

    Returns:
        ``(B, H, W, 2)`` source pixel ``(x, y)`` for each view pixel.
    """
    height, width = size_hw
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=linear.dtype)
    grid = pixel_grid(height, width, dtype=linear.dtype) - centre  # (H, W, 2)
    mapped = torch.einsum("bij,hwj->bhwi", linear, grid)
    return mapped + centre + offset[:, None, None, :]


def tps_mapping(generator: torch.Generator, batch: int, size_hw: tuple[int, int], grid: int,
                strength: float) -> torch.Tensor:
    """A random smooth deformation: control points on a ``grid x grid`` lattice displaced by Gaussian noise of std
    ``strength * size``, interpolated by a thin-plate spline (kornia). Returns ``(B, H, W, 2)`` source pixels."""
    from kornia.geometry.transform import get_tps_transform, warp_points_tps  # kornia: ~0.7 s to import, only here

    height, width = size_hw
    steps = torch.linspace(0.1, 0.9, grid)
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    view_points = torch.stack([xs.flatten() * (width - 1), ys.flatten() * (height - 1)], -1)[None].repeat(batch, 1, 1)
    scale = torch.tensor([width, height], dtype=torch.float32)
    source_points = view_points + strength * scale * torch.randn(view_points.shape, generator=generator)
    # kornia's convention (measured): get_tps_transform(a, b) with kernel centres b maps the points a onto b
    kernel_weights, affine_weights = get_tps_transform(view_points, source_points)
    pixels = pixel_grid(height, width).reshape(1, -1, 2).repeat(batch, 1, 1)
    mapped = warp_points_tps(pixels, source_points, kernel_weights, affine_weights)
    return mapped.reshape(batch, height, width, 2)


def random_mapping(generator: torch.Generator, batch: int, size_hw: tuple[int, int], config: WarpConfig,
                   source_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """A random warp as a mapping ``(B, H, W, 2)`` from view pixels to source pixels (affine, optional TPS, optional
    flip). ``source_hw`` is the source image size (default: the view size); views of a different size see the whole
    source rescaled before the warp."""
    height, width = size_hw
    source_h, source_w = source_hw or size_hw
    linear = random_affine_matrices(generator, batch, config)
    offset = torch.stack([_uniform(generator, batch, -config.translation, config.translation) * width,
                          _uniform(generator, batch, -config.translation, config.translation) * height], -1)
    mapping = affine_mapping(linear, offset, size_hw)
    use_tps = torch.rand(batch, generator=generator) < config.tps_probability
    if config.tps_probability > 0 and bool(use_tps.any()):
        deformation = tps_mapping(generator, batch, size_hw, config.tps_grid, config.tps_strength)
        mapping = torch.where(use_tps[:, None, None, None], compose_mappings(mapping, deformation), mapping)
    flip = torch.rand(batch, generator=generator) < config.flip_probability
    mirrored = mapping.flip(2)  # view column j reads what column W-1-j read
    mapping = torch.where(flip[:, None, None, None], mirrored, mapping)
    if (source_h, source_w) != (height, width):
        scale = torch.tensor([source_w / width, source_h / height], dtype=mapping.dtype)
        mapping = (mapping + 0.5) * scale - 0.5
    return mapping


def color_jitter(images: torch.Tensor, generator: torch.Generator, jitter: dict) -> torch.Tensor:
    """Random brightness / contrast / saturation / hue changes (kornia.enhance), one draw per image; [0, 1] in/out."""
    import kornia.enhance as enhance  # kornia: ~0.7 s to import, only when jitter is on

    batch = images.shape[0]
    out = images
    brightness = jitter.get("brightness", 0.0)
    contrast = jitter.get("contrast", 0.0)
    saturation = jitter.get("saturation", 0.0)
    hue = jitter.get("hue", 0.0)
    if brightness:
        out = enhance.adjust_brightness(out, _uniform(generator, batch, -brightness, brightness), clip_output=True)
    if contrast:
        out = enhance.adjust_contrast(out, _uniform(generator, batch, 1 - contrast, 1 + contrast), clip_output=True)
    if saturation:
        out = enhance.adjust_saturation(out, _uniform(generator, batch, 1 - saturation, 1 + saturation))
    if hue:
        out = enhance.adjust_hue(out, _uniform(generator, batch, -hue, hue) * 2 * math.pi)
    return out.clamp(0, 1)


def warp_image_and_mask(images: torch.Tensor, masks: torch.Tensor | None, mapping: torch.Tensor):
    """Resample images ``(B, 3, Hs, Ws)`` and masks ``(B, 1, Hs, Ws)`` through one mapping ``(B, H, W, 2)``.

    Images use border padding (no black corners for the network to latch on to), masks zero padding (outside the
    source is background). Masks come back as float in [0, 1] (bilinear); threshold them if binary masks are needed.
    Returns ``(images, masks or None, valid (B, H, W))``.
    """
    warped, valid = warp_backward(images, mapping, mode="bilinear", padding_mode="border")
    warped_masks = None
    if masks is not None:
        warped_masks, _ = warp_backward(masks.float(), mapping, mode="bilinear", padding_mode="zeros")
    return warped, warped_masks, valid


class SyntheticWarp:
    """Random views of images with masks: ``view(images, masks, generator)`` ->
    ``{"image", "mask", "mapping", "valid"}`` (see the module docstring)."""

    def __init__(self, config: WarpConfig | dict | None = None):
        self.config = config if isinstance(config, WarpConfig) else WarpConfig.from_dict(config)

    def view(self, images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator,
             size_hw: tuple[int, int] | None = None) -> dict:
        size_hw = size_hw or tuple(images.shape[-2:])
        mapping = random_mapping(generator, images.shape[0], size_hw, self.config, tuple(images.shape[-2:]))
        warped, warped_masks, valid = warp_image_and_mask(images, masks, mapping)
        if self.config.jitter:
            warped = color_jitter(warped, generator, self.config.jitter)
        return {"image": warped, "mask": warped_masks, "mapping": mapping, "valid": valid}
