"""Tests of corrmark.ops.warp: coordinate conventions, backward warping, field sampling, mapping algebra, and the
float32 full-resolution mappings built in chunks (their numbers, their sparse reading, their peak memory)."""

import tracemalloc

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from corrmark.ops import (
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
from corrmark.ops.warp import UPSAMPLE_CHUNK_PIXELS, read_mapping_at, read_upsampled_mapping, upsample_mapping


def identity(batch, height, width, dtype=torch.float32):
    return pixel_grid(height, width, dtype=dtype).expand(batch, height, width, 2)


def shifted(batch, height, width, dx=0.0, dy=0.0):
    return identity(batch, height, width) + torch.tensor([dx, dy])


def test_pixel_grid_values_and_dtype():
    grid = pixel_grid(2, 3, dtype=torch.float64)
    assert grid.shape == (2, 3, 2) and grid.dtype == torch.float64
    assert torch.equal(grid[1, 2], torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert torch.equal(grid[0, :, 0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))


def test_grid_to_pixel_cell_centres():
    cells = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    assert torch.equal(grid_to_pixel(cells, 4), torch.tensor([[1.5, 1.5], [9.5, 5.5]]))
    assert torch.equal(grid_to_pixel(cells, (2, 4)), torch.tensor([[0.5, 1.5], [4.5, 5.5]]))
    assert torch.allclose(pixel_to_grid(grid_to_pixel(cells, (2.5, 16)), (2.5, 16)), cells)
    # a pixel at the image edge -0.5 is the edge of cell 0 as well
    assert torch.equal(pixel_to_grid(torch.tensor([-0.5, -0.5]), 8), torch.tensor([-0.5, -0.5]))
    per_image = torch.tensor([[[2.0, 2.0]], [[4.0, 8.0]]])  # (B=2, 1, 2)
    batch_points = torch.zeros(2, 3, 2)
    assert torch.equal(grid_to_pixel(batch_points, per_image)[1, 0], torch.tensor([1.5, 3.5]))
    with pytest.raises(ValueError):
        grid_to_pixel(cells, 0)
    with pytest.raises(ValueError):
        grid_to_pixel(torch.zeros(3), 4)


def test_grid_stride_for_non_multiple_sizes():
    assert grid_stride((250, 100), (16, 10)) == (10.0, 15.625)
    # the last cell of a 16-row grid ends at the image border
    last_edge = grid_to_pixel(torch.tensor([0.0, 15.5]), grid_stride((250, 100), (16, 10)))
    assert last_edge[1] == pytest.approx(249.5)


def test_pixel_to_normalized_edges_and_round_trip():
    points = torch.tensor([[-0.5, -0.5], [9.5, 4.5], [4.5, 2.0]])
    normalized = pixel_to_normalized(points, (5, 10))
    assert torch.allclose(normalized, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(normalized_to_pixel(normalized, (5, 10)), points)


def test_inside_map():
    points = torch.tensor([[-0.5, 0.0], [-0.51, 0.0], [3.5, 1.5], [3.6, 0.0], [float("nan"), 0.0], [0.0, 1.6]])
    assert inside_map(points, (2, 4)).tolist() == [True, False, True, False, False, False]


def test_warp_backward_identity_returns_input():
    torch.manual_seed(0)
    source = torch.rand(2, 3, 4, 5)
    warped, valid = warp_backward(source, identity(2, 4, 5))
    assert warped.shape == (2, 3, 4, 5) and valid.shape == (2, 4, 5)
    assert torch.allclose(warped, source, atol=1e-6)
    assert valid.all()


def test_warp_backward_shift_by_one_pixel():
    torch.manual_seed(1)
    source = torch.rand(1, 2, 3, 4)
    warped, valid = warp_backward(source, shifted(1, 3, 4, dx=1.0))
    assert torch.allclose(warped[..., :3], source[..., 1:], atol=1e-6)
    assert torch.equal(warped[..., 3], torch.zeros(1, 2, 3))  # x = 4 is outside, zero padding
    assert valid[0, :, :3].all() and not valid[0, :, 3].any()
    half, _ = warp_backward(source, shifted(1, 3, 4, dy=0.5))
    assert torch.allclose(half[:, :, 0], (source[:, :, 0] + source[:, :, 1]) / 2, atol=1e-6)


def test_warp_backward_non_square_different_sizes_and_batch():
    source = torch.arange(2 * 6.0).reshape(1, 1, 2, 6).repeat(2, 1, 1, 1)
    source[1] *= -1
    mapping = torch.tensor([[[[5.0, 1.0], [0.0, 0.0], [2.0, 1.0]]], [[[1.0, 0.0], [5.0, 0.0], [0.0, 1.0]]]])
    warped, valid = warp_backward(source, mapping)  # target 1x3
    assert warped.shape == (2, 1, 1, 3)
    assert torch.allclose(warped[0, 0, 0], torch.tensor([11.0, 0.0, 8.0]), atol=1e-5)
    assert torch.allclose(warped[1, 0, 0], torch.tensor([-1.0, -5.0, -6.0]), atol=1e-5)
    assert valid.all()


def test_warp_backward_masks_and_non_finite_mapping():
    mask = torch.tensor([[[[True, False], [False, True]]]])
    mapping = torch.tensor([[[[0.2, 0.1], [1.4, 0.9]], [[float("nan"), 0.0], [0.0, float("inf")]]]])
    warped, valid = warp_backward(mask, mapping, mode="nearest")
    assert warped.dtype == torch.bool
    assert warped[0, 0, 0].tolist() == [True, True]
    assert valid[0].tolist() == [[True, True], [False, False]]
    image_warp, _ = warp_backward(torch.ones(1, 1, 2, 2), mapping)
    assert torch.isfinite(image_warp).all()
    assert torch.equal(image_warp[0, 0, 1], torch.zeros(2))


def test_warp_backward_gradcheck_source_and_mapping():
    torch.manual_seed(2)
    source = torch.rand(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    # keep points away from integer (kink) positions of bilinear interpolation
    offsets = 0.2 + 0.6 * torch.rand(2, 2, 3, 2, dtype=torch.float64)
    mapping = (pixel_grid(2, 3, dtype=torch.float64)[None] + offsets).requires_grad_()
    assert gradcheck(lambda s, m: warp_backward(s, m)[0], (source, mapping))


def test_warp_backward_errors():
    with pytest.raises(ValueError):
        warp_backward(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError):
        warp_backward(torch.zeros(2, 1, 2, 2), torch.zeros(1, 2, 2, 2))


def test_sample_field_reads_linear_mapping_exactly():
    field = (2.0 * pixel_grid(3, 4) + torch.tensor([1.0, -1.0]))[None]  # (1, 3, 4, 2)
    points = torch.tensor([[[1.5, 0.5], [0.0, 2.0], [2.25, 1.75]]])
    values = sample_field(field, points)
    assert values.shape == (1, 3, 2)
    assert torch.allclose(values, 2.0 * points + torch.tensor([1.0, -1.0]))
    assert torch.allclose(sample_field(field, torch.tensor([[[-0.4, 0.0]]])), field[:, 0, 0][:, None])  # border


def test_sample_field_channels_first_and_explicit_layout():
    torch.manual_seed(3)
    features = torch.randn(2, 5, 3, 2)  # (B, C, h, w=2): ambiguous, must be told
    points = torch.tensor([[[1.0, 2.0]], [[0.0, 1.0]]])
    values = sample_field(features, points, channels_last=False)
    assert values.shape == (2, 1, 5)
    assert torch.allclose(values[0, 0], features[0, :, 2, 1], atol=1e-6)
    assert torch.allclose(values[1, 0], features[1, :, 1, 0], atol=1e-6)


def test_compose_with_inverse_shift_is_identity():
    forward = shifted(1, 4, 6, dx=1.0, dy=-1.0)
    backward = shifted(1, 4, 6, dx=-1.0, dy=1.0)
    composed = compose_mappings(forward, backward)
    interior = (slice(None), slice(0, 3), slice(1, 6))  # where the backward shift stays inside the map
    assert torch.allclose(composed[interior], identity(1, 4, 6)[interior], atol=1e-5)


def test_compose_affine_mappings_non_square():
    affine = lambda points: points * torch.tensor([2.0, 3.0]) + torch.tensor([1.0, 0.5])  # noqa: E731
    mapping_b_to_a = affine(pixel_grid(3, 4))[None]  # defined on a 3x4 grid B
    torch.manual_seed(4)
    mapping_c_to_b = torch.rand(1, 5, 2, 2) * torch.tensor([3.0, 2.0])  # inside B's sample hull
    composed = compose_mappings(mapping_b_to_a, mapping_c_to_b)
    assert composed.shape == (1, 5, 2, 2)
    assert torch.allclose(composed, affine(mapping_c_to_b), atol=1e-5)


def test_cycle_error_consistent_and_inconsistent():
    assert torch.allclose(cycle_error(identity(2, 3, 5), identity(2, 3, 5)), torch.zeros(2, 3, 5), atol=1e-6)
    there, back = shifted(1, 3, 5, dx=1.0), shifted(1, 3, 5, dx=-1.0)
    assert torch.allclose(cycle_error(there, back)[:, :, :4], torch.zeros(1, 3, 4), atol=1e-5)
    error = cycle_error(there, identity(1, 3, 5))
    assert error.shape == (1, 3, 5)
    assert torch.allclose(error[:, :, :4], torch.ones(1, 3, 4), atol=1e-5)
    # source and target of different sizes: t (2x3) -> s (4x6) by doubling, s -> t by halving
    t_to_s = (2.0 * pixel_grid(2, 3))[None]
    s_to_t = (0.5 * pixel_grid(4, 6))[None]
    assert torch.allclose(cycle_error(t_to_s, s_to_t), torch.zeros(1, 2, 3), atol=1e-5)


def test_resize_identity_grid_mapping_gives_identity_pixel_mapping():
    for grid_hw, image_hw in (((4, 4), (16, 16)), ((3, 5), (10, 17))):
        grid_identity = pixel_grid(*grid_hw)[None]
        resized = resize_mapping(grid_identity, image_hw, grid_hw, image_hw)
        assert resized.shape == (1, *image_hw, 2)
        assert torch.allclose(resized, pixel_grid(*image_hw)[None], atol=1e-5)


def test_resize_mapping_without_extrapolation_repeats_edges():
    resized = resize_mapping(pixel_grid(4, 4)[None], (16, 16), (4, 4), (16, 16), extrapolate=False)
    assert torch.allclose(resized[0, 0, 0], torch.tensor([1.5, 1.5]))  # cell centre (0, 0) at stride 4
    assert torch.allclose(resized[0, 8, 8], torch.tensor([8.0, 8.0]))


def test_resize_mapping_value_rescaling_and_single_cell():
    constant = torch.zeros(1, 4, 4, 2)  # everything maps to cell (0, 0) of a 2x8 source grid
    resized = resize_mapping(constant, (16, 16), (2, 8), (20, 80))
    assert torch.allclose(resized, torch.full((1, 16, 16, 2), 4.5))  # stride 10 both ways: (0 + .5) * 10 - .5
    single = resize_mapping(torch.tensor([[[[1.0, 2.0]]]]), (3, 2))
    assert torch.equal(single, torch.tensor([1.0, 2.0]).expand(1, 3, 2, 2))
    with pytest.raises(ValueError):
        resize_mapping(constant, (8, 8), (2, 8), None)


def test_resize_mapping_gradcheck():
    torch.manual_seed(5)
    mapping = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda m: resize_mapping(m, (5, 4), (2, 3), (8, 12)), (mapping,))


# --- upsample_mapping / read_upsampled_mapping: resize_mapping's numbers, in bounded memory -----------------------

UPSAMPLE_CASES = [  # (grid (h, w), output (H, W), values rescaled from grid to image, extrapolate)
    ((1, 1), (5, 3), False, False), ((1, 6), (9, 40), True, True), ((4, 1), (37, 2), False, True),
    ((7, 9), (38, 52), True, False), ((16, 16), (333, 257), True, False), ((16, 16), (333, 257), False, True),
    ((24, 18), (3, 2), True, True),  # downsampling
]


def random_grid(grid_hw, seed=0) -> torch.Tensor:
    return torch.randn(*grid_hw, 2, generator=torch.Generator().manual_seed(seed)) * 5 + 3


@pytest.mark.parametrize("grid_hw, size_hw, rescale, extrapolate", UPSAMPLE_CASES)
@pytest.mark.parametrize("chunk_pixels", [1, 97, UPSAMPLE_CHUNK_PIXELS])
def test_upsample_mapping_is_resize_mapping_bit_for_bit(grid_hw, size_hw, rescale, extrapolate, chunk_pixels):
    grid = random_grid(grid_hw)
    values = (grid_hw, (45, 61)) if rescale else (None, None)
    expected = resize_mapping(grid[None], size_hw, *values, extrapolate=extrapolate)[0].numpy()
    upsampled = upsample_mapping(grid, size_hw, *values, extrapolate=extrapolate, chunk_pixels=chunk_pixels)
    assert upsampled.dtype == np.float32 and upsampled.shape == (*size_hw, 2)
    assert np.array_equal(upsampled, expected)


@pytest.mark.parametrize("grid_hw, size_hw, rescale, extrapolate", UPSAMPLE_CASES)
def test_read_upsampled_mapping_is_the_dense_read_bit_for_bit(grid_hw, size_hw, rescale, extrapolate):
    grid = random_grid(grid_hw, seed=1)
    values = (grid_hw, (45, 61)) if rescale else (None, None)
    height, width = size_hw
    rng = np.random.default_rng(2)
    points = np.stack([rng.uniform(-0.5, width - 0.5, 200), rng.uniform(-0.5, height - 0.5, 200)], axis=1)
    points[:6] = [[-0.5, -0.5], [width - 0.5, height - 0.5], [0, 0], [width - 1, height - 1], [-0.5, height - 0.5],
                  [(width - 1) / 2, 0.25]]  # the edges and corners, where the dense path clamps
    dense = upsample_mapping(grid, size_hw, *values, extrapolate=extrapolate)
    sparse = read_upsampled_mapping(grid, size_hw, points, *values, extrapolate=extrapolate)
    assert sparse.dtype == np.float64 and sparse.shape == (200, 2)
    assert np.array_equal(sparse, read_mapping_at(dense, points))


def test_read_upsampled_mapping_is_not_a_single_bilinear_read_of_the_grid():
    """Why the sparse path computes the four pixels around a point: one read of the grid at the point is another
    number wherever the flow bends inside the pixel (here a V-shaped flow bending at a cell centre)."""
    grid = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]]])  # (1, 3, 2): x goes 0 -> 10 -> 0
    point = np.array([[3.5, 0.0]])  # on a 1 x 8 image the middle cell's centre is x = 3.5, between pixels 3 and 4
    sparse = read_upsampled_mapping(grid, (1, 8), point)
    at_point = sample_field(grid[None], torch.tensor([[[1.0, 0.0]]]))[0, 0, 0].item()  # grid x of pixel 3.5: 1
    assert sparse[0, 0] == read_mapping_at(upsample_mapping(grid, (1, 8)), point)[0, 0] == pytest.approx(8.125)
    assert at_point == pytest.approx(10.0)  # pixels 3 and 4 read grid x 0.8125 and 1.1875: 8.125 each


