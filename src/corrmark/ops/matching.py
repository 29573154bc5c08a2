"""Correlation post-processing: soft mutual nearest neighbour filtering, hard mutual matches, correlation upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corrmark.ops._checks import check_ndim, check_positive_int
from corrmark.ops.correlation import nearest_neighbours


def mutual_nn_filter(correlation: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft mutual nearest neighbour filtering (NCNet, used by SCorrSAN).

    ``out[a, b] = c[a, b] * (c[a, b] / (max_a' c[a', b] + eps)) * (c[a, b] / (max_b' c[a, b'] + eps))``: a score keeps
    its value only when it is the best both among B for its cell of A and among A for its cell of B.
    Meant for non-negative scores (e.g. after a ReLU); negative maxima make the ratios meaningless.

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.

    Returns:
        Same shape.
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    max_over_a = correlation.amax(dim=(1, 2), keepdim=True)
    max_over_b = correlation.amax(dim=(3, 4), keepdim=True)
    return correlation * (correlation / (max_over_a + eps)) * (correlation / (max_over_b + eps))


def mutual_nearest_neighbours(
    features_a: torch.Tensor, features_b: torch.Tensor, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard mutual nearest neighbours (cosine similarity), batched, memory-bounded.

    Args:
        features_a: ``(B, C, hA, wA)``.
        features_b: ``(B, C, hB, wB)``.
        chunk_size: see :func:`corrmark.ops.correlation.nearest_neighbours`.

    Returns:
        ``indices_b``: ``(B, hA*wA)`` long, flat row-major index in B of the nearest neighbour of each cell of A;
        ``is_mutual``: ``(B, hA*wA)`` bool, True where that neighbour's own nearest neighbour in A is the cell itself;
        ``scores``: ``(B, hA*wA)`` cosine similarity of the pair.
        For one image, the mutual pairs are ``index_a = is_mutual[0].nonzero()[:, 0]``,
        ``index_b = indices_b[0, index_a]``.
    """
    indices_b, scores = nearest_neighbours(features_a, features_b, chunk_size)
    indices_a_of_b, _ = nearest_neighbours(features_b, features_a, chunk_size)
    round_trip = torch.gather(indices_a_of_b, 1, indices_b)
    cells_a = torch.arange(indices_b.shape[1], device=indices_b.device).expand_as(indices_b)
    return indices_b, round_trip == cells_a, scores


def _as_pair(scale: int | tuple[int, int]) -> tuple[int, int]:
    """``scale`` as ``(scale_y, scale_x)`` positive ints."""
    pair = (scale, scale) if isinstance(scale, int) else tuple(scale)
    if len(pair) != 2:
        raise ValueError(f"scale must be an int or a (scale_y, scale_x) pair, got {scale!r}")
    for value in pair:
        check_positive_int(value, "scale")
    return pair  # type: ignore[return-value]


def _upsample_last_two(volume: torch.Tensor, scale: tuple[int, int], mode: str, chunk_size: int) -> torch.Tensor:
    """Upsample the last two dims of ``(..., h, w)`` by integer factors, ``chunk_size`` maps per interpolate call."""
    *lead, height, width = volume.shape
    maps = volume.reshape(-1, 1, height, width)
    size = (height * scale[0], width * scale[1])
    # align_corners=False matches the cell-centre convention: fine cell centres sit inside the coarse cells
    options = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
    chunks = [F.interpolate(chunk, size=size, mode=mode, **options) for chunk in maps.split(chunk_size, dim=0)]
    return torch.cat(chunks, dim=0).reshape(*lead, *size)


def upsample_correlation(
    correlation: torch.Tensor,
    scale: int | tuple[int, int],
    mode: str = "bilinear",
    which: str = "both",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Upsample a 4D correlation by separable interpolation over each pair of spatial dims (SCorrSAN uses x4).

    Interpolation uses ``align_corners=False``, consistent with the cell-centre convention: a map at stride ``s``
    upsampled by ``f`` is the map at stride ``s / f``.

    Args:
        correlation: ``(B, hA, wA, hB, wB)``.
        scale: integer factor, or ``(scale_y, scale_x)``, applied to every upsampled pair.
        mode: ``torch.nn.functional.interpolate`` mode for 2D maps (``"bilinear"``, ``"bicubic"``, ``"nearest"``).
        which: ``"both"`` (A and B dims), ``"a"`` or ``"b"`` only.
        chunk_size: 2D maps interpolated per call; bounds temporaries (the output itself is always materialised).

    Returns:
        ``(B, hA*sy, wA*sx, hB*sy, wB*sx)`` for ``which="both"`` (only the named pair grows otherwise).
    """
    check_ndim(correlation, 5, "correlation", "(B, hA, wA, hB, wB)")
    check_positive_int(chunk_size, "chunk_size")
    if which not in ("both", "a", "b"):
        raise ValueError(f"which must be 'both', 'a' or 'b', got {which!r}")
    scale_pair = _as_pair(scale)
    result = correlation
    if which in ("both", "b"):
        result = _upsample_last_two(result, scale_pair, mode, chunk_size)
    if which in ("both", "a"):
        moved = result.permute(0, 3, 4, 1, 2)  # A dims last
        result = _upsample_last_two(moved, scale_pair, mode, chunk_size).permute(0, 3, 4, 1, 2)
    return result.contiguous()
