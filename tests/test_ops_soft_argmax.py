"""Tests of corrmark.ops.soft_argmax: spatial softmax and expectation, soft argmax, 4D soft argmax, SFNet's kernel
soft argmax, the soft argmax around a peak (SCorrSAN) and over a local correlation window (JLAD).

Golden numbers marked "before the ops refactor" were computed with the model-private copies these ops replaced
(JLAD ``expected_coordinates`` / ``window_soft_argmax``, C3 ``expected_points``, SCorrSAN ``window_soft_argmax``).
"""

import math

import pytest
import torch
from torch.autograd import gradcheck

from corrmark.ops import (
    gaussian_kernel_at,
    kernel_matching_probabilities,
    kernel_soft_argmax,
    local_correlation,
    local_correlation_soft_argmax,
    soft_argmax,
    soft_argmax_4d,
    soft_argmax_around_peak,
    spatial_expectation,
    spatial_softmax,
    window_offsets,
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


def seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- spatial softmax and expectation --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 5), (2, 1, 3, 4, 5)])
def test_spatial_softmax_shape_and_unit_mass_for_any_leading_dims(shape):
    probabilities = spatial_softmax(seeded(*shape), beta=3.0)
    assert probabilities.shape == shape
    torch.testing.assert_close(probabilities.sum(dim=(-2, -1)), torch.ones(shape[:-2], dtype=torch.float64))


