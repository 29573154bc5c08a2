"""Differentiable argmax operators: plain soft argmax and SFNet's kernel soft argmax.

Returned points are ``(x, y)`` grid coordinates (column, row) of the map the softmax runs over, as floats; convert
them to pixels with ``corrmark.ops.warp.grid_to_pixel``.
"""

from __future__ import annotations

import torch

from corrmark.ops._checks import check_ndim
from corrmark.ops.correlation import correlation_argmax, l2_normalize


def _expected_xy(probabilities: torch.Tensor) -> torch.Tensor:
    """Expectation of the ``(x, y)`` cell coordinates under ``probabilities`` ``(..., h, w)`` -> ``(..., 2)``."""
    height, width = probabilities.shape[-2:]
    xs = torch.arange(width, device=probabilities.device, dtype=probabilities.dtype)
    ys = torch.arange(height, device=probabilities.device, dtype=probabilities.dtype)
    # marginals first: O(h + w) multiplies per map instead of building an (h, w, 2) coordinate grid
    expected_x = (probabilities.sum(dim=-2) * xs).sum(dim=-1)
    expected_y = (probabilities.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([expected_x, expected_y], dim=-1)


def _spatial_softmax(scores: torch.Tensor, beta: float) -> torch.Tensor:
    """Softmax of ``beta * scores`` over the last two dimensions."""
    flat = (beta * scores).flatten(-2)
    return torch.softmax(flat, dim=-1).reshape(scores.shape)


def soft_argmax(scores: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft argmax of ``N`` score maps.

    Args:
        scores: ``(B, N, h, w)``.
        beta: softmax temperature (larger = closer to the hard argmax).

    Returns:
        ``points``: ``(B, N, 2)`` expected ``(x, y)`` grid coordinates, ``x`` in ``[0, w-1]``, ``y`` in ``[0, h-1]``;
        ``probabilities``: ``(B, N, h, w)`` = softmax of ``beta * scores`` over ``(h, w)``.
    """
    check_ndim(scores, 4, "scores", "(B, N, h, w)")
    probabilities = _spatial_softmax(scores, beta)
    return _expected_xy(probabilities), probabilities


def soft_argmax_4d(correlation: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Soft argmax over B of a 4D correlation (no kernel, no normalisation).

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.

    Returns:
        ``(B, hA, wA, 2)`` expected ``(x, y)`` grid coordinates in B for every cell of A.
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    return _expected_xy(_spatial_softmax(correlation, beta))


def gaussian_kernel_at(centres: torch.Tensor, size_hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Unnormalised Gaussians ``exp(-|q - centre|^2 / (2 sigma^2))`` (peak 1) on an ``(h, w)`` grid.

    Args:
        centres: ``(..., 2)`` ``(x, y)`` grid coordinates.
        size_hw: ``(h, w)`` of the grid.
        sigma: standard deviation in grid cells.

    Returns:
        ``(..., h, w)``.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    height, width = size_hw
    xs = torch.arange(width, device=centres.device, dtype=centres.dtype)
    ys = torch.arange(height, device=centres.device, dtype=centres.dtype)
    # separable: exp(-(dx^2 + dy^2)/2s^2) = exp(-dx^2/2s^2) * exp(-dy^2/2s^2)
    kernel_x = torch.exp(-((xs - centres[..., 0:1]) ** 2) / (2.0 * sigma**2))  # (..., w)
    kernel_y = torch.exp(-((ys - centres[..., 1:2]) ** 2) / (2.0 * sigma**2))  # (..., h)
    return kernel_y.unsqueeze(-1) * kernel_x.unsqueeze(-2)


def kernel_matching_probabilities(
    correlation: torch.Tensor, beta: float = 50.0, sigma: float = 5.0, normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """SFNet matching probabilities ``softmax_q(beta * k_p(q) * c_hat_p(q))``.

    ``c_hat_p`` is the correlation of cell ``p`` of A with all of B, L2-normalised over B (``normalize=True``);
    ``k_p`` is a Gaussian of std ``sigma`` (grid cells of B) centred on the hard argmax of ``c_p`` over B. The argmax
    carries no gradient; gradients flow through ``c_hat`` only.

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.

    Returns:
        ``(B, hA, wA, hB, wB)`` probabilities summing to 1 over ``(hB, wB)``.
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    size_b = correlation.shape[-2:]
    with torch.no_grad():
        peaks, _ = correlation_argmax(correlation.detach())
        kernel = gaussian_kernel_at(peaks, size_b, sigma)
    scores = correlation
    if normalize:
        scores = l2_normalize(correlation.flatten(3), dim=3, eps=eps).reshape(correlation.shape)
    return _spatial_softmax(kernel * scores, beta)


def kernel_soft_argmax(
    correlation: torch.Tensor, beta: float = 50.0, sigma: float = 5.0, normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """SFNet kernel soft argmax: expectation of B's cell coordinates under :func:`kernel_matching_probabilities`.

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.
        beta: softmax temperature (SFNet: 50).
        sigma: Gaussian std in grid cells of B (SFNet: 5).
        normalize: L2-normalise each correlation map over B before the kernel (SFNet does).

    Returns:
        ``(B, hA, wA, 2)`` ``(x, y)`` grid coordinates in B, for each cell of A.
    """
    return _expected_xy(kernel_matching_probabilities(correlation, beta, sigma, normalize, eps))
