"""Feature correlation: global 4D correlation, windowed (local) correlation and memory-bounded nearest neighbours.

All functions take feature maps ``(B, C, h, w)`` and are device/dtype agnostic. Grid coordinates returned here are
``(x, y)`` = (column, row) indices of feature cells; convert them to pixels with ``corrmark.ops.warp.grid_to_pixel``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from corrmark.ops._checks import check_ndim, check_positive_int, check_same_batch_and_channels

Offset = tuple[int, int]


def l2_normalize(features: torch.Tensor, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Divide ``features`` by their L2 norm along ``dim``; any shape.

    Norms below ``eps`` are clamped to ``eps``, so zero vectors stay zero (no NaN in values or gradients).
    """
    return features / _clamped_norm(features.pow(2).sum(dim=dim, keepdim=True), eps)


def _clamped_norm(squared_norm: torch.Tensor, eps: float) -> torch.Tensor:
    """``sqrt(max(squared_norm, eps^2))`` with finite values and gradients at 0, in any floating dtype."""
    # clamp before the sqrt: sqrt'(0) = inf would give NaN gradients; in float16 eps^2 underflows, so keep >= tiny
    floor = max(eps * eps, torch.finfo(squared_norm.dtype).tiny)
    return squared_norm.clamp_min(floor).sqrt()


def correlation_4d(features_a: torch.Tensor, features_b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """All-pairs correlation between two feature maps.

    Args:
        features_a: ``(B, C, hA, wA)``.
        features_b: ``(B, C, hB, wB)``.
        normalize: L2-normalise the features first, so the result is the cosine similarity in ``[-1, 1]``.

    Returns:
        ``(B, hA, wA, hB, wB)``: entry ``[b, i, j, k, l]`` = <A[b, :, i, j], B[b, :, k, l]>.
    """
    check_ndim(features_a, 4, "features_a", "(B, C, hA, wA)")
    check_ndim(features_b, 4, "features_b", "(B, C, hB, wB)")
    check_same_batch_and_channels(features_a, features_b, "features_a", "features_b")
    if normalize:
        features_a, features_b = l2_normalize(features_a), l2_normalize(features_b)
    batch, channels, h_a, w_a = features_a.shape
    h_b, w_b = features_b.shape[-2:]
    flat_a = features_a.reshape(batch, channels, h_a * w_a)
    flat_b = features_b.reshape(batch, channels, h_b * w_b)
    correlation = torch.bmm(flat_a.transpose(1, 2), flat_b)
    return correlation.reshape(batch, h_a, w_a, h_b, w_b)


def window_offsets(radius: int) -> list[Offset]:
    """Displacements ``(dy, dx)`` of a ``(2r+1) x (2r+1)`` window in row-major order, from ``(-r, -r)`` to ``(r, r)``.

    Channel ``k`` of :func:`local_correlation` holds displacement ``window_offsets(r)[k]``, i.e.
    ``k = (dy + r) * (2r + 1) + (dx + r)``.
    """
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    steps = range(-radius, radius + 1)
    return [(dy, dx) for dy in steps for dx in steps]


def offset_correlation(
    features_a: torch.Tensor, features_b: torch.Tensor, offsets: Sequence[Offset], normalize: bool = True
) -> torch.Tensor:
    """Correlation of each cell of A with the cell of B at a fixed set of displacements.

    Args:
        features_a, features_b: ``(B, C, H, W)`` each (same grid).
        offsets: ``D`` displacements ``(dy, dx)`` in cells (``dy`` along rows, ``dx`` along columns).
        normalize: L2-normalise the features first (cosine similarity).

    Returns:
        ``(B, D, H, W)``: channel ``d`` at ``(i, j)`` = <A[:, i, j], B[:, i + dy_d, j + dx_d]>, 0 where that cell of B
        lies outside the map (zero padding).
    """
    check_ndim(features_a, 4, "features_a", "(B, C, H, W)")
    check_ndim(features_b, 4, "features_b", "(B, C, H, W)")
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"features_a {tuple(features_a.shape)} and features_b {tuple(features_b.shape)} must have the same shape"
        )
    if len(offsets) == 0:
        raise ValueError("offsets must not be empty")
    if normalize:
        features_a, features_b = l2_normalize(features_a), l2_normalize(features_b)
    height, width = features_a.shape[-2:]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded_b = F.pad(features_b, (pad, pad, pad, pad))
    # one shifted product per displacement: memory stays O(B*C*H*W) instead of unfold's O(D*B*C*H*W)
    channels = [
        (features_a * padded_b[:, :, pad + dy : pad + dy + height, pad + dx : pad + dx + width]).sum(dim=1)
        for dy, dx in offsets
    ]
    return torch.stack(channels, dim=1)