def test_upsample_mapping_checks_its_arguments():
    with pytest.raises(ValueError, match="grid_mapping"):
        upsample_mapping(torch.zeros(1, 4, 4, 2), (8, 8))
    with pytest.raises(ValueError, match="both"):
        upsample_mapping(torch.zeros(4, 4, 2), (8, 8), (4, 4), None)


def traced_peak_beyond_output(size_hw) -> tuple[int, int]:
    """(peak traced bytes minus the output's, output bytes) of one upsample_mapping call."""
    grid = random_grid((24, 24))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        output = upsample_mapping(grid, size_hw, (24, 24), (336, 336))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - output.nbytes, output.nbytes


def test_upsample_mapping_memory_beyond_the_output_does_not_grow_with_the_image():
    # numpy allocations are traced; upsample_mapping interpolates in numpy (only its O(H + W) axis weights come from
    # torch, untraced and small). One chunk is 2**18 pixels x 2 x 4 B
    # = 2 MB per temporary; the previous implementation held full-size float32 and float64 copies (3 x the output).
    bound = 16 * 2**20
    small_extra, small_output = traced_peak_beyond_output((750, 1000))
    large_extra, large_output = traced_peak_beyond_output((3000, 4000))
    assert large_output == 3000 * 4000 * 2 * 4 and small_output * 16 == large_output
    assert small_extra < bound and large_extra < bound
