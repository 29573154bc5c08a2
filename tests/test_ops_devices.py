"""Every op keeps the device and floating dtype of its inputs (CUDA cases run only when a GPU is present)."""

import pytest
import torch

from corrmark import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ops_preserve_device_and_dtype(device, dtype):
    generator = torch.Generator().manual_seed(0)
    features_a = torch.randn(2, 4, 3, 5, generator=generator, dtype=dtype).to(device)
    features_b = torch.randn(2, 4, 3, 5, generator=generator, dtype=dtype).to(device)
    mapping = ops.pixel_grid(3, 5, device=device, dtype=dtype).expand(2, 3, 5, 2) + 0.25
    correlation = ops.correlation_4d(features_a, features_b)
    outputs = [
        correlation,
        ops.local_correlation(features_a, features_b, radius=1),
        ops.nearest_neighbours(features_a, features_b, chunk_size=4)[1],
        ops.correlation_argmax(correlation)[0],
        ops.soft_argmax(features_a, beta=2.0)[0],
        ops.soft_argmax_4d(correlation),
        ops.kernel_soft_argmax(correlation),
        ops.spatial_softmax(features_a, beta=2.0),
        ops.spatial_expectation(features_a.abs(), coordinates="normalized", normalize_mass=True),
        ops.soft_argmax_around_peak(features_a, beta=2.0, sigma=1.0, normalize=True),
        ops.local_correlation_soft_argmax(ops.local_correlation(features_a, features_b, radius=1), 1, beta=2.0),
        ops.mutual_nn_filter(correlation.clamp_min(0)),
        ops.mutual_nearest_neighbours(features_a, features_b)[2],
        ops.upsample_correlation(correlation, 2),
        ops.dense_self_similarity(features_a, radius=1),
        ops.sparse_self_similarity(features_a, kernel_size=3),
        ops.warp_backward(features_a, mapping)[0],
        ops.sample_field(mapping, mapping.flatten(1, 2)),
        ops.compose_mappings(mapping, mapping),
        ops.cycle_error(mapping, mapping),
        ops.resize_mapping(mapping, (6, 10), (3, 5), (12, 20)),
        ops.grid_to_pixel(mapping, (4, 8)),
        ops.pixel_to_normalized(mapping, (3, 5)),
    ]
    for index, output in enumerate(outputs):
        assert output.device.type == device, index
        assert output.dtype == dtype, index
        assert torch.isfinite(output).all(), index
