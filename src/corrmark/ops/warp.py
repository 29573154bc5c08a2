"""Coordinate conversions and warping with dense mappings (see docs/CONVENTIONS.md).

Units used below:

- *pixel coordinates* ``(x, y)``: the centre of the top-left pixel (or cell) of a map is ``(0, 0)``; a map of size
  ``(H, W)`` spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. "Pixel coordinates of a map" and "grid coordinates" are the
  same thing for a feature grid, so every function here works on images and feature grids alike.
- *stride*: cell ``(i, j)`` of a grid of stride ``s`` is centred at image pixel
  ``((j + 0.5) s - 0.5, (i + 0.5) s - 0.5)``.
- *normalized*: ``grid_sample`` coordinates in ``[-1, 1]`` with ``align_corners=False``.
- a *mapping* ``(B, h, w, 2)`` holds, for each cell of the grid it is defined on, ``(x, y)`` coordinates in another map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from corrmark.ops._checks import check_last_dim, check_ndim

Stride = float | Sequence[float] | torch.Tensor


def pixel_grid(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``(h, w, 2)`` tensor whose entry ``[i, j]`` is ``(x, y) = (j, i)``: the identity mapping of an ``h x w`` map."""
    dtype = dtype or torch.get_default_dtype()
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def _stride_tensor(stride: Stride, like: torch.Tensor) -> torch.Tensor:
    """``stride`` (float, ``(sx, sy)`` or a tensor broadcastable to ``like``) as a tensor on ``like``'s device/dtype."""
    stride_tensor = torch.as_tensor(stride, device=like.device, dtype=like.dtype)
    if stride_tensor.dim() > 0 and stride_tensor.shape[-1] not in (1, 2):
        raise ValueError(f"stride must be a float or an (sx, sy) pair, got shape {tuple(stride_tensor.shape)}")
    if bool((stride_tensor <= 0).any()):
        raise ValueError(f"stride must be positive, got {stride!r}")
    return stride_tensor


def grid_to_pixel(coords: torch.Tensor, stride: Stride) -> torch.Tensor:
    """Grid ``(x, y)`` coordinates ``(..., 2)`` to image pixels: ``p = (g + 0.5) * s - 0.5``.

    ``stride`` is a float, ``(sx, sy)`` (e.g. :func:`grid_stride` when the image size is not a multiple of the grid),
    or a tensor broadcastable to ``coords`` (e.g. ``(B, 1, 2)`` per-image strides).
    """
    check_last_dim(coords, 2, "coords")
    return _scale_cell_centres(coords, _stride_tensor(stride, coords))


def _scale_cell_centres(coords, scale):  # torch tensors or numpy arrays alike
    """``(coords + 0.5) * scale - 0.5``: where cell centres land when cells grow by ``scale``.

    The one place of this formula: grid -> pixel values, and output index -> input position of a resize.
    """
    return (coords + 0.5) * scale - 0.5


def pixel_to_grid(coords: torch.Tensor, stride: Stride) -> torch.Tensor:
    """Image pixel ``(x, y)`` coordinates ``(..., 2)`` to grid coordinates: ``g = (p + 0.5) / s - 0.5``."""
    check_last_dim(coords, 2, "coords")
    return (coords + 0.5) / _stride_tensor(stride, coords) - 0.5


def grid_stride(image_size_hw: tuple[int, int], grid_size_hw: tuple[int, int]) -> tuple[float, float]:
    """Effective ``(sx, sy)`` stride of an ``(h, w)`` grid covering an ``(H, W)`` image: ``(W / w, H / h)``.

    With it the grid's cells tile the image exactly, which is also what ``interpolate(align_corners=False)`` assumes.
    """
    (image_h, image_w), (grid_h, grid_w) = image_size_hw, grid_size_hw
    return image_w / grid_w, image_h / grid_h


