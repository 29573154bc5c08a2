"""SFNet losses on hand-made flows and masks (eqs. 6-10 of the paper)."""

import torch

from corrmark.losses import (estimate_mask, flow_consistency_loss, flow_field, mask_consistency_loss, sfnet_loss,
                             smoothness_loss)
from corrmark.ops import pixel_grid


def identity(batch=2, h=6, w=7):
    return pixel_grid(h, w)[None].repeat(batch, 1, 1, 1)


def blob_mask(batch=2, h=6, w=7):
    mask = torch.zeros(batch, 1, h, w)
    mask[:, :, 1:5, 2:6] = 1
    return mask


def test_identity_flow_and_same_masks_give_zero():
    mapping, mask = identity(), blob_mask()
    assert torch.allclose(estimate_mask(mask, mapping), mask, atol=1e-5)
    assert mask_consistency_loss(mapping, mapping, mask, mask).item() < 1e-10
    assert flow_consistency_loss(mapping, mapping, mask, mask).item() < 1e-5
    assert smoothness_loss(mapping, mapping, mask, mask).item() < 1e-6


def test_mask_loss_penalises_foreground_to_background():
    mask = blob_mask()
    shifted = identity().clone()
    shifted[..., 0] -= 3  # every source cell matches 3 cells to the left: foreground lands on background
    assert mask_consistency_loss(shifted, identity(), mask, mask) > 0.1


def test_constant_flow_is_smooth_and_translation_is_consistent():
    forward = identity().clone()
    forward[..., 0] += 1.0
    backward = identity().clone()
    backward[..., 0] -= 1.0
    mask = torch.zeros(2, 1, 6, 7)
    mask[:, :, :, 1:5] = 1  # foreground whose round trip stays on the grid
    assert smoothness_loss(forward, backward, mask, mask).item() < 1e-6
    assert flow_consistency_loss(forward, backward, mask, mask).item() < 1e-5
    # a one-to-many backward flow breaks the round trip
    assert flow_consistency_loss(forward, identity(), mask, mask).item() > 0.1


def test_flow_units_and_smoothness_value():
    mapping = identity(1, 4, 4).clone()
    mapping[0, :, 2:, 0] += 1.0  # a step of one cell between columns 1 and 2
    flow = flow_field(mapping, (4, 4))
    assert torch.allclose(flow[0, 0, 3, 0], torch.tensor(0.5))  # one cell of a 4-wide grid = 2/4
    ones = torch.ones(1, 1, 4, 4)
    # one x-difference of 0.5 per row (4 rows) over 12 foreground cells; y-differences are 0
    expected = 0.5 * 4 / 12
    assert torch.allclose(smoothness_loss(mapping, identity(1, 4, 4), ones, ones), torch.tensor(expected))


def test_total_loss_weights_and_ablation():
    mapping, mask = identity(), blob_mask()
    shifted = mapping.clone()
    shifted[..., 1] += 2
    out = sfnet_loss(shifted, mapping, mask, mask)
    expected = 3 * out["mask"] + 16 * out["flow"] + 0.5 * out["smooth"]
    assert torch.allclose(out["loss"], expected)
    only_mask = sfnet_loss(shifted, mapping, mask, mask, {"flow": 0, "smooth": 0})
    assert set(only_mask) == {"mask", "loss"}
