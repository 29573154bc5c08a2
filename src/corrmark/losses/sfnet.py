"""SFNet losses (Lee et al., CVPR 2019, Sec. 3.2): mask consistency, flow consistency and smoothness.

Equation numbers follow the paper: (1) correlation, (2) kernel soft argmax, (3) matching probability, (4) total loss,
(5) flow field, (6) mask estimate by warping, (7) mask consistency, (8) flow consistency, (9) the warped flow used in
(8), (10) smoothness.

Conventions here. Flows live on feature grids: ``mapping_s2t`` ``(B, h_s, w_s, 2)`` holds, for each source cell, the
``(x, y)`` grid coordinates of its match in the target grid (``corrmark.ops.kernel_soft_argmax`` output);
``mapping_t2s`` the reverse. The flow of (5) is ``F_st(p) = mapping_s2t(p) - p``. Losses measure flows in
``grid_sample``'s normalised units (the grid spans [-1, 1], one cell = 2 / w), the units of the reference
implementation the paper's weights (3, 16, 0.5) were tuned in. Masks are ``(B, 1, h, w)`` floats in [0, 1] on the
same grids (area-downsampled binary masks).
"""

from __future__ import annotations

import torch

from ..ops import compose_mappings, pixel_grid, warp_backward

DEFAULT_WEIGHTS = {"mask": 3.0, "flow": 16.0, "smooth": 0.5}
_EPS = 1e-6


def _to_normalised(coords: torch.Tensor, size_hw) -> torch.Tensor:
    """Grid (x, y) -> [-1, 1] units: x_n = (2x + 1) / w - 1."""
    height, width = size_hw
    scale = coords.new_tensor([2.0 / width, 2.0 / height])
    return (coords + 0.5) * scale - 1.0


def _identity(mapping: torch.Tensor) -> torch.Tensor:
    return pixel_grid(mapping.shape[1], mapping.shape[2], device=mapping.device, dtype=mapping.dtype)


def flow_field(mapping: torch.Tensor, values_hw) -> torch.Tensor:
    """Eq. (5): the flow ``F(p) = m(p) - p`` in normalised units, ``m`` defined on its grid and pointing into a grid
    of size ``values_hw`` (positions are normalised on their own grid, so grids of different sizes are handled)."""
    own_hw = mapping.shape[1:3]
    return _to_normalised(mapping, values_hw) - _to_normalised(_identity(mapping), own_hw)


