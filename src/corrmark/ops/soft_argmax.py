"""Differentiable argmax operators: spatial softmax and expectation, plain, windowed and kernel soft argmax.

Returned points are ``(x, y)`` grid coordinates (column, row) of the map the softmax runs over, as floats (cell ``(i,
j)`` has coordinates ``(j, i)``); convert them to pixels with ``corrmark.ops.warp.grid_to_pixel``.
"""

from __future__ import annotations

import torch

from corrmark.ops._checks import check_min_ndim, check_ndim
from corrmark.ops.correlation import correlation_argmax, l2_normalize, window_offsets

COORDINATES = ("cells", "normalized")


def spatial_softmax(scores: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Softmax of ``beta * scores`` over the last two (spatial) dimensions.

    Args:
        scores: ``(..., H, W)``, any number of leading dimensions.
        beta: inverse temperature (larger = closer to a one-hot at the maximum).

    Returns:
        ``(..., H, W)`` probabilities, each ``(H, W)`` map summing to 1.
    """
    check_min_ndim(scores, 2, "scores", "(..., H, W)")
    logits = scores if beta == 1 else beta * scores  # skipping the product changes no bit: 1 * x == x
    return torch.softmax(logits.flatten(-2), dim=-1).reshape(scores.shape)


def spatial_expectation(
    probabilities: torch.Tensor, coordinates: str = "cells", normalize_mass: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """Expected ``(x, y)`` position under each ``(H, W)`` map of ``probabilities``.

    Args:
        probabilities: ``(..., H, W)`` non-negative weights, e.g. from :func:`spatial_softmax`.
        coordinates: ``"cells"``: cell ``(i, j)`` sits at ``(x, y) = (j, i)``, so ``x`` in ``[0, W-1]``;
            ``"normalized"``: at the cell centre in the ``[-1, 1]`` coordinates of ``grid_sample``
            (``align_corners=False``), ``x = (2j + 1) / W - 1``.
        normalize_mass: divide by each map's total mass (clamped below at ``eps``), for maps that need not sum to one.
        eps: lower bound of the mass when ``normalize_mass`` (an all-zero map gives 0, not NaN).

    Returns:
        ``(..., 2)`` expected ``(x, y)``.
    """
    check_min_ndim(probabilities, 2, "probabilities", "(..., H, W)")
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    # the mass before the marginals: this order of the autograd graph keeps JLAD's gradients bit-identical
    mass = probabilities.sum(dim=(-2, -1)).clamp_min(eps) if normalize_mass else None
    height, width = probabilities.shape[-2:]
    xs = _cell_positions(width, coordinates, probabilities)
    ys = _cell_positions(height, coordinates, probabilities)
    # marginals first: O(H + W) multiplies per map instead of building an (H, W, 2) coordinate grid
    expected_x = (probabilities.sum(dim=-2) * xs).sum(dim=-1)
    expected_y = (probabilities.sum(dim=-1) * ys).sum(dim=-1)
    if mass is not None:
        expected_x, expected_y = expected_x / mass, expected_y / mass
    return torch.stack([expected_x, expected_y], dim=-1)


def _cell_positions(size: int, coordinates: str, like: torch.Tensor) -> torch.Tensor:
    """``(size,)`` positions of the cells along one axis, in ``coordinates`` (see :func:`spatial_expectation`)."""
    indices = torch.arange(size, device=like.device, dtype=like.dtype)
    if coordinates == "normalized":
        return (2 * indices + 1) / size - 1
    return indices


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
    probabilities = spatial_softmax(scores, beta)
    return spatial_expectation(probabilities), probabilities


def soft_argmax_4d(correlation: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Soft argmax over B of a 4D correlation (no kernel, no normalisation).

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.

    Returns:
        ``(B, hA, wA, 2)`` expected ``(x, y)`` grid coordinates in B for every cell of A.
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    return spatial_expectation(spatial_softmax(correlation, beta))


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
    return spatial_softmax(kernel * scores, beta)


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
    return spatial_expectation(kernel_matching_probabilities(correlation, beta, sigma, normalize, eps))


def soft_argmax_around_peak(
    scores: torch.Tensor, beta: float, sigma: float, normalize: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Soft argmax of each map restricted to a Gaussian window around its hard argmax: ``p ~ k * exp(beta * c)``.

    ``k`` is a Gaussian of std ``sigma`` cells centred on the map's hard argmax. Unlike :func:`kernel_soft_argmax`
    (``softmax(beta * k * c)``, where every cell far from the peak keeps the weight ``exp(0) = 1`` and thousands of
    them on a large grid pull weak matches towards the centre), the window multiplies the probabilities (adds
    ``log k`` to the logits), so the expectation stays local. The argmax carries no gradient.

    Args:
        scores: ``(B, N, H, W)``: ``N`` score maps, e.g. rows of a correlation volume.
        beta: inverse temperature of the softmax.
        sigma: std of the window in cells.
        normalize: L2-normalise each map over ``(H, W)`` first.
        eps: lower bound of that norm.

    Returns:
        ``(B, N, 2)`` expected ``(x, y)`` grid coordinates.
    """
    check_ndim(scores, 4, "scores", "(B, N, H, W)")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    logits = scores
    if normalize:
        logits = l2_normalize(scores.flatten(2), dim=2, eps=eps).reshape(scores.shape)
    with torch.no_grad():
        peaks, _ = correlation_argmax(scores.detach().unsqueeze(2))  # (B, N, 1, 2)
        log_window = _log_gaussian_window(peaks[:, :, 0], scores.shape[-2:], sigma)
    return spatial_expectation(spatial_softmax(beta * logits + log_window))


def _log_gaussian_window(centres: torch.Tensor, size_hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Log of an unnormalised Gaussian, ``-|q - centre|^2 / (2 sigma^2)``, on an ``(H, W)`` grid.

    ``centres`` ``(B, N, 2)`` ``(x, y)`` -> ``(B, N, H, W)``.
    """
    height, width = size_hw
    xs = torch.arange(width, dtype=centres.dtype, device=centres.device)
    ys = torch.arange(height, dtype=centres.dtype, device=centres.device)
    negative_squared = -((xs - centres[..., 0:1]) ** 2)[..., None, :] - ((ys - centres[..., 1:2]) ** 2)[..., :, None]
    return negative_squared / (2.0 * sigma**2)


def local_correlation_soft_argmax(correlation: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """Expected displacement under a softmax over the window channels of a local correlation.

    Args:
        correlation: ``(B, (2r+1)**2, H, W)`` from :func:`~corrmark.ops.correlation.local_correlation` (channel ``d``
            = displacement ``window_offsets(radius)[d]``).
        radius: the window radius ``r`` of ``correlation``.
        beta: inverse temperature of ``softmax_d(beta * C_d)``.

    Returns:
        ``(B, 2, H, W)`` expected displacement ``(dx, dy)`` in cells, each in ``[-r, r]`` (add the cell's own
        ``(x, y)`` for the matched position).
    """
    check_ndim(correlation, 4, "correlation", "(B, (2r+1)**2, H, W)")
    offsets = torch.tensor(window_offsets(radius), dtype=correlation.dtype, device=correlation.device)  # (D, 2) dy, dx
    if correlation.shape[1] != len(offsets):
        raise ValueError(
            f"correlation has {correlation.shape[1]} channels, a radius-{radius} window has {len(offsets)}"
        )
    weights = torch.softmax(beta * correlation, dim=1)  # (B, D, H, W)
    dy = torch.einsum("bdhw,d->bhw", weights, offsets[:, 0])
    dx = torch.einsum("bdhw,d->bhw", weights, offsets[:, 1])
    return torch.stack([dx, dy], dim=1)
