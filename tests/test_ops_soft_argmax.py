"""Tests of corrmark.ops.soft_argmax: soft argmax, 4D soft argmax and SFNet's kernel soft argmax."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from corrmark.ops import (
    gaussian_kernel_at,
    kernel_matching_probabilities,
    kernel_soft_argmax,
    soft_argmax,
    soft_argmax_4d,
)


def two_peak_correlation(near=1.0, far=0.98):
    """``(1, 1, 1, 3, 10)``: peaks at (x=1, y=1) and (x=8, y=1), zero elsewhere."""
    correlation = torch.zeros(1, 1, 1, 3, 10, dtype=torch.float64)
    correlation[..., 1, 1] = near
    correlation[..., 1, 8] = far
    return correlation


def test_soft_argmax_of_delta_with_large_beta():
    scores = torch.zeros(1, 1, 4, 5)
    scores[0, 0, 1, 3] = 1.0
    points, probabilities = soft_argmax(scores, beta=100.0)
    assert points.shape == (1, 1, 2) and probabilities.shape == (1, 1, 4, 5)
    assert torch.allclose(points[0, 0], torch.tensor([3.0, 1.0]), atol=1e-4)
    assert torch.allclose(probabilities.sum(dim=(2, 3)), torch.ones(1, 1))


def test_soft_argmax_uniform_and_symmetric_scores_give_the_mean():
    points, _ = soft_argmax(torch.zeros(2, 3, 4, 7))
    assert torch.allclose(points, torch.tensor([3.0, 1.5]).expand(2, 3, 2))
    scores = torch.zeros(1, 1, 1, 5)
    scores[..., 0] = scores[..., 4] = 10.0
    points, _ = soft_argmax(scores, beta=10.0)
    assert torch.allclose(points[0, 0], torch.tensor([2.0, 0.0]))


def test_soft_argmax_known_probabilities():
    scores = torch.tensor([[[[0.0, math.log(3.0)]]]])  # probabilities 1/4, 3/4
    points, probabilities = soft_argmax(scores, beta=1.0)
    assert torch.allclose(probabilities[0, 0, 0], torch.tensor([0.25, 0.75]))
    assert torch.allclose(points[0, 0], torch.tensor([0.75, 0.0]))
    points_hot, _ = soft_argmax(scores, beta=2.0)  # probabilities 1/10, 9/10
    assert torch.allclose(points_hot[0, 0], torch.tensor([0.9, 0.0]))


def test_soft_argmax_gradcheck():
    torch.manual_seed(0)
    scores = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda s: soft_argmax(s, beta=2.0), (scores,))


def test_soft_argmax_4d_matches_soft_argmax():
    torch.manual_seed(1)
    correlation = torch.randn(2, 3, 2, 4, 5)
    points = soft_argmax_4d(correlation, beta=3.0)
    assert points.shape == (2, 3, 2, 2)
    expected, _ = soft_argmax(correlation.reshape(2, 6, 4, 5), beta=3.0)
    assert torch.allclose(points, expected.reshape(2, 3, 2, 2), atol=1e-6)


def test_gaussian_kernel_values():
    kernel = gaussian_kernel_at(torch.tensor([[2.0, 1.0]]), (3, 5), sigma=2.0)
    assert kernel.shape == (1, 3, 5)
    assert kernel[0, 1, 2] == 1.0
    assert torch.isclose(kernel[0, 1, 4], torch.tensor(math.exp(-0.5)))
    assert torch.isclose(kernel[0, 0, 0], torch.tensor(math.exp(-5.0 / 8.0)))


def test_kernel_suppresses_far_peak_that_plain_soft_argmax_averages():
    correlation = two_peak_correlation()
    kernel_points = kernel_soft_argmax(correlation, beta=50.0, sigma=1.0)
    assert kernel_points.shape == (1, 1, 1, 2)
    assert torch.allclose(kernel_points[0, 0, 0], torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-3)
    plain_points = soft_argmax_4d(correlation, beta=50.0)
    assert plain_points[0, 0, 0, 0] > 2.5  # pulled towards the far peak at x=8


def test_kernel_soft_argmax_follows_the_hard_argmax():
    # swap which peak is higher: the result must jump to the other one
    points = kernel_soft_argmax(two_peak_correlation(near=0.98, far=1.0), beta=50.0, sigma=1.0)
    assert torch.allclose(points[0, 0, 0], torch.tensor([8.0, 1.0], dtype=torch.float64), atol=1e-3)


def test_kernel_matching_probabilities_normalised_and_peaked():
    torch.manual_seed(2)
    correlation = torch.rand(2, 2, 3, 4, 5)
    probabilities = kernel_matching_probabilities(correlation, beta=50.0, sigma=5.0)
    assert probabilities.shape == correlation.shape
    assert torch.allclose(probabilities.sum(dim=(3, 4)), torch.ones(2, 2, 3), atol=1e-5)
    assert torch.equal(probabilities.flatten(3).argmax(3), correlation.flatten(3).argmax(3))


def test_kernel_soft_argmax_zero_correlation_no_nan():
    correlation = torch.zeros(1, 2, 2, 3, 5, requires_grad=True)
    points = kernel_soft_argmax(correlation)
    assert torch.allclose(points, torch.tensor([2.0, 1.0]).expand(1, 2, 2, 2))  # uniform -> centre
    points.sum().backward()
    assert torch.isfinite(correlation.grad).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_kernel_soft_argmax_gradcheck(normalize):
    torch.manual_seed(3)
    correlation = torch.rand(1, 2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda c: kernel_soft_argmax(c, beta=5.0, sigma=1.5, normalize=normalize), (correlation,))


def test_kernel_soft_argmax_gradient_passes_through_soft_part():
    correlation = two_peak_correlation(near=1.0, far=0.5).requires_grad_()
    correlation.data[0, 0, 0, 1, 2] = 0.6  # a neighbour to the right of the peak, inside the kernel
    points = kernel_soft_argmax(correlation, beta=5.0, sigma=2.0)
    points[0, 0, 0, 0].backward()
    assert correlation.grad[0, 0, 0, 1, 2] > 0  # raising the right neighbour moves x to the right
    assert correlation.grad.abs().sum() > 0
