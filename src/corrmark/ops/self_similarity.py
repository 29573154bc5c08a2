"""Self-similarity descriptors: JLAD's dense windowed self-similarity and SCorrSAN's sparse (criss-cross + diagonal)
spatial context."""

from __future__ import annotations

import torch

from corrmark.ops._checks import check_positive_int
from corrmark.ops.correlation import Offset, local_correlation, offset_correlation

# unit steps (dy, dx) of the four lines through the centre, in channel order
_SPARSE_DIRECTIONS: tuple[Offset, ...] = ((0, 1), (1, 0), (1, 1), (1, -1))


def dense_self_similarity(features: torch.Tensor, radius: int, normalize_window: bool = True) -> torch.Tensor:
    """JLAD ``C^ss``: :func:`~corrmark.ops.correlation.local_correlation` of a map with itself.

    Args:
        features: ``(B, C, H, W)``.

    Returns:
        ``(B, (2r+1)**2, H, W)``, row-major displacement ``(dy, dx)`` from ``(-r, -r)``.
    """
    return local_correlation(features, features, radius, normalize_window=normalize_window)


def sparse_self_similarity_offsets(kernel_size: int = 5, dilation: int = 1) -> list[Offset]:
    """Displacements ``(dy, dx)`` of :func:`sparse_self_similarity`'s channels, ``4 * (kernel_size - 1)`` of them.

    Order: four lines through the centre -- horizontal ``(0, t)``, vertical ``(t, 0)``, main diagonal ``(t, t)``,
    anti-diagonal ``(t, -t)`` -- each with ``t = -r, ..., -1, 1, ..., r`` (``r = (kernel_size - 1) // 2``), all
    multiplied by ``dilation``. The centre itself is excluded.
    """
    check_positive_int(kernel_size, "kernel_size")
    check_positive_int(dilation, "dilation")
    if kernel_size % 2 == 0 or kernel_size < 3:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    radius = (kernel_size - 1) // 2
    steps = [t for t in range(-radius, radius + 1) if t != 0]
    return [(t * dy * dilation, t * dx * dilation) for dy, dx in _SPARSE_DIRECTIONS for t in steps]


def sparse_self_similarity(features: torch.Tensor, kernel_size: int = 5, dilation: int = 1) -> torch.Tensor:
    """SCorrSAN efficient spatial context: cosine similarity of each cell with its criss-cross and diagonal neighbours.

    Args:
        features: ``(B, C, H, W)``.
        kernel_size: odd window size ``k``; ``D = 4 * (k - 1)`` neighbours.
        dilation: spacing between sampled neighbours, in cells.

    Returns:
        ``(B, D, H, W)`` in the order of :func:`sparse_self_similarity_offsets`; neighbours outside the map give 0.
    """
    offsets = sparse_self_similarity_offsets(kernel_size, dilation)
    return offset_correlation(features, features, offsets, normalize=True)
