"""Label-free validation of matchers on held-out images: known synthetic warps and class-level mask transfer.

Model selection must not look at the benchmark it is reported on. These two measures need no keypoints:

- **warp PCK**: a held-out image against a random warp of itself (``corrmark.data.synthetic``), whose true mapping is
  known; the fraction of foreground target cells whose predicted source position lies within ``alpha * size``.
- **class mask IoU**: two held-out images of one category; the source's foreground mask carried to the target by the
  predicted target->source mapping, against the target's own mask (SFNet's object-aware measure).

Both take grid mappings as the matchers produce them: ``(h, w, 2)`` (x, y) grid coordinates in the other image's grid.
"""

from __future__ import annotations

import torch

from ..ops import grid_to_pixel, sample_field


def warp_truth(mapping_pixels: torch.Tensor, grid_hw: tuple[int, int], stride: float) -> torch.Tensor:
    """True source pixels of every target cell centre: ``mapping_pixels`` (H, W, 2) -> (h, w, 2) pixels."""
    height, width = grid_hw
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    centres = grid_to_pixel(torch.stack([xs, ys], dim=-1), stride)
    field = mapping_pixels.permute(2, 0, 1)[None].float()  # (1, 2, H, W)
    return sample_field(field, centres.reshape(1, -1, 2), channels_last=False)[0].reshape(height, width, 2)


def warp_pck(predicted_grid: torch.Tensor, truth_pixels: torch.Tensor, keep: torch.Tensor, stride: float,
             threshold: float) -> tuple[int, int]:
    """(correct, counted) target cells: predicted grid positions (h, w, 2) against true pixels (h, w, 2), counting the
    cells where ``keep`` (h, w) is true; correct means within ``threshold`` pixels."""
    error = (grid_to_pixel(predicted_grid, stride) - truth_pixels).norm(dim=-1)
    return int(((error <= threshold) & keep).sum()), int(keep.sum())


def transferred_mask_iou(predicted_grid: torch.Tensor, source_mask: torch.Tensor, target_mask: torch.Tensor) -> float:
    """IoU of the source mask (h_s, w_s) in {0, 1} carried by the target->source grid mapping (h_t, w_t, 2) (nearest
    cell), against the target mask (h_t, w_t). Two empty masks give 1."""
    h_s, w_s = source_mask.shape
    x = predicted_grid[..., 0].round().long().clamp(0, w_s - 1)
    y = predicted_grid[..., 1].round().long().clamp(0, h_s - 1)
    carried = source_mask.bool()[y, x]
    target = target_mask.bool()
    union = int((carried | target).sum())
    return 1.0 if union == 0 else int((carried & target).sum()) / union
