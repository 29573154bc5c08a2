"""Tests of corrmark.ops.matching: soft mutual NN filter, hard mutual matches, correlation upsampling."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from corrmark.ops import correlation_4d, mutual_nearest_neighbours, mutual_nn_filter, upsample_correlation


def test_mutual_nn_filter_hand_computed():
    scores = torch.tensor([[0.9, 0.5], [0.8, 0.2]], dtype=torch.float64)  # rows: cells of A, columns: cells of B
    correlation = scores.reshape(1, 1, 2, 1, 2)
    filtered = mutual_nn_filter(correlation, eps=0.0)
    assert filtered.shape == correlation.shape
    expected = torch.tensor(
        [[0.9, 0.5 * (0.5 / 0.5) * (0.5 / 0.9)], [0.8 * (0.8 / 0.9) * (0.8 / 0.8), 0.2 * (0.2 / 0.5) * (0.2 / 0.8)]],
        dtype=torch.float64,
    )
    assert torch.allclose(filtered.reshape(2, 2), expected)
    with_eps = mutual_nn_filter(correlation)
    assert torch.allclose(with_eps.reshape(2, 2), expected, atol=1e-4)


def test_mutual_nn_filter_batch_independent_and_zero_safe():
    torch.manual_seed(0)
    correlation = torch.rand(3, 2, 3, 4, 2)
    filtered = mutual_nn_filter(correlation)
    assert torch.allclose(filtered[1:2], mutual_nn_filter(correlation[1:2]))
    assert (filtered <= correlation + 1e-6).all()  # ratios are at most 1 for non-negative scores
    zeros = mutual_nn_filter(torch.zeros(1, 2, 2, 2, 2))
    assert torch.equal(zeros, torch.zeros(1, 2, 2, 2, 2))


def test_mutual_nearest_neighbours_known_pairs():
    unit = torch.eye(4)
    a_cells = [unit[0], unit[1], unit[0] + 0.1 * unit[2]]  # a2 looks like a0, but b1 prefers a0
    b_cells = [unit[1], unit[0], unit[3]]
    features_a = torch.stack(a_cells, dim=1).reshape(1, 4, 1, 3)
    features_b = torch.stack(b_cells, dim=1).reshape(1, 4, 1, 3)
    indices_b, is_mutual, scores = mutual_nearest_neighbours(features_a, features_b)
    assert torch.equal(indices_b, torch.tensor([[1, 0, 1]]))
    assert torch.equal(is_mutual, torch.tensor([[True, True, False]]))
    assert torch.allclose(scores, torch.tensor([[1.0, 1.0, 1.0 / 1.01**0.5]]))


def test_mutual_nearest_neighbours_batched_and_chunked():
    torch.manual_seed(1)
    features_a, features_b = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 5, 2)
    indices_b, is_mutual, _ = mutual_nearest_neighbours(features_a, features_b, chunk_size=2)
    correlation = correlation_4d(features_a, features_b).reshape(2, 12, 10)
    expected_ab, expected_ba = correlation.argmax(2), correlation.argmax(1)
    assert torch.equal(indices_b, expected_ab)
    expected_mutual = torch.gather(expected_ba, 1, expected_ab) == torch.arange(12)
    assert torch.equal(is_mutual, expected_mutual)
    assert is_mutual.dtype == torch.bool


def test_upsample_correlation_hand_computed():
    # B map [0, 1] (1x2): align_corners=False x2 reads positions -0.25, 0.25, 0.75, 1.25 -> 0, .25, .75, 1
    correlation = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 1, 2)
    upsampled = upsample_correlation(correlation, 2, which="b")
    assert upsampled.shape == (1, 1, 1, 2, 4)
    assert torch.allclose(upsampled[0, 0, 0], torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 2))
    # the same values along A when only A is upsampled
    along_a = upsample_correlation(correlation.permute(0, 3, 4, 1, 2), 2, which="a")
    assert along_a.shape == (1, 2, 4, 1, 1)
    assert torch.allclose(along_a[0, :, :, 0, 0], torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 2))


def test_upsample_correlation_both_shapes_and_separability():
    torch.manual_seed(2)
    correlation = torch.randn(2, 2, 3, 3, 1)
    upsampled = upsample_correlation(correlation, (2, 3))
    assert upsampled.shape == (2, 4, 9, 6, 3)
    only_b = F.interpolate(correlation.reshape(12, 1, 3, 1), size=(6, 3), mode="bilinear", align_corners=False)
    only_b = only_b.reshape(2, 2, 3, 6, 3)
    expected = F.interpolate(
        only_b.permute(0, 3, 4, 1, 2).reshape(36, 1, 2, 3), size=(4, 9), mode="bilinear", align_corners=False
    ).reshape(2, 6, 3, 4, 9).permute(0, 3, 4, 1, 2)
    assert torch.allclose(upsampled, expected, atol=1e-6)
    assert torch.allclose(upsample_correlation(correlation, (2, 3), chunk_size=1), upsampled)


def test_upsample_correlation_constant_and_nearest():
    constant = torch.full((1, 2, 2, 3, 3), 0.7)
    assert torch.allclose(upsample_correlation(constant, 4), torch.full((1, 8, 8, 12, 12), 0.7))
    correlation = torch.arange(4.0).reshape(1, 1, 1, 2, 2)
    nearest = upsample_correlation(correlation, 2, mode="nearest", which="b")
    assert torch.equal(nearest[0, 0, 0], torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))


def test_upsample_correlation_errors():
    correlation = torch.zeros(1, 2, 2, 2, 2)
    with pytest.raises(ValueError):
        upsample_correlation(correlation, 0)
    with pytest.raises(ValueError):
        upsample_correlation(correlation, 2, which="c")
    with pytest.raises(ValueError):
        upsample_correlation(correlation, (2, 2, 2))


def test_upsample_correlation_gradcheck():
    torch.manual_seed(3)
    correlation = torch.randn(1, 2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda c: upsample_correlation(c, 2, chunk_size=3), (correlation,))
