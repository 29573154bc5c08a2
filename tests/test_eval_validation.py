"""Label-free validation measures (corrmark.eval.validation) on hand-computed cases."""

import torch

from corrmark.eval.validation import transferred_mask_iou, warp_pck, warp_truth


def identity_grid(height, width):
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def test_warp_truth_of_a_shift_is_the_shifted_cell_centres():
    pixels = identity_grid(8, 8) + torch.tensor([2.0, -1.0])  # every target pixel comes from 2 right, 1 up
    truth = warp_truth(pixels, (2, 2), stride=4.0)
    # cell centres at (g + 0.5) * 4 - 0.5 = 1.5 and 5.5
    expected = torch.tensor([[[3.5, 0.5], [7.5, 0.5]], [[3.5, 4.5], [7.5, 4.5]]])
    assert torch.allclose(truth, expected)


def test_warp_pck_counts_kept_cells_within_the_threshold():
    predicted = identity_grid(2, 2)  # grid cells -> pixel centres 1.5, 5.5 at stride 4
    truth = torch.tensor([[[1.5, 1.5], [5.5 + 3.0, 1.5]], [[1.5, 5.5 + 1.0], [5.5, 5.5]]])  # errors 0, 3, 1, 0
    keep = torch.tensor([[True, True], [True, False]])
    assert warp_pck(predicted, truth, keep, stride=4.0, threshold=2.0) == (2, 3)
    assert warp_pck(predicted, truth, keep, stride=4.0, threshold=3.0) == (3, 3)


def test_transferred_mask_iou_by_hand():
    source = torch.tensor([[1, 1, 0], [0, 0, 0]])
    target = torch.tensor([[0, 1, 1], [0, 0, 0]])
    identity = identity_grid(2, 3)
    assert transferred_mask_iou(identity, source, target) == 1 / 3  # {0,1} vs {1,2}
    shifted = identity - torch.tensor([1.0, 0.0])  # each target cell reads the source cell on its left
    assert transferred_mask_iou(shifted, source, target) == 2 / 3  # cell 0 reads x = -1, clamped to 0: {0,1,2}
    shifted[0, 0, 0] = 2.0  # that cell reads the background instead
    assert transferred_mask_iou(shifted, source, target) == 1.0
    empty = torch.zeros(2, 3)
    assert transferred_mask_iou(identity, empty, empty) == 1.0
