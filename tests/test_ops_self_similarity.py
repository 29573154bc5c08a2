"""Tests of corrmark.ops.self_similarity: JLAD dense and SCorrSAN sparse self-similarity."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from corrmark.ops import (
    dense_self_similarity,
    local_correlation,
    sparse_self_similarity,
    sparse_self_similarity_offsets,
    window_offsets,
)


def test_sparse_offsets_order_k5():
    assert sparse_self_similarity_offsets(5) == [
        (0, -2), (0, -1), (0, 1), (0, 2),
        (-2, 0), (-1, 0), (1, 0), (2, 0),
        (-2, -2), (-1, -1), (1, 1), (2, 2),
        (-2, 2), (-1, 1), (1, -1), (2, -2),
    ]  # fmt: skip


def test_sparse_offsets_k3_cover_the_8_neighbourhood_and_dilation_scales():
    offsets = sparse_self_similarity_offsets(3)
    assert len(offsets) == 8
    assert set(offsets) == {o for o in window_offsets(1) if o != (0, 0)}
    doubled = [(2 * dy, 2 * dx) for dy, dx in sparse_self_similarity_offsets(5)]
    assert sparse_self_similarity_offsets(5, dilation=2) == doubled
    for bad in (4, 1, 0):
        with pytest.raises(ValueError):
            sparse_self_similarity_offsets(bad)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_sparse_self_similarity_shape(kernel_size):
    result = sparse_self_similarity(torch.randn(2, 3, 4, 6), kernel_size=kernel_size)
    assert result.shape == (2, 4 * (kernel_size - 1), 4, 6)


def test_sparse_self_similarity_known_neighbour_cosine():
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 0, 1] = torch.tensor([1.0, 1.0])
    features[0, :, 1, 1] = torch.tensor([0.0, 3.0])
    result = sparse_self_similarity(features, kernel_size=3)
    offsets = sparse_self_similarity_offsets(3)
    right, left, down_right = offsets.index((0, 1)), offsets.index((0, -1)), offsets.index((1, 1))
    assert torch.isclose(result[0, right, 0, 0], torch.tensor(1 / math.sqrt(2)))
    assert torch.isclose(result[0, left, 0, 1], torch.tensor(1 / math.sqrt(2)))
    assert result[0, left, 0, 0] == 0.0  # outside the map
    assert result[0, down_right, 0, 0] == 0.0  # orthogonal vectors
    assert result[0, offsets.index((1, 0)), 0, 1] == pytest.approx(1 / math.sqrt(2))  # (0,1) vs (1,1)
    assert torch.equal(result[0, :, 1, 0], torch.zeros(8))  # zero feature vector -> zeros, no NaN


def test_sparse_self_similarity_matches_brute_force_with_dilation():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    result = sparse_self_similarity(features, kernel_size=5, dilation=2)
    for channel, (dy, dx) in enumerate(sparse_self_similarity_offsets(5, dilation=2)):
        for i in range(5):
            for j in range(6):
                if 0 <= i + dy < 5 and 0 <= j + dx < 6:
                    expected = F.cosine_similarity(features[:, :, i, j], features[:, :, i + dy, j + dx], dim=1)
                else:
                    expected = torch.zeros(2, dtype=torch.float64)
                assert torch.allclose(result[:, channel, i, j], expected, atol=1e-12)


def test_sparse_self_similarity_1x1_map_and_zero_gradients():
    assert torch.equal(sparse_self_similarity(torch.randn(1, 4, 1, 1)), torch.zeros(1, 16, 1, 1))
    features = torch.zeros(1, 3, 3, 3, requires_grad=True)
    sparse_self_similarity(features).sum().backward()
    assert torch.isfinite(features.grad).all()


def test_sparse_self_similarity_gradcheck():
    torch.manual_seed(1)
    features = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda f: sparse_self_similarity(f, kernel_size=3), (features,))


def test_dense_self_similarity_is_local_correlation_with_itself():
    torch.manual_seed(2)
    features = torch.randn(2, 4, 3, 5)
    result = dense_self_similarity(features, radius=2)
    assert result.shape == (2, 25, 3, 5)
    assert torch.allclose(result, local_correlation(features, features, radius=2))
    raw = dense_self_similarity(features, radius=1, normalize_window=False)
    assert torch.allclose(raw[:, 4], torch.ones(2, 3, 5))  # centre channel: cosine with itself
