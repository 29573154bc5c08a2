"""SCorrSAN losses: the sparse (high-resolution) keypoint loss and the denoised dense pseudo-label loss.

- ``sparse_flow_loss`` (paper eq. 4): mean L2 distance between predicted and ground-truth flow at the labelled
  positions (sub-pixel keypoints, so the loss lives at the resolution of the upsampled correlation).
- ``keypoint_mask`` / ``dilate_mask`` (eqs. 9-12): the sparse label mask on the fine grid (the cell holding each
  valid keypoint) dilated by a ``k x k`` box of ones (convolution with zero padding, then ``> 0``).
- ``select_small_losses`` (eqs. 14-15): inside each pair's dilated mask keep the ``ceil(ratio * n)`` positions with
  the smallest pseudo-label loss (small-loss principle); ``selection_ratio`` rises linearly over the first epochs.
- ``pseudo_label_loss`` (eqs. 13, 16): mean L2 distance between the student's flow and the (detached) teacher's flow
  over the selected positions. No gradient reaches positions outside the mask or not selected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def flow_distance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position Euclidean distance ``(B, N)`` between ``(B, N, 2)`` flows; NaN targets give 0 (and no grad)."""
    difference = predicted - torch.nan_to_num(target)
    return torch.sqrt(difference.pow(2).sum(dim=-1) + 1e-8)


def sparse_flow_loss(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance over the valid keypoints of the batch (0 when there is none).

    Args:
        predicted, target: ``(B, K, 2)`` pixel flows (the source position of each target keypoint).
        valid: ``(B, K)`` bool.
    """
    weights = valid.to(predicted.dtype)
    return (flow_distance(predicted, target) * weights).sum() / weights.sum().clamp(min=1.0)


def keypoint_mask(points: torch.Tensor, valid: torch.Tensor, cells: int, cell_size: float) -> torch.Tensor:
    """Sparse label mask ``(B, 1, cells, cells)``: 1 at the fine cell containing each valid keypoint.

    Args:
        points: ``(B, K, 2)`` ``(x, y)`` pixels of a square input covered by ``cells x cells`` cells of ``cell_size``.
        valid: ``(B, K)`` bool.
    """
    batch = points.shape[0]
    mask = torch.zeros(batch, cells * cells, dtype=torch.float32, device=points.device)
    index = torch.floor((torch.nan_to_num(points) + 0.5) / cell_size).long().clamp(0, cells - 1)
    flat = index[..., 1] * cells + index[..., 0]
    # add (not write) so an invalid keypoint sharing a cell with a valid one cannot erase it
    mask = mask.scatter_add_(1, flat, valid.to(mask.dtype)).clamp(max=1.0)
    return mask.reshape(batch, 1, cells, cells)


def dilate_mask(mask: torch.Tensor, kernel_size: int = 7) -> torch.Tensor:
    """Binary dilation ``(conv(mask, ones(k, k)) > 0)`` with zero padding; ``(B, 1, h, w)`` -> same shape, float 0/1.

    ``kernel_size`` 1 (or 0) returns the mask itself (no dilation).
    """
    if kernel_size <= 1:
        return (mask > 0).to(torch.float32)
    if kernel_size % 2 == 0:
        raise ValueError(f"the dilation kernel size must be odd, got {kernel_size}")
    ones = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float32, device=mask.device)
    return (F.conv2d(mask.to(torch.float32), ones, padding=kernel_size // 2) > 0).to(torch.float32)


def mask_positions(mask: torch.Tensor, cell_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel centres of the mask's non-zero cells, padded per pair.

    Args:
        mask: ``(B, 1, n, n)``.

    Returns:
        ``points`` ``(B, M, 2)`` pixels (padding rows repeat a valid cell centre, so they stay finite) and ``valid``
        ``(B, M)`` bool, ``M`` = the largest count in the batch (at least 1).
    """
    batch, _, height, width = mask.shape
    flat = mask.reshape(batch, -1) > 0
    counts = flat.sum(dim=1)
    size = max(1, int(counts.max()))
    # stable sort puts the masked cells first, in row-major order
    order = torch.argsort((~flat).to(torch.int8), dim=1, stable=True)[:, :size]
    valid = torch.arange(size, device=mask.device)[None] < counts[:, None]
    xs = (order % width).to(torch.float32)
    ys = torch.div(order, width, rounding_mode="floor").to(torch.float32)
    points = (torch.stack([xs, ys], dim=-1) + 0.5) * cell_size - 0.5
    return points, valid


def selection_ratio(epoch: float, start: float = 0.5, end: float = 1.0, ramp_epochs: float = 10.0) -> float:
    """Fraction of masked positions kept at ``epoch``: linear from ``start`` (epoch 0) to ``end`` (``ramp_epochs``)."""
    if ramp_epochs <= 0:
        return float(end)
    progress = min(max(float(epoch) / float(ramp_epochs), 0.0), 1.0)
    return float(start + (end - start) * progress)


def select_small_losses(losses: torch.Tensor, valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per pair, keep the ``ceil(ratio * n_valid)`` valid positions with the smallest loss.

    Args:
        losses: ``(B, M)`` per-position losses (compared detached).
        valid: ``(B, M)`` bool, the positions inside the (dilated) mask.
        ratio: in ``(0, 1]``; 1 keeps every valid position.

    Returns:
        ``(B, M)`` bool, a subset of ``valid``. Ties are broken by position order (lowest index first).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"the selection ratio must be in (0, 1], got {ratio}")
    counts = valid.sum(dim=1)
    keep = torch.ceil(counts.to(torch.float64) * ratio - 1e-9).long().clamp(min=0)
    keep = torch.minimum(keep, counts)
    scores = torch.where(valid, losses.detach(), torch.full_like(losses, math.inf))
    order = torch.argsort(scores, dim=1, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return valid & (ranks < keep[:, None])


def pseudo_label_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, ratio: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense pseudo-label loss over the dilated mask with dynamic selection.

    Args:
        student: ``(B, M, 2)`` student flow at the mask positions.
        teacher: ``(B, M, 2)`` teacher flow there (detached here).
        valid: ``(B, M)`` bool, positions inside the dilated mask.
        ratio: fraction kept by :func:`select_small_losses`.

    Returns:
        ``loss`` (mean distance over the selected positions, 0 when none) and ``selected`` ``(B, M)`` bool.
    """
    distances = flow_distance(student, teacher.detach())
    selected = select_small_losses(distances, valid, ratio)
    weights = selected.to(distances.dtype)
    return (distances * weights).sum() / weights.sum().clamp(min=1.0), selected
