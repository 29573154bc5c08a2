"""Pure tensor operations (no state; CPU/GPU; any floating dtype) shared by every model.

Coordinates are ``(x, y)`` with the cell-centre convention of docs/CONVENTIONS.md; 4D correlations are
``(B, hA, wA, hB, wB)``; mappings are ``(B, h, w, 2)``.
"""

from corrmark.ops.correlation import (
    correlation_4d,
    correlation_argmax,
    flat_index_to_xy,
    l2_normalize,
    local_correlation,
    nearest_neighbours,
    offset_correlation,
    window_offsets,
)
from corrmark.ops.gaussians import render_gaussians
from corrmark.ops.matching import mutual_nearest_neighbours, mutual_nn_filter, upsample_correlation
from corrmark.ops.self_similarity import (
    dense_self_similarity,
    sparse_self_similarity,
    sparse_self_similarity_offsets,
)
from corrmark.ops.soft_argmax import (
    gaussian_kernel_at,
    kernel_matching_probabilities,
    kernel_soft_argmax,
    local_correlation_soft_argmax,
    soft_argmax,
    soft_argmax_4d,
    soft_argmax_around_peak,
    spatial_expectation,
    spatial_softmax,
)
from corrmark.ops.warp import (
    compose_mappings,
    cycle_error,
    grid_stride,
    grid_to_pixel,
    inside_map,
    normalized_to_pixel,
    pixel_grid,
    pixel_to_grid,
    pixel_to_normalized,
    resize_mapping,
    sample_field,
    warp_backward,
)

__all__ = [
    "compose_mappings",
    "correlation_4d",
    "correlation_argmax",
    "cycle_error",
    "dense_self_similarity",
    "flat_index_to_xy",
    "gaussian_kernel_at",
    "grid_stride",
    "grid_to_pixel",
    "inside_map",
    "kernel_matching_probabilities",
    "kernel_soft_argmax",
    "l2_normalize",
    "local_correlation",
    "local_correlation_soft_argmax",
    "mutual_nearest_neighbours",
    "mutual_nn_filter",
    "nearest_neighbours",
    "normalized_to_pixel",
    "offset_correlation",
    "pixel_grid",
    "pixel_to_grid",
    "pixel_to_normalized",
    "render_gaussians",
    "resize_mapping",
    "sample_field",
    "soft_argmax",
    "soft_argmax_4d",
    "soft_argmax_around_peak",
    "sparse_self_similarity",
    "sparse_self_similarity_offsets",
    "spatial_expectation",
    "spatial_softmax",
    "upsample_correlation",
    "warp_backward",
]
