"""Rendering landmark points as Gaussian maps, at any resolution (the pose input of landmark autoencoders).

Points and widths are given in the normalised ``[-1, 1]`` coordinates of ``grid_sample`` (``align_corners=False``),
so one set of landmarks renders to the same picture, scaled, on a 16 x 16 or a 64 x 64 grid. For Gaussians in grid
cells use :func:`corrmark.ops.soft_argmax.gaussian_kernel_at`.
"""

from __future__ import annotations

import torch

from corrmark.ops._checks import check_last_dim


def render_gaussians(points: torch.Tensor, size: tuple[int, int] | int, sigma: float) -> torch.Tensor:
    """Unnormalised Gaussians ``exp(-|q - p|^2 / (2 sigma^2))`` (peak 1 at the point) on an ``(h, w)`` grid.

    Args:
        points: ``(..., 2)`` ``(x, y)`` in normalised ``[-1, 1]`` coordinates (``ops.pixel_to_normalized``);
            points off the grid are allowed (their tails still show).
        size: ``(h, w)`` of the output grid, or one int for a square grid.
        sigma: standard deviation in normalised units along both axes (so ``sigma * w / 2`` cells along x).

    Returns:
        ``(..., h, w)``, differentiable with respect to ``points``.
    """
    check_last_dim(points, 2, "points")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    height, width = (size, size) if isinstance(size, int) else size
    # normalised coordinates of the cell centres: x_n = (2j + 1) / w - 1
    xs = (2 * torch.arange(width, device=points.device, dtype=points.dtype) + 1) / width - 1
    ys = (2 * torch.arange(height, device=points.device, dtype=points.dtype) + 1) / height - 1
    # separable: one (..., w) and one (..., h) factor instead of an (..., h, w, 2) distance grid
    along_x = torch.exp(-(xs - points[..., 0:1]).pow(2) / (2.0 * sigma**2))
    along_y = torch.exp(-(ys - points[..., 1:2]).pow(2) / (2.0 * sigma**2))
    return along_y.unsqueeze(-1) * along_x.unsqueeze(-2)