def pixel_to_normalized(coords: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Pixel ``(x, y)`` ``(..., 2)`` of an ``(H, W)`` map to ``grid_sample`` coordinates (``align_corners=False``).

    ``x_n = (2x + 1) / W - 1``: the map's edges ``-0.5`` and ``W - 0.5`` go to ``-1`` and ``1``.
    """
    check_last_dim(coords, 2, "coords")
    height, width = size_hw
    size = torch.tensor([width, height], device=coords.device, dtype=coords.dtype)
    return (2.0 * coords + 1.0) / size - 1.0


def normalized_to_pixel(coords: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`: ``x = ((x_n + 1) W - 1) / 2``."""
    check_last_dim(coords, 2, "coords")
    height, width = size_hw
    size = torch.tensor([width, height], device=coords.device, dtype=coords.dtype)
    return ((coords + 1.0) * size - 1.0) / 2.0


def inside_map(points: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bool ``(...)``: ``(x, y)`` points ``(..., 2)`` are finite and within ``[-0.5, W-0.5] x [-0.5, H-0.5]``."""
    check_last_dim(points, 2, "points")
    height, width = size_hw
    x, y = points[..., 0], points[..., 1]
    # NaN compares False, so NaN points come out invalid
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def _check_mapping(mapping: torch.Tensor, name: str) -> None:
    check_ndim(mapping, 4, name, "(B, h, w, 2)")
    check_last_dim(mapping, 2, name)


def warp_backward(
    source: torch.Tensor, mapping: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warp: ``warped[:, :, i, j] = source[:, :, mapping[:, i, j, 1], mapping[:, i, j, 0]]`` (interpolated).

    Args:
        source: ``(B, C, Hs, Ws)`` image, feature map or mask. Non-float sources (bool/int masks) are sampled as
            floats and, with ``mode="nearest"``, cast back to their dtype.
        mapping: ``(B, Ht, Wt, 2)`` ``(x, y)`` pixel coordinates in ``source`` for each target pixel (a
            target-to-source mapping). Non-finite entries read as padding and are invalid.
        mode: ``grid_sample`` mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``grid_sample`` padding: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``warped``: ``(B, C, Ht, Wt)``;
        ``valid``: ``(B, Ht, Wt)`` bool, mapping inside the source extent ``[-0.5, Ws-0.5] x [-0.5, Hs-0.5]`` (with zero
        padding, values in the outer half pixel are blended with zeros).
    """
    check_ndim(source, 4, "source", "(B, C, Hs, Ws)")
    _check_mapping(mapping, "mapping")
    if source.shape[0] != mapping.shape[0]:
        raise ValueError(f"source {tuple(source.shape)} and mapping {tuple(mapping.shape)} differ in batch size")
    source_size = source.shape[-2:]
    valid = inside_map(mapping, source_size)
    original_dtype = source.dtype
    if not source.is_floating_point():
        source = source.to(mapping.dtype if mapping.is_floating_point() else torch.get_default_dtype())
    grid = pixel_to_normalized(mapping.to(source.dtype), source_size)
    # keep NaN/inf out of grid_sample (undefined there); a point far outside reads padding
    grid = torch.where(torch.isfinite(grid), grid, torch.full_like(grid, -3.0))
    warped = F.grid_sample(source, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    if mode == "nearest" and original_dtype != warped.dtype and not original_dtype.is_floating_point:
        warped = warped.to(original_dtype)
    return warped, valid


def sample_field(
    field: torch.Tensor, points: torch.Tensor, channels_last: bool | None = None, padding_mode: str = "border"
) -> torch.Tensor:
    """Bilinear read of a dense field at sub-pixel points (e.g. a mapping at keypoints).

    Args:
        field: ``(B, h, w, 2)`` mapping (channels last) or ``(B, C, h, w)`` map.
        points: ``(B, N, 2)`` ``(x, y)`` pixel coordinates of the field's own grid.
        channels_last: layout of ``field``; ``None`` infers channels-last when the last dim has size 2 (pass it
            explicitly for a ``(B, C, h, 2)`` map).
        padding_mode: ``"border"`` (default) repeats edge values for points in the outer half pixel or outside.

    Returns:
        ``(B, N, C)`` (``(B, N, 2)`` for a mapping).
    """
    check_ndim(field, 4, "field", "(B, h, w, 2) or (B, C, h, w)")
    check_ndim(points, 3, "points", "(B, N, 2)")
    check_last_dim(points, 2, "points")
    if channels_last is None:
        channels_last = field.shape[-1] == 2
    channels_first = field.permute(0, 3, 1, 2) if channels_last else field
    values, _ = warp_backward(channels_first, points.unsqueeze(1), mode="bilinear", padding_mode=padding_mode)
    return values.squeeze(2).transpose(1, 2)  # (B, C, 1, N) -> (B, N, C)


def compose_mappings(mapping_b_to_a: torch.Tensor, mapping_c_to_b: torch.Tensor) -> torch.Tensor:
    """Chain two mappings: ``result[c] = mapping_b_to_a(mapping_c_to_b[c])`` (bilinear read, border padding).

    Args:
        mapping_b_to_a: ``(B, hB, wB, 2)``, defined on B, values are ``(x, y)`` coordinates in A.
        mapping_c_to_b: ``(B, hC, wC, 2)``, defined on C, values are ``(x, y)`` pixel coordinates of B's
            ``hB x wB`` grid.

    Returns:
        ``(B, hC, wC, 2)`` mapping from C to A. Where ``mapping_c_to_b`` leaves B the edge value of
        ``mapping_b_to_a`` is used; check :func:`inside_map` on ``mapping_c_to_b`` if that matters.
    """
    _check_mapping(mapping_b_to_a, "mapping_b_to_a")
    _check_mapping(mapping_c_to_b, "mapping_c_to_b")
    values = mapping_b_to_a.permute(0, 3, 1, 2)
    composed, _ = warp_backward(values, mapping_c_to_b, mode="bilinear", padding_mode="border")
    return composed.permute(0, 2, 3, 1)


def cycle_error(mapping_t_to_s: torch.Tensor, mapping_s_to_t: torch.Tensor) -> torch.Tensor:
    """Distance, in target pixels, between each target pixel and where it lands after going t -> s -> t.

    Args:
        mapping_t_to_s: ``(B, Ht, Wt, 2)``, values in pixel coordinates of the grid ``mapping_s_to_t`` lives on.
        mapping_s_to_t: ``(B, Hs, Ws, 2)``, values in pixel coordinates of the ``Ht x Wt`` target grid.

    Returns:
        ``(B, Ht, Wt)`` Euclidean error (0 for consistent mappings).
    """
    round_trip = compose_mappings(mapping_s_to_t, mapping_t_to_s)
    height, width = mapping_t_to_s.shape[1:3]
    identity = pixel_grid(height, width, device=round_trip.device, dtype=round_trip.dtype)
    return torch.linalg.vector_norm(round_trip - identity, dim=-1)


def _resize_axis(
    size_in: int,
    size_out: int,
    output_indices: torch.Tensor | np.ndarray | None = None,
    extrapolate: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the output entries of a linear resize from ``size_in`` to ``size_out`` entries read the input.

    Entry ``k`` reads position ``(k + 0.5) * size_in / size_out - 0.5`` (``align_corners=False``), i.e.
    ``in[lower] + (in[upper] - in[lower]) * weight``. Past the outer entries the line through the two outer samples is
    followed (``extrapolate``: ``weight`` outside ``[0, 1]``) or the edge value is kept. ``output_indices``: ``(N,)``
    integers, ``None`` for all ``size_out``; ``dtype`` (that of the arithmetic, so it decides the numbers) and
    ``device`` are ``weight``'s.

    Returns:
        ``lower``, ``upper``: ``(N,)`` int64 (a single input entry is its own neighbour); ``weight``: ``(N,)``.
    """
    if output_indices is None:
        indices = torch.arange(size_out, device=device, dtype=dtype)
    else:
        indices = torch.as_tensor(output_indices, device=device).to(dtype)
    positions = _scale_cell_centres(indices, size_in / size_out)
    if not extrapolate:
        positions = positions.clamp(0, size_in - 1)
    lower = positions.floor().clamp(0, max(size_in - 2, 0)).long()
    upper = (lower + 1).clamp(max=size_in - 1)
    return lower, upper, positions - lower.to(dtype)


def _resample_dim(values: torch.Tensor, new_size: int, dim: int, extrapolate: bool) -> torch.Tensor:
    """``values`` resized along ``dim`` to ``new_size`` entries by :func:`_resize_axis`."""
    shape = list(values.shape)
    shape[dim] = new_size
    if values.shape[dim] == 1:  # nothing to interpolate: a view keeps the value exactly (inf too)
        return values.expand(*shape)
    lower, upper, weight = _resize_axis(values.shape[dim], new_size, None, extrapolate, values.dtype, values.device)
    below = values.index_select(dim, lower)
    above = values.index_select(dim, upper)
    weight_shape = [1] * values.dim()
    weight_shape[dim] = new_size
    return below + (above - below) * weight.reshape(weight_shape)


def resize_mapping(
    mapping: torch.Tensor,
    size_hw: tuple[int, int],
    from_size_hw_of_values: tuple[int, int] | None = None,
    to_size_hw_of_values: tuple[int, int] | None = None,
    extrapolate: bool = True,
) -> torch.Tensor:
    """Resample a mapping onto another grid and (optionally) rescale its values to another resolution.

    Typical use: a ``(B, ht, wt, 2)`` mapping on the target feature grid with values in source grid coordinates
    ``(hs, ws)`` -> ``resize_mapping(m, (Ht, Wt), (hs, ws), (Hs, Ws))`` gives a mapping for every target image pixel
    with values in source image pixels.

    Both steps follow the cell-centre convention: output cell ``k`` reads the input at position
    ``(k + 0.5) * h / H - 0.5`` (bilinear); values are converted with ``v' = (v + 0.5) * S_to / S_from - 0.5`` per axis.
    With ``extrapolate=True`` the outer half cells are extrapolated linearly, so identity and affine mappings are
    reproduced exactly up to the image border; ``False`` repeats the edge values (as ``interpolate`` does).

    Args:
        mapping: ``(B, h, w, 2)``.
        size_hw: ``(H, W)`` of the output grid.
        from_size_hw_of_values, to_size_hw_of_values: ``(h, w)`` sizes of the maps the values refer to, before and
            after; both ``None`` keeps the values unchanged.

    Returns:
        ``(B, H, W, 2)``.
    """
    _check_mapping(mapping, "mapping")
    stride = _value_stride(from_size_hw_of_values, to_size_hw_of_values)
    height, width = size_hw
    resized = _resample_dim(_resample_dim(mapping, height, 1, extrapolate), width, 2, extrapolate)
    return resized.contiguous() if stride is None else grid_to_pixel(resized, stride)


def _value_stride(from_size_hw, to_size_hw) -> tuple[float, float] | None:
    """``(sx, sy)`` that takes mapping values from the ``from`` map's pixels to the ``to`` map's; ``None``: keep them."""
    if (from_size_hw is None) != (to_size_hw is None):
        raise ValueError("give both from_size_hw_of_values and to_size_hw_of_values, or neither")
    return None if from_size_hw is None else grid_stride(to_size_hw, from_size_hw)


# --- full-resolution mappings from grid mappings: float32 numpy, a matcher's output ---------------------------------
# resize_mapping's numbers bit for bit: the same positions and weights (_resize_axis, float32), then the same float32
# operations in the same order, with the output preallocated and filled a few rows at a time, so memory beyond the
# output does not grow with the image.

UPSAMPLE_CHUNK_PIXELS = 1 << 18  # output pixels per chunk: about 2 MB per float32 temporary


def upsample_mapping(grid_mapping, size_hw: tuple[int, int], from_size_hw_of_values: tuple[int, int] | None = None,
                     to_size_hw_of_values: tuple[int, int] | None = None, extrapolate: bool = False,
                     chunk_pixels: int = UPSAMPLE_CHUNK_PIXELS) -> np.ndarray:
    """``resize_mapping(grid_mapping[None], size_hw, ...)[0]`` as a float32 ``(H, W, 2)`` numpy array, in row chunks.

    ``grid_mapping`` is an ``(h, w, 2)`` tensor (any device) or array; the other arguments are
    :func:`resize_mapping`'s. Memory besides the output: three float32 temporaries of ``max(chunk_pixels, W) x 2``
    values and ``O(W)`` column weights, whatever ``H`` and ``W`` are.
    """
    grid = _grid_array(grid_mapping)
    height, width = (int(side) for side in size_hw)
    stride = _value_stride(from_size_hw_of_values, to_size_hw_of_values)
    columns = _axis_weights(None, grid.shape[1], width, extrapolate)
    output = np.empty((height, width, 2), dtype=np.float32)
    rows_per_chunk = max(1, int(chunk_pixels) // max(width, 1))
    for start in range(0, height, rows_per_chunk):
        indices = np.arange(start, min(start + rows_per_chunk, height))
        rows = _axis_weights(indices, grid.shape[0], height, extrapolate)
        chunk = _interpolate_axis(_interpolate_axis(grid, rows, 0), columns, 1)
        output[start:start + len(chunk)] = _values_to_pixels(chunk, stride)
    return output


def read_upsampled_mapping(grid_mapping, size_hw: tuple[int, int], points: np.ndarray,
                           from_size_hw_of_values: tuple[int, int] | None = None,
                           to_size_hw_of_values: tuple[int, int] | None = None,
                           extrapolate: bool = False) -> np.ndarray:
    """``read_mapping_at(upsample_mapping(grid_mapping, size_hw, ...), points)`` -> float64 ``(N, 2)``, without the
    ``(H, W, 2)`` mapping: the four pixels around each ``(x, y)`` point are computed from the grid as
    :func:`upsample_mapping` computes them, then blended as :func:`read_mapping_at` blends them (the dense path's
    numbers bit for bit; reading the grid at the point itself would differ by up to a quarter of the flow's change of
    slope at a cell centre inside the pixel, since the dense path interpolates twice)."""
    grid = _grid_array(grid_mapping)
    stride = _value_stride(from_size_hw_of_values, to_size_hw_of_values)
    (x0, x1, wx), (y0, y1, wy) = _pixel_corners(points, size_hw)
    corners = []
    for row in (y0, y1):
        rows = _axis_weights(row, grid.shape[0], size_hw[0], extrapolate)
        for column in (x0, x1):
            value = _interpolate_pointwise(grid, rows, _axis_weights(column, grid.shape[1], size_hw[1], extrapolate))
            corners.append(_values_to_pixels(value, stride))
    return _blend_corners(*corners, wx, wy)


def read_mapping_at(mapping: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear read of a dense ``(H, W, 2)`` mapping at ``(x, y)`` points ``(N, 2)`` -> float64 ``(N, 2)``; points
    are clamped to pixel centres for the weights only (the caller has rejected points outside the image)."""
    (x0, x1, wx), (y0, y1, wy) = _pixel_corners(points, mapping.shape[:2])
    return _blend_corners(mapping[y0, x0], mapping[y0, x1], mapping[y1, x0], mapping[y1, x1], wx, wy)


def _grid_array(grid_mapping) -> np.ndarray:
    if isinstance(grid_mapping, torch.Tensor):
        grid_mapping = grid_mapping.detach().float().cpu()
    grid = np.asarray(grid_mapping, dtype=np.float32)
    if grid.ndim != 3 or grid.shape[-1] != 2:
        raise ValueError(f"grid_mapping must be (h, w, 2), got shape {tuple(grid.shape)}")
    return grid


def _values_to_pixels(values: np.ndarray, stride: tuple[float, float] | None) -> np.ndarray:
    """:func:`grid_to_pixel` of float32 ``(..., 2)`` values, in float32 numpy (``stride`` from :func:`_value_stride`)."""
    return values if stride is None else _scale_cell_centres(values, np.asarray(stride, dtype=np.float32))


def _axis_weights(indices: np.ndarray | None, size: int, new_size: int, extrapolate: bool):
    """:func:`_resize_axis`'s float32 ``(lower, upper, weight)`` for output entries ``indices``, as numpy arrays."""
    return tuple(part.numpy() for part in _resize_axis(size, new_size, indices, extrapolate))


def _interpolate_axis(values: np.ndarray, weights, axis: int) -> np.ndarray:
    """``below + (above - below) * weight`` along ``axis``, computed in place in ``above``."""
    lower, upper, weight = weights
    below, above = np.take(values, lower, axis=axis), np.take(values, upper, axis=axis)
    above -= below
    above *= weight.reshape((-1,) + (1,) * (values.ndim - axis - 1))
    above += below
    return above


def _interpolate_pointwise(grid: np.ndarray, rows, columns) -> np.ndarray:
    """The ``(N, 2)`` values :func:`upsample_mapping` gives at output pixels ``(rows[i], columns[i])``."""
    (row_lower, row_upper, row_weight), (column_lower, column_upper, column_weight) = rows, columns

    def along_rows(column: np.ndarray) -> np.ndarray:
        below = grid[row_lower, column]
        return below + (grid[row_upper, column] - below) * row_weight[:, None]

    left = along_rows(column_lower)
    return left + (along_rows(column_upper) - left) * column_weight[:, None]


def _pixel_corners(points: np.ndarray, size_hw):
    """Per axis ``(x, then y)``: the two pixels around each point and the second one's weight, clamped to the image."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    corners = []
    for coordinate, side in ((points[:, 0], size_hw[1]), (points[:, 1], size_hw[0])):
        clamped = np.clip(coordinate, 0, side - 1)
        first = np.floor(clamped).astype(int)
        corners.append((first, np.minimum(first + 1, side - 1), (clamped - first)[:, None]))
    return corners


def _blend_corners(top_left, top_right, bottom_left, bottom_right, wx, wy) -> np.ndarray:
    top = top_left * (1 - wx) + top_right * wx
    bottom = bottom_left * (1 - wx) + bottom_right * wx
    return top * (1 - wy) + bottom * wy