def estimate_mask(other_mask: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """Eq. (6): ``M_hat_s = W(M_t; F_st)``: the other image's mask read at each cell's match (bilinear, zero outside).

    Args:
        other_mask: ``(B, 1, h_t, w_t)``; mapping: ``(B, h_s, w_s, 2)`` grid coordinates in the other grid.
    """
    warped, _ = warp_backward(other_mask, mapping, mode="bilinear", padding_mode="zeros")
    return warped


def mask_consistency_loss(mapping_s2t: torch.Tensor, mapping_t2s: torch.Tensor, mask_s: torch.Tensor,
                          mask_t: torch.Tensor) -> torch.Tensor:
    """Eq. (7): ``||M_s - W(M_t; F_st)||^2 / |M_s| + ||M_t - W(M_s; F_ts)||^2 / |M_t|`` (|M| = number of cells),
    averaged over the batch. Zero when each mask is reproduced exactly by warping the other one."""
    error_s = (mask_s - estimate_mask(mask_t, mapping_s2t)).pow(2).flatten(1).mean(1)
    error_t = (mask_t - estimate_mask(mask_s, mapping_t2s)).pow(2).flatten(1).mean(1)
    return (error_s + error_t).mean()


def _foreground_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` (B, h, w) weighted by the foreground ``mask`` (B, 1, h, w), over its foreground count;
    averaged over the batch (pairs with an empty mask contribute 0)."""
    weights = mask[:, 0]
    return ((values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1.0)).mean()


def flow_consistency_loss(mapping_s2t: torch.Tensor, mapping_t2s: torch.Tensor, mask_s: torch.Tensor,
                          mask_t: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``sum_p ||M_s(p) (F_st(p) + F_hat_st(p))||_2 / |M_s fg|`` plus the same for the target, where
    eq. (9) ``F_hat_st = W(F_ts; F_st)`` is the target-to-source flow read at each source cell's match. A perfect
    one-to-one correspondence (forward and backward flows cancel) gives 0. Mask-weighted L2 norm per cell (smoothed
    by a tiny epsilon so the gradient at an exact round trip is finite)."""
    source_hw, target_hw = mapping_s2t.shape[1:3], mapping_t2s.shape[1:3]
    losses = []
    for forward, backward, mask, own_hw, other_hw in ((mapping_s2t, mapping_t2s, mask_s, source_hw, target_hw),
                                                      (mapping_t2s, mapping_s2t, mask_t, target_hw, source_hw)):
        flow_forward = flow_field(forward, other_hw)
        flow_backward = flow_field(backward, own_hw).permute(0, 3, 1, 2)  # on the other grid
        warped_backward, _ = warp_backward(flow_backward, forward, mode="bilinear", padding_mode="border")
        total = flow_forward + warped_backward.permute(0, 2, 3, 1)  # F_st + F_hat_st
        losses.append(_foreground_mean(torch.sqrt(total.pow(2).sum(-1) + _EPS**2) - _EPS, mask))
    return losses[0] + losses[1]


def smoothness_loss(mapping_s2t: torch.Tensor, mapping_t2s: torch.Tensor, mask_s: torch.Tensor,
                    mask_t: torch.Tensor) -> torch.Tensor:
    """Eq. (10): ``sum_p ||M_s(p) grad F_st(p)||_1 / |M_s fg|`` plus the same for the target: first-order forward
    differences of both flow components along x and y, inside the foreground. Constant flows give 0."""
    losses = []
    for mapping, mask, other_hw in ((mapping_s2t, mask_s, mapping_t2s.shape[1:3]),
                                    (mapping_t2s, mask_t, mapping_s2t.shape[1:3])):
        flow = flow_field(mapping, other_hw)
        grad_x = (flow[:, :, 1:] - flow[:, :, :-1]).abs().sum(-1)  # (B, h, w-1)
        grad_y = (flow[:, 1:] - flow[:, :-1]).abs().sum(-1)  # (B, h-1, w)
        losses.append(_foreground_mean(grad_x, mask[..., :, :-1]) + _foreground_mean(grad_y, mask[..., :-1, :]))
    return losses[0] + losses[1]


def sfnet_loss(mapping_s2t: torch.Tensor, mapping_t2s: torch.Tensor, mask_s: torch.Tensor, mask_t: torch.Tensor,
               weights: dict | None = None) -> dict[str, torch.Tensor]:
    """Eq. (4): ``lambda_mask L_mask + lambda_flow L_flow + lambda_smooth L_smooth`` (default weights 3, 16, 0.5).

    A weight of 0 skips its term (for ablations). Returns ``{"loss", "mask", "flow", "smooth"}``.
    """
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    terms = {"mask": mask_consistency_loss, "flow": flow_consistency_loss, "smooth": smoothness_loss}
    out = {}
    total = mapping_s2t.new_zeros(())
    for name, function in terms.items():
        if weights[name]:
            value = function(mapping_s2t, mapping_t2s, mask_s, mask_t)
            total = total + weights[name] * value
            out[name] = value.detach()
    out["loss"] = total
    return out


def cycle_consistency_error(mapping_s2t: torch.Tensor, mapping_t2s: torch.Tensor) -> torch.Tensor:
    """Mean source-grid distance (cells) of the round trip s -> t -> s: a training diagnostic."""
    round_trip = compose_mappings(mapping_t2s, mapping_s2t)
    return torch.linalg.vector_norm(round_trip - _identity(mapping_s2t), dim=-1).mean()
