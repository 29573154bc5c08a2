"""JLAD losses on hand-made inputs (each equation of Sec. 3.1 / 3.3)."""

import math

import pytest
import torch

from corrmark.losses.jlad import (alignment_probabilities, concentration_loss, default_margin, detection_loss,
                                  equivariance_loss, joint_loss, probabilistic_alignment_loss, separation_loss,
                                  synthetic_alignment_loss, total_loss)
from corrmark.ops import pixel_grid, pixel_to_normalized


def delta_maps(batch, positions, size_hw, value=1.0):
    """(B, K, H, W) maps with one non-zero cell per landmark at positions[k] = (x, y)."""
    height, width = size_hw
    maps = torch.zeros(batch, len(positions), height, width, dtype=torch.float64)
    for k, (x, y) in enumerate(positions):
        maps[:, k, y, x] = value
    return maps


def test_concentration_of_delta_maps_is_zero_whatever_their_mass():
    psi = delta_maps(2, [(0, 0), (3, 5), (7, 7)], (8, 8), value=0.3)
    assert concentration_loss(psi).item() == pytest.approx(0.0, abs=1e-12)


def test_concentration_of_two_equal_deltas_is_their_half_distance_squared():
    # mass 1/2 at x = 1 and x = 5 on an 8-wide grid (normalised step 2/8 = 0.25): variance = (2 * 0.25)^2 = 0.25
    psi = torch.zeros(1, 1, 4, 8, dtype=torch.float64)
    psi[0, 0, 2, 1] = psi[0, 0, 2, 5] = 0.5
    assert concentration_loss(psi).item() == pytest.approx(0.25)
    # summed over landmarks, averaged over the batch
    assert concentration_loss(psi.repeat(3, 2, 1, 1)).item() == pytest.approx(0.5)


def test_separation_of_coincident_landmarks_is_k_k_minus_1_c():
    for k, c in [(10, 0.05), (15, 0.03), (30, 0.02)]:
        points = torch.full((2, k, 2), 0.3, dtype=torch.float64)
        assert separation_loss(points, c).item() == pytest.approx(k * (k - 1) * c)
        assert default_margin(k) == c


def test_separation_hinge_counts_each_ordered_pair():
    points = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    # only the first pair is closer than sqrt(c): squared distance 0.01 < 0.05, both orders count
    assert separation_loss(points, 0.05).item() == pytest.approx(2 * (0.05 - 0.01))
    far = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]])
    assert separation_loss(far, 0.05).item() == 0.0


def test_detection_loss_is_the_weighted_sum():
    psi = delta_maps(1, [(1, 1), (1, 1)], (4, 4))
    points = torch.zeros(1, 2, 2, dtype=torch.float64)
    out = detection_loss(psi, points, 0.05, concentration_weight=2.0, separation_weight=3.0)
    assert out["concentration"].item() == pytest.approx(0.0)
    assert out["separation"].item() == pytest.approx(0.1)
    assert out["detection"].item() == pytest.approx(0.3)


def test_synthetic_alignment_loss_eq1():
    truth = pixel_grid(4, 5, dtype=torch.float64)[None].repeat(2, 1, 1, 1)
    assert synthetic_alignment_loss(truth, truth).item() == 0.0
    shifted = truth + torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert synthetic_alignment_loss(shifted, truth).item() == pytest.approx(25.0)
    valid = torch.zeros(2, 4, 5, dtype=torch.bool)
    valid[:, 0, 0] = True
    bad = truth.clone()
    bad[:, 1:] += 100.0  # errors outside the valid cells do not count
    assert synthetic_alignment_loss(bad, truth, valid).item() == 0.0


def test_equivariance_loss_eq2_with_a_translation():
    size = (8, 8)
    # target pixel p reads source pixel p + (1, 0): the mapping from target to source
    mapping_pixels = pixel_grid(*size, dtype=torch.float64)[None] + torch.tensor([1.0, 0.0], dtype=torch.float64)
    mapping = pixel_to_normalized(mapping_pixels, size)
    points_t = pixel_to_normalized(torch.tensor([[[2.0, 3.0], [5.0, 5.0]]], dtype=torch.float64), size)
    points_s = pixel_to_normalized(torch.tensor([[[3.0, 3.0], [6.0, 5.0]]], dtype=torch.float64), size)
    assert equivariance_loss(points_s, points_t, mapping).item() == pytest.approx(0.0, abs=1e-12)
    # detections off by one pixel in x in the source: normalised error 2/8 per landmark, squared, summed over 2
    off = points_s + torch.tensor([0.25, 0.0], dtype=torch.float64)
    assert equivariance_loss(off, points_t, mapping).item() == pytest.approx(2 * 0.25**2)