def local_correlation(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    radius: int,
    normalize_window: bool = True,
    eps: float = 1e-6,
    normalize_features: bool = True,
) -> torch.Tensor:
    """Windowed correlation of JLAD eq. (3).

    ``C_i(j) = <F^A_i, F^B_j> / sqrt(sum_l <F^A_i, F^B_l>^2)`` with ``j, l`` in the ``(2r+1) x (2r+1)`` window of B
    centred on ``i``; features are L2-normalised first, cells outside B count as zero (zero padding).

    Computed as one all-pairs product and a gather of every cell's window: much faster than one shifted product per
    displacement (:func:`offset_correlation`), forward and backward, on the small grids it serves (up to a few hundred
    cells), at the price of ``B * (H*W)**2`` scores of memory.

    Args:
        features_a, features_b: ``(B, C, H, W)`` each.
        radius: window radius ``r`` in cells (may exceed the map size).
        normalize_window: apply the denominator of eq. (3); otherwise return plain cosine similarities.
        eps: lower bound of the window norm (an all-zero window gives 0, not NaN).
        normalize_features: L2-normalise the features first; ``False`` gives raw dot products (then, with
            ``normalize_window=False``, equal to ``offset_correlation(a, b, window_offsets(r), normalize=False)``).

    Returns:
        ``(B, (2r+1)**2, H, W)``; channel order is row-major displacement ``(dy, dx)`` from ``(-r, -r)``, see
        :func:`window_offsets` (the centre, zero displacement, is channel ``(2r+1)**2 // 2``).
    """
    check_ndim(features_a, 4, "features_a", "(B, C, H, W)")
    check_ndim(features_b, 4, "features_b", "(B, C, H, W)")
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"features_a {tuple(features_a.shape)} and features_b {tuple(features_b.shape)} must have the same shape"
        )
    window_index = _window_index(*features_a.shape[-2:], radius, features_a.device)  # validates radius
    if normalize_features:
        features_a, features_b = l2_normalize(features_a), l2_normalize(features_b)
    batch, _, height, width = features_a.shape
    all_pairs = torch.bmm(features_a.flatten(2).transpose(1, 2), features_b.flatten(2))  # (B, HW_a, HW_b)
    # an extra zero column: window cells outside B gather it (zero padding)
    all_pairs = torch.cat([all_pairs, all_pairs.new_zeros(batch, height * width, 1)], dim=2)
    gathered = torch.gather(all_pairs, 2, window_index.t()[None].expand(batch, -1, -1))  # (B, HW_a, D)
    correlation = gathered.transpose(1, 2).reshape(batch, -1, height, width)
    if not normalize_window:
        return correlation
    return correlation / _clamped_norm(correlation.pow(2).sum(dim=1, keepdim=True), eps)


def _window_index(height: int, width: int, radius: int, device: torch.device) -> torch.Tensor:
    """``(D, H*W)`` row-major flat index of the cell ``i + window_offsets(radius)[d]`` for every cell ``i``, or
    ``H*W`` (one past the last cell) where that cell lies outside the ``(H, W)`` map."""
    offsets = torch.tensor(window_offsets(radius), device=device)  # (D, 2) dy, dx
    rows = torch.arange(height, device=device).repeat_interleave(width)[None] + offsets[:, :1]
    columns = torch.arange(width, device=device).repeat(height)[None] + offsets[:, 1:]
    inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
    return torch.where(inside, rows * width + columns, torch.full_like(rows, height * width))


def flat_index_to_xy(index: torch.Tensor, width: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Row-major flat indices into a ``width``-wide grid -> ``(x, y)`` coordinates, shape ``index.shape + (2,)``."""
    dtype = dtype or torch.get_default_dtype()
    x = torch.remainder(index, width)
    y = torch.div(index, width, rounding_mode="floor")
    return torch.stack([x, y], dim=-1).to(dtype)


def nearest_neighbours(
    features_a: torch.Tensor, features_b: torch.Tensor, chunk_size: int = 4096, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each cell of A, its most similar cell of B (cosine similarity), without building the full correlation.

    Args:
        features_a: ``(B, C, hA, wA)``.
        features_b: ``(B, C, hB, wB)``.
        chunk_size: rows of A processed at once; peak extra memory is ``B * chunk_size * hB * wB`` scores.
        normalize: L2-normalise the features first.

    Returns:
        ``indices``: ``(B, hA*wA)`` long, row-major flat index into ``hB*wB`` (use :func:`flat_index_to_xy`),
        ``scores``: ``(B, hA*wA)`` best similarity. Ties resolve to the lowest index of B.
    """
    check_ndim(features_a, 4, "features_a", "(B, C, hA, wA)")
    check_ndim(features_b, 4, "features_b", "(B, C, hB, wB)")
    check_same_batch_and_channels(features_a, features_b, "features_a", "features_b")
    check_positive_int(chunk_size, "chunk_size")
    if normalize:
        features_a, features_b = l2_normalize(features_a), l2_normalize(features_b)
    rows_a = features_a.flatten(2).transpose(1, 2)  # (B, NA, C)
    columns_b = features_b.flatten(2)  # (B, C, NB)
    indices, scores = [], []
    for start in range(0, rows_a.shape[1], chunk_size):
        chunk_scores, chunk_indices = torch.bmm(rows_a[:, start : start + chunk_size], columns_b).max(dim=2)
        scores.append(chunk_scores)
        indices.append(chunk_indices)
    return torch.cat(indices, dim=1), torch.cat(scores, dim=1)


def correlation_argmax(correlation: torch.Tensor, chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard argmax over B of a 4D correlation, processing ``chunk_size`` rows of A at a time.

    Args:
        correlation: ``(B, hA, wA, hB, wB)``; may be non-contiguous (only one chunk is copied at a time).

    Returns:
        ``points``: ``(B, hA, wA, 2)`` ``(x, y)`` grid coordinates in B (same floating dtype as ``correlation``),
        ``scores``: ``(B, hA, wA)`` maximum. Ties resolve to the lowest row-major index.
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    check_positive_int(chunk_size, "chunk_size")
    w_b = correlation.shape[-1]
    points, scores = [], []
    for chunk in correlation.split(chunk_size, dim=1):
        chunk_scores, chunk_indices = chunk.flatten(3).max(dim=3)
        scores.append(chunk_scores)
        points.append(flat_index_to_xy(chunk_indices, w_b, correlation.dtype))
    return torch.cat(points, dim=1), torch.cat(scores, dim=1)
