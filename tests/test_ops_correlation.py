"""Tests of corrmark.ops.correlation: cosine correlation, JLAD local correlation, chunked nearest neighbours."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from corrmark.ops import (
    correlation_4d,
    correlation_argmax,
    flat_index_to_xy,
    l2_normalize,
    local_correlation,
    nearest_neighbours,
    offset_correlation,
    window_offsets,
)


def one_hot_features(height, width, dtype=torch.float64):
    """``(1, h*w, h, w)``: cell k (row-major) holds the k-th unit vector."""
    return torch.eye(height * width, dtype=dtype).reshape(height * width, height, width).unsqueeze(0)


def brute_force_window(features_a, features_b, radius, normalize_window):
    """Direct evaluation of JLAD eq. (3) with Python loops."""
    a, b = l2_normalize(features_a), l2_normalize(features_b)
    batch, _, height, width = a.shape
    size = 2 * radius + 1
    out = torch.zeros(batch, size * size, height, width, dtype=a.dtype)
    for i in range(height):
        for j in range(width):
            for k, (dy, dx) in enumerate(window_offsets(radius)):
                if 0 <= i + dy < height and 0 <= j + dx < width:
                    out[:, k, i, j] = (a[:, :, i, j] * b[:, :, i + dy, j + dx]).sum(1)
    if normalize_window:
        out = out / out.pow(2).sum(1, keepdim=True).sqrt()
    return out


def test_l2_normalize_known_values_and_zero_vector():
    features = torch.tensor([[3.0, 0.0], [4.0, 0.0]]).reshape(1, 2, 1, 2).requires_grad_()
    normalized = l2_normalize(features)
    assert torch.allclose(normalized[0, :, 0, 0], torch.tensor([0.6, 0.8]))
    assert torch.equal(normalized[0, :, 0, 1], torch.zeros(2))
    normalized.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_correlation_4d_of_one_hot_features_is_identity():
    features = one_hot_features(2, 3)
    correlation = correlation_4d(features, features)
    assert correlation.shape == (1, 2, 3, 2, 3)
    assert torch.equal(correlation.reshape(6, 6), torch.eye(6, dtype=torch.float64))


def test_correlation_4d_matches_cosine_similarity_non_square_batch():
    torch.manual_seed(0)
    features_a, features_b = torch.randn(2, 5, 2, 3), torch.randn(2, 5, 4, 1)
    correlation = correlation_4d(features_a, features_b)
    assert correlation.shape == (2, 2, 3, 4, 1)
    expected = F.cosine_similarity(features_a[1, :, 1, 2], features_b[1, :, 3, 0], dim=0)
    assert torch.allclose(correlation[1, 1, 2, 3, 0], expected, atol=1e-6)
    raw = correlation_4d(features_a, features_b, normalize=False)
    assert torch.allclose(raw[0, 0, 1, 2, 0], (features_a[0, :, 0, 1] * features_b[0, :, 2, 0]).sum(), atol=1e-5)


def test_correlation_4d_zero_features_and_errors():
    correlation = correlation_4d(torch.zeros(1, 3, 1, 1), torch.randn(1, 3, 2, 2))
    assert torch.equal(correlation, torch.zeros(1, 1, 1, 2, 2))
    with pytest.raises(ValueError):
        correlation_4d(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError):
        correlation_4d(torch.zeros(3, 2, 2), torch.zeros(1, 3, 2, 2))


def test_correlation_4d_gradcheck():
    torch.manual_seed(0)
    features_a = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    features_b = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(correlation_4d, (features_a, features_b))


def test_window_offsets_order():
    assert window_offsets(1) == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]
    assert window_offsets(0) == [(0, 0)]
    with pytest.raises(ValueError):
        window_offsets(-1)


def test_local_correlation_finds_known_shift():
    # B is A moved one column to the left: the match of A(i, j) sits at B(i, j - 1), displacement (0, -1)
    features_a = one_hot_features(3, 4)
    features_b = torch.roll(features_a, shifts=-1, dims=3)
    correlation = local_correlation(features_a, features_b, radius=1)
    assert correlation.shape == (1, 9, 3, 4)
    channel = window_offsets(1).index((0, -1))
    expected = torch.zeros(9, 3, 4, dtype=torch.float64)
    expected[channel, :, 1:] = 1.0  # column 0 has its match outside the window (wrapped to the far end)
    assert torch.equal(correlation[0], expected)


@pytest.mark.parametrize("normalize_window", [True, False])
def test_local_correlation_matches_brute_force(normalize_window):
    torch.manual_seed(1)
    features_a, features_b = torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 3, 5, dtype=torch.float64)
    result = local_correlation(features_a, features_b, radius=2, normalize_window=normalize_window)
    expected = brute_force_window(features_a, features_b, 2, normalize_window)
    assert torch.allclose(result, expected, atol=1e-12)


def test_local_correlation_radius_larger_than_map_and_1x1():
    torch.manual_seed(2)
    features = torch.randn(1, 3, 2, 2)
    correlation = local_correlation(features, features, radius=3)
    assert correlation.shape == (1, 49, 2, 2)
    assert torch.isfinite(correlation).all()
    inside = {k for k, (dy, dx) in enumerate(window_offsets(3)) if abs(dy) <= 1 and abs(dx) <= 1}
    outside = [k for k in range(49) if k not in inside]
    assert torch.equal(correlation[0, outside], torch.zeros(len(outside), 2, 2))
    single = local_correlation(torch.randn(1, 3, 1, 1), torch.randn(1, 3, 1, 1), radius=1)
    assert single.shape == (1, 9, 1, 1)
    assert torch.allclose(single[0, :, 0, 0].abs(), torch.eye(9)[4])  # only the centre, normalised to +-1


def test_local_correlation_zero_features_no_nan():
    features_a = torch.zeros(1, 3, 2, 3, requires_grad=True)
    features_b = torch.randn(1, 3, 2, 3, requires_grad=True)
    correlation = local_correlation(features_a, features_b, radius=1)
    assert torch.equal(correlation, torch.zeros_like(correlation))
    correlation.sum().backward()
    assert torch.isfinite(features_a.grad).all() and torch.isfinite(features_b.grad).all()


def test_local_correlation_errors():
    with pytest.raises(ValueError):
        local_correlation(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3), radius=1)


def test_local_correlation_gradcheck():
    torch.manual_seed(3)
    features_a = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    features_b = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: local_correlation(a, b, radius=1), (features_a, features_b))


def test_offset_correlation_single_offset():
    torch.manual_seed(4)
    features = torch.randn(1, 2, 3, 3)
    result = offset_correlation(features, features, [(1, 0)])
    assert result.shape == (1, 1, 3, 3)
    assert torch.allclose(result[0, 0, 0, 2], F.cosine_similarity(features[0, :, 0, 2], features[0, :, 1, 2], dim=0))
    assert torch.equal(result[0, 0, 2], torch.zeros(3))  # the row below the last one is padding


def test_flat_index_to_xy():
    xy = flat_index_to_xy(torch.tensor([0, 7, 14]), width=5)
    assert torch.equal(xy, torch.tensor([[0.0, 0.0], [2.0, 1.0], [4.0, 2.0]]))


def test_nearest_neighbours_of_permuted_one_hot():
    features_a = one_hot_features(2, 3)
    permutation = torch.tensor([4, 0, 5, 1, 3, 2])
    features_b = features_a.flatten(2)[:, :, permutation].reshape(1, 6, 2, 3)  # B cell k = A cell permutation[k]
    indices, scores = nearest_neighbours(features_a, features_b, chunk_size=2)
    assert torch.equal(permutation[indices[0]], torch.arange(6))
    assert torch.allclose(scores, torch.ones(1, 6, dtype=torch.float64))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 4096])
def test_nearest_neighbours_chunked_equals_full_argmax(chunk_size):
    torch.manual_seed(5)
    features_a, features_b = torch.randn(2, 8, 4, 5), torch.randn(2, 8, 3, 6)
    indices, scores = nearest_neighbours(features_a, features_b, chunk_size=chunk_size)
    full = correlation_4d(features_a, features_b).reshape(2, 20, 18)
    assert indices.shape == (2, 20) and indices.dtype == torch.long
    assert torch.equal(indices, full.argmax(dim=2))
    assert torch.allclose(scores, full.amax(dim=2), atol=1e-6)


def test_correlation_argmax_known_peak_and_chunking():
    correlation = torch.zeros(2, 3, 2, 4, 5)
    correlation[1, 2, 1, 3, 4] = 1.0
    correlation[0, 0, 0, 1, 2] = 2.0
    points, scores = correlation_argmax(correlation, chunk_size=1)
    assert points.shape == (2, 3, 2, 2) and scores.shape == (2, 3, 2)
    assert torch.equal(points[1, 2, 1], torch.tensor([4.0, 3.0]))
    assert torch.equal(points[0, 0, 0], torch.tensor([2.0, 1.0]))
    assert torch.equal(points[0, 1, 1], torch.tensor([0.0, 0.0]))  # ties -> first index
    assert scores[0, 0, 0] == 2.0
    torch.manual_seed(6)
    random = torch.randn(1, 5, 4, 3, 6).transpose(1, 2)  # non-contiguous (1, 4, 5, 3, 6)
    chunked, _ = correlation_argmax(random, chunk_size=2)
    whole, _ = correlation_argmax(random.contiguous(), chunk_size=100)
    assert torch.equal(chunked, whole)


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_local_correlation_of_raw_features_equals_offset_correlation(radius):
    torch.manual_seed(5)
    features_a, features_b = torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 3, 5, dtype=torch.float64)
    raw = local_correlation(features_a, features_b, radius, normalize_window=False, normalize_features=False)
    expected = offset_correlation(features_a, features_b, window_offsets(radius), normalize=False)
    assert raw.shape == (2, (2 * radius + 1) ** 2, 3, 5)
    torch.testing.assert_close(raw, expected, rtol=0, atol=1e-12)


def test_local_correlation_radius_zero_is_the_sign_of_the_cosine():
    torch.manual_seed(6)
    features_a, features_b = torch.randn(1, 3, 2, 3, dtype=torch.float64), torch.randn(1, 3, 2, 3, dtype=torch.float64)
    cosine = F.cosine_similarity(features_a, features_b, dim=1)
    torch.testing.assert_close(local_correlation(features_a, features_b, 0, normalize_window=False)[:, 0], cosine)
    torch.testing.assert_close(local_correlation(features_a, features_b, 0)[:, 0], cosine.sign())


def test_local_correlation_gradcheck_without_normalisation():
    torch.manual_seed(7)
    features_a = torch.randn(1, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    features_b = torch.randn(1, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: local_correlation(a, b, 1, normalize_window=False, normalize_features=False),
                     (features_a, features_b))


def test_local_correlation_reproduces_the_numbers_before_the_ops_refactor():
    # computed with the per-offset ops.local_correlation and JLAD's windowed_correlation this one replaced (they agreed)
    generator = torch.Generator().manual_seed(0)
    features_a = torch.randn(1, 4, 3, 5, generator=generator, dtype=torch.float64)
    features_b = torch.randn(1, 4, 3, 5, generator=generator, dtype=torch.float64)
    correlation = local_correlation(features_a, features_b, 2)
    assert correlation[0, :6, 1, 2].tolist() == pytest.approx([0.0] * 5 + [-0.1403983209376221], rel=1e-12)
    assert correlation[0, 12].flatten().tolist() == pytest.approx(
        [0.15306444190231733, 0.2460922690227057, 0.2718405072935851, -0.004083671586099605, 0.4483224094362857,
         0.26294826222092227, 0.2630758186528054, -0.025955810528423783, 0.035711319312120224, 0.16129084165698945,
         -0.394570477403879, 0.2572898835983722, 0.28496035686833154, 0.15929385127684473, -0.1938825749168715],
        rel=1e-12)