def test_spatial_softmax_known_values_and_temperature():
    scores = torch.tensor([[0.0, math.log(3.0)]])  # (1, 2) map
    torch.testing.assert_close(spatial_softmax(scores), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(spatial_softmax(scores, beta=2.0), torch.tensor([[0.1, 0.9]]))


def test_spatial_softmax_edge_cases():
    assert spatial_softmax(torch.tensor([[[7.0]]])).item() == 1.0  # a 1 x 1 map
    scores = torch.tensor([[1000.0, float("-inf")], [1000.0, 0.0]])  # no overflow; -inf gets probability 0
    torch.testing.assert_close(spatial_softmax(scores), torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    with pytest.raises(ValueError):
        spatial_softmax(torch.zeros(5))


def test_spatial_softmax_gradcheck():
    scores = seeded(2, 3, 4).requires_grad_()
    assert gradcheck(lambda s: spatial_softmax(s, beta=2.0), (scores,))


def test_spatial_softmax_and_expectation_reproduce_the_numbers_before_the_ops_refactor():
    probabilities = spatial_softmax(seeded(2, 3, 4, 5), beta=3.0)
    assert probabilities[0, 0, 0].tolist() == pytest.approx(
        [1.6795722673277436e-06, 0.0005611689254868489, 7.13305369022883e-05, 0.034485789625808026,
         0.00012123120956763178], rel=1e-12)
    assert spatial_expectation(probabilities)[0].flatten().tolist() == pytest.approx(
        [1.6180382759839977, 1.7708541580906354, 3.6658217121725847, 1.474948921770996, 2.896922813596136,
         1.896835481736292], rel=1e-12)


def test_spatial_expectation_shape_and_known_values_in_both_coordinate_conventions():
    delta = torch.zeros(2, 3, 4, 5)
    delta[..., 2, 3] = 1.0  # row 2, column 3
    points = spatial_expectation(delta)
    assert points.shape == (2, 3, 2)
    assert torch.equal(points, torch.tensor([3.0, 2.0]).expand(2, 3, 2))
    normalized = spatial_expectation(delta, coordinates="normalized")
    torch.testing.assert_close(normalized, torch.tensor([(2 * 3 + 1) / 5 - 1, (2 * 2 + 1) / 4 - 1]).expand(2, 3, 2))
    uniform = torch.full((4, 6), 1.0 / 24)
    torch.testing.assert_close(spatial_expectation(uniform), torch.tensor([2.5, 1.5]))
    torch.testing.assert_close(spatial_expectation(uniform, coordinates="normalized"), torch.zeros(2), atol=1e-6,
                               rtol=0)


def test_spatial_expectation_mass_normalisation_and_empty_maps():
    half = torch.zeros(1, 3, 4)
    half[0, 1, 3] = 0.5  # a map that does not sum to one
    assert torch.equal(spatial_expectation(half), torch.tensor([[1.5, 0.5]]))
    assert torch.equal(spatial_expectation(half, normalize_mass=True), torch.tensor([[3.0, 1.0]]))
    empty = torch.zeros(2, 3, 4, requires_grad=True)
    points = spatial_expectation(empty, normalize_mass=True)
    assert torch.equal(points, torch.zeros(2, 2))  # mass clamped at eps: 0, not NaN
    points.sum().backward()
    assert torch.isfinite(empty.grad).all()
    with pytest.raises(ValueError):
        spatial_expectation(half, coordinates="pixels")
    with pytest.raises(ValueError):
        spatial_expectation(torch.ones(3))


@pytest.mark.parametrize("coordinates", ["cells", "normalized"])
@pytest.mark.parametrize("normalize_mass", [False, True])
def test_spatial_expectation_gradcheck(coordinates, normalize_mass):
    probabilities = seeded(2, 3, 4).abs().requires_grad_()
    assert gradcheck(lambda p: spatial_expectation(p, coordinates, normalize_mass), (probabilities,))


def test_spatial_expectation_reproduces_jlad_eq5_and_c3_points_before_the_ops_refactor():
    psi = torch.softmax(seeded(1, 4, 5, 6), dim=1)[:, 1:]  # JLAD eq. (4): background channel dropped
    assert spatial_expectation(psi, normalize_mass=True).flatten().tolist() == pytest.approx(
        [2.5998935517424857, 1.9697196936993338, 2.1634703781876454, 1.9667495875853702, 2.5995569298478753,
         2.0670558604924865], rel=1e-12)
    psi = spatial_softmax(seeded(2, 3, 4, 6))  # C3
    assert spatial_expectation(psi, coordinates="normalized")[0].flatten().tolist() == pytest.approx(
        [0.20001771204956065, -0.055159715229219475, 0.01592142821043806, 0.06002888820235075, 0.17836768891528781,
         -0.1913316945605407], rel=1e-12)


# --- soft argmax around the peak (SCorrSAN) --------------------------------------------------------------------------


def test_soft_argmax_around_peak_finds_a_peak_far_from_the_centre():
    rows = torch.zeros(1, 2, 32, 32)
    rows[0, 0, 3, 28] = 1.0
    rows[0, 1, 30, 1] = 1.0
    points = soft_argmax_around_peak(rows, beta=50.0, sigma=2.0)
    assert points.shape == (1, 2, 2)
    torch.testing.assert_close(points[0], torch.tensor([[28.0, 3.0], [1.0, 30.0]]), atol=1e-3, rtol=0)


def test_soft_argmax_around_peak_ignores_a_far_second_peak_that_the_kernel_form_averages():
    correlation = two_peak_correlation(near=1.0, far=0.99)  # peaks at x = 1 and x = 8, row 1
    point = soft_argmax_around_peak(correlation[0], beta=5.0, sigma=1.0)[0, 0]  # (1, 1, 3, 10) maps
    assert abs(point[0].item() - 1.0) < 0.1 and abs(point[1].item() - 1.0) < 1e-6
    plain = soft_argmax_4d(correlation, beta=5.0)[0, 0, 0]
    assert plain[0] > 3.0  # without the window the far peak pulls x far to the right


def test_soft_argmax_around_peak_edge_cases():
    assert torch.equal(soft_argmax_around_peak(torch.ones(1, 1, 1, 1), beta=50.0, sigma=1.0), torch.zeros(1, 1, 2))
    zeros = torch.zeros(1, 1, 3, 4, requires_grad=True)
    points = soft_argmax_around_peak(zeros, beta=50.0, sigma=1.0, normalize=True)  # flat map: peak at (0, 0)
    assert torch.isfinite(points).all() and (points < 1.0).all()
    points.sum().backward()
    assert torch.isfinite(zeros.grad).all()
    with pytest.raises(ValueError):
        soft_argmax_around_peak(torch.zeros(1, 3, 4), beta=1.0, sigma=1.0)
    with pytest.raises(ValueError):
        soft_argmax_around_peak(torch.zeros(1, 1, 3, 4), beta=1.0, sigma=0.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_soft_argmax_around_peak_gradcheck(normalize):
    scores = seeded(1, 2, 3, 4).requires_grad_()  # distinct values: the (gradient-free) argmax is stable
    assert gradcheck(lambda s: soft_argmax_around_peak(s, beta=2.0, sigma=1.5, normalize=normalize), (scores,))


@pytest.mark.parametrize("normalize, expected", [
    (False, [3.9332316104731095, 1.0061324371457254, 3.998466448962835, 1.004599525847037, 3.9999324887542658,
             2.999800946888885]),
    (True, [3.7141065197968257, 1.2868028836730727, 4.0320901300983145, 1.4132709366203782, 4.011592402301591,
            2.928337277862884]),
])
def test_soft_argmax_around_peak_reproduces_scorrsan_before_the_ops_refactor(normalize, expected):
    points = soft_argmax_around_peak(seeded(1, 3, 6, 7), beta=5.0, sigma=1.5, normalize=normalize)
    assert points[0].flatten().tolist() == pytest.approx(expected, rel=1e-12)


# --- soft argmax over a local correlation window (JLAD) --------------------------------------------------------------


def test_local_correlation_soft_argmax_shape_and_known_displacement():
    radius = 2
    correlation = torch.zeros(2, 25, 3, 4)
    correlation[:, window_offsets(radius).index((1, -2))] = 1.0  # every cell matches one row down, two columns left
    displacement = local_correlation_soft_argmax(correlation, radius, beta=100.0)
    assert displacement.shape == (2, 2, 3, 4)
    torch.testing.assert_close(displacement, torch.tensor([-2.0, 1.0])[None, :, None, None].expand(2, 2, 3, 4),
                               atol=1e-6, rtol=0)  # channels (dx, dy)
    uniform = local_correlation_soft_argmax(torch.zeros(1, 25, 2, 2), radius, beta=1.0)
    torch.testing.assert_close(uniform, torch.zeros(1, 2, 2, 2))  # the window is symmetric


def test_local_correlation_soft_argmax_edge_cases():
    assert torch.equal(local_correlation_soft_argmax(torch.randn(1, 1, 2, 3), 0, beta=5.0), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError):
        local_correlation_soft_argmax(torch.zeros(1, 9, 2, 2), 2, beta=1.0)  # radius 2 has 25 channels
    with pytest.raises(ValueError):
        local_correlation_soft_argmax(torch.zeros(9, 2, 2), 1, beta=1.0)


def test_local_correlation_soft_argmax_gradcheck():
    correlation = seeded(1, 9, 2, 3).requires_grad_()
    assert gradcheck(lambda c: local_correlation_soft_argmax(c, 1, beta=2.0), (correlation,))


def test_local_correlation_soft_argmax_reproduces_jlad_before_the_ops_refactor():
    generator = torch.Generator().manual_seed(0)
    features_a = torch.randn(1, 4, 3, 5, generator=generator, dtype=torch.float64)
    features_b = torch.randn(1, 4, 3, 5, generator=generator, dtype=torch.float64)
    displacement = local_correlation_soft_argmax(local_correlation(features_a, features_b, 2), 2, beta=5.0)
    assert displacement[0, :, 1].flatten().tolist() == pytest.approx(
        [0.6833118676975721, 0.39553530385580854, -0.3576257259181985, 0.4269529487365314, -0.22420379157409692,
         -0.10353349495696398, -0.24668440085875815, -0.18653698274200609, -0.42496468465640974, 0.3066659351645101],
        rel=1e-12)