def test_probabilistic_alignment_loss_eq6_and_eq7_on_one_hot_features():
    # every cell has its own one-hot feature: with the identity field the centre scores 1, every other cell 0
    height, width, radius, temperature = 5, 5, 1, 0.5
    features = torch.eye(height * width, dtype=torch.float64).reshape(height * width, height, width)[None]
    tau = pixel_grid(height, width, dtype=torch.float64)[None]
    log_probabilities, valid = alignment_probabilities(features, features, tau, radius, temperature)
    assert bool(valid.all())
    interior = log_probabilities[0, :, 2, 2].exp()
    expected_centre = math.exp(1 / temperature) / (math.exp(1 / temperature) + 8)
    assert interior[4].item() == pytest.approx(expected_centre)
    corner = log_probabilities[0, :, 0, 0].exp()  # 4 of the 9 window cells are on the map
    assert corner[4].item() == pytest.approx(math.exp(2) / (math.exp(2) + 3))
    assert corner.sum().item() == pytest.approx(1.0)
    plain = probabilistic_alignment_loss(features, features, tau, None, radius, temperature)
    # with log sigma = s everywhere: CE * exp(-s) + s
    scaled = probabilistic_alignment_loss(features, features, tau, torch.full((1, 1, height, width), 0.7,
                                                                               dtype=torch.float64), radius, temperature)
    assert scaled.item() == pytest.approx(plain.item() * math.exp(-0.7) + 0.7)


def test_joint_loss_eq10():
    height, width = 4, 4
    psi = torch.rand(2, 3, 2 * height, 2 * width, dtype=torch.float64)
    identity = pixel_grid(height, width, dtype=torch.float64)[None].repeat(2, 1, 1, 1)
    assert joint_loss(psi, psi, identity, None).item() == pytest.approx(0.0, abs=1e-12)
    other = torch.zeros_like(psi)
    plain = joint_loss(psi, other, identity, None)
    assert plain.item() == pytest.approx(psi.pow(2).sum(dim=(1, 2, 3)).mean().item())
    log_sigma = torch.full((2, 1, height, width), math.log(4.0), dtype=torch.float64)
    assert joint_loss(psi, other, identity, log_sigma).item() == pytest.approx(plain.item() / 4)


def test_joint_loss_follows_the_field():
    # the target maps are the source maps shifted one heatmap cell right; tau says: source cell i is at i + 1/2
    # feature cells (= 1 heatmap cell with upsample 2) in the target
    height, width = 4, 4
    psi_s = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    psi_s[0, 0, 3, 3] = 1.0
    psi_t = torch.roll(psi_s, 1, dims=3)
    tau = pixel_grid(height, width, dtype=torch.float64)[None] + torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert joint_loss(psi_s, psi_t, tau, None).item() == pytest.approx(0.0, abs=1e-12)
    assert joint_loss(psi_s, psi_t, pixel_grid(height, width, dtype=torch.float64)[None], None).item() > 1.0


def test_total_loss_eq11():
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), (1, 10, 10)).item() == 51.0
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), (10, 1, 100)).item() == 312.0


def test_joint_loss_with_normalised_maps_ignores_the_mass():
    # shrinking every landmark map (probability moved to the background) shrinks the raw eq. (10) but not the
    # normalised variant
    height, width = 4, 4
    identity = pixel_grid(height, width, dtype=torch.float64)[None]
    psi_s = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    psi_s[0, 0, 2, 2] = 1.0
    psi_t = torch.zeros_like(psi_s)
    psi_t[0, 0, 5, 5] = 1.0
    raw = joint_loss(psi_s, psi_t, identity, None)
    assert joint_loss(0.01 * psi_s, 0.01 * psi_t, identity, None).item() == pytest.approx(raw.item() * 1e-4)
    normalised = joint_loss(psi_s, psi_t, identity, None, normalize_maps=True)
    assert joint_loss(0.01 * psi_s, 0.01 * psi_t, identity, None, normalize_maps=True).item() == pytest.approx(
        normalised.item())
