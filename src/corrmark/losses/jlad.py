"""JLAD losses (Jeon et al. 2019, Sec. 3.1 and 3.3), one function per equation.

Conventions (docs/JLAD.md):

- ``tau`` ``(B, h, w, 2)``: for every cell of the *source* feature grid, the ``(x, y)`` target grid coordinates it
  corresponds to (the field that warps ``F^t`` onto the source grid, ``tau o F^t``).
- ``log_sigma`` ``(B, 1, h, w)``: the predicted log-variance of the uncertainty module; ``1 / sigma = exp(-log_sigma)``.
- Landmark probability maps ``psi`` ``(B, K, H, W)`` (eq. 4, background channel dropped) and landmark coordinates in
  the normalised ``[-1, 1]`` coordinates of ``grid_sample`` (``align_corners=False``): the margin ``c`` of eq. (9) and
  the variance of eq. (8) are in those units (so ``c = 0.05`` means a squared distance of 0.05, i.e. landmarks about
  11 % of the image width apart).
- Sums over landmarks ``k`` (and landmark pairs) as in the paper; sums over pixels ``i`` are kept for eqs. (8) and (10)
  (the probability maps carry the scale) but averaged for eqs. (1) and (6) (per-cell classification losses), and
  every loss is averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import check_known_keys
from ..ops import (local_correlation, offset_correlation, pixel_to_normalized, resize_mapping, warp_backward,
                   window_offsets)

#: margin ``c`` of eq. (9) for K = 10, 15, 30 landmarks (paper Sec. 4.1), in normalised coordinates
PAPER_MARGINS = {10: 0.05, 15: 0.03, 30: 0.02}
#: (lambda_D, lambda_A, lambda_J) of eq. (11) in the two alternation stages (paper Sec. 3.4)
ALIGNMENT_STAGE_WEIGHTS = (1.0, 10.0, 10.0)
DETECTION_STAGE_WEIGHTS = (10.0, 1.0, 100.0)


def default_margin(num_landmarks: int) -> float:
    """The paper's margin for 10 / 15 / 30 landmarks; otherwise interpolated in ``1 / K`` (0.5 / K, clamped)."""
    if num_landmarks in PAPER_MARGINS:
        return PAPER_MARGINS[num_landmarks]
    return float(min(0.05, max(0.02, 0.5 / num_landmarks)))


def landmark_loss_options(values: dict | None, defaults: dict, num_landmarks: int, what: str) -> dict:
    """A landmark method's loss settings: ``defaults`` updated by ``values`` (an unknown key is one error naming it);
    a ``margin`` left as None becomes :func:`default_margin` of ``num_landmarks`` (JLAD and C3 share the rule)."""
    options = dict(defaults)
    check_known_keys(values, options, what)
    options.update(values or {})
    if options.get("margin", 0) is None:
        options["margin"] = default_margin(num_landmarks)
    return options


# --- alignment ------------------------------------------------------------------------------------------------------


def synthetic_alignment_loss(tau: torch.Tensor, tau_true: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (1): ``sum_n ||Phi^t_n - tau o Phi^s_n||^2`` with the dense ground truth of a synthetic warp as anchors.

    Args:
        tau: ``(B, h, w, 2)`` predicted target grid coordinates of every source cell.
        tau_true: ``(B, h, w, 2)`` the true ones (same units, feature cells).
        valid: ``(B, h, w)`` bool, cells whose true match lies inside the target (default: all).

    Returns:
        the mean over valid cells of the squared error, in cells^2.
    """
    error = (tau - tau_true).pow(2).sum(dim=-1)
    if valid is None:
        return error.mean()
    weights = valid.to(error.dtype)
    return (error * weights).sum() / weights.sum().clamp_min(1.0)


def alignment_probabilities(features_s: torch.Tensor, features_t: torch.Tensor, tau: torch.Tensor, radius: int = 2,
                            temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (7): ``s_{i,j}(tau) = softmax_{j in M_i} <F^s_i, [tau o F^t]_j> / T`` over the ``(2m+1)^2`` window
    ``M_i`` around source cell ``i`` (``m = radius``).

    ``T`` (``temperature``) is not in the paper's equation; with L2-normalised features the scores lie in
    ``[-1, 1]`` and a temperature makes the softmax peaky enough to learn from. Window cells outside the map are
    excluded from the softmax.

    Returns:
        ``log_probabilities`` ``(B, (2m+1)^2, h, w)`` (channel order of ``window_offsets(m)``; the centre channel is
        ``j = i``), and ``valid`` ``(B, h, w)``: ``tau`` points inside the target grid.
    """
    warped, valid = warp_backward(features_t, tau, mode="bilinear", padding_mode="border")  # tau o F^t on source grid
    offsets = window_offsets(radius)
    raw_scores = local_correlation(features_s, warped, radius, normalize_window=False, normalize_features=False)
    scores = raw_scores / temperature
    ones = torch.ones_like(features_s[:1, :1])
    inside = offset_correlation(ones, ones, offsets, normalize=False) > 0.5  # window cell on the map
    scores = scores.masked_fill(~inside, float("-inf"))
    return torch.log_softmax(scores, dim=1), valid


def probabilistic_alignment_loss(features_s: torch.Tensor, features_t: torch.Tensor, tau: torch.Tensor,
                                 log_sigma: torch.Tensor | None, radius: int = 2, temperature: float = 0.1,
                                 ) -> torch.Tensor:
    """Eq. (6): ``sum_i ( -sum_{j in M_i} s*_j / sigma_i log s_{i,j}(tau_i) + log sigma_i )`` with ``s*_j = 1`` iff
    ``j = i`` (the centre of the window is the positive, the rest of ``M_i`` the negatives), ``s`` from eq. (7).

    Args:
        features_s, features_t: ``(B, C, h, w)`` L2-normalised ``F^s``, ``F^t``.
        tau: ``(B, h, w, 2)`` target grid coordinates of every source cell.
        log_sigma: ``(B, 1, h, w)`` predicted log sigma, or None for the plain cross entropy (sigma = 1, "wo/UM").
        radius, temperature: see :func:`alignment_probabilities`.

    Returns:
        the mean over source cells whose ``tau`` lies inside the target (and over the batch).
    """
    log_probabilities, valid = alignment_probabilities(features_s, features_t, tau, radius, temperature)
    centre = len(window_offsets(radius)) // 2
    cross_entropy = -log_probabilities[:, centre]  # (B, h, w)
    if log_sigma is not None:
        log_sigma = log_sigma[:, 0]
        cross_entropy = cross_entropy * torch.exp(-log_sigma) + log_sigma
    weights = valid.to(cross_entropy.dtype)
    return (cross_entropy * weights).sum() / weights.sum().clamp_min(1.0)


# --- detection ------------------------------------------------------------------------------------------------------


def _normalized_axes(psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``[-1, 1]`` x coordinates ``(W,)`` and y coordinates ``(H,)`` of the cell centres of ``psi``."""
    height, width = psi.shape[-2:]
    xs = (2 * torch.arange(width, device=psi.device, dtype=psi.dtype) + 1) / width - 1
    ys = (2 * torch.arange(height, device=psi.device, dtype=psi.dtype) + 1) / height - 1
    return xs, ys


def concentration_loss(psi: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. (8): ``sum_k sum_i (i - psi_hat^k)^2 psi^k_i / sum_i psi^k_i``, the spatial variance of every landmark
    map about its expected coordinate (eq. 5), in normalised coordinates; summed over ``k``, averaged over the batch.

    Args:
        psi: ``(B, K, H, W)`` non-negative maps (need not sum to one). A map that is a single delta gives 0.
    """
    xs, ys = _normalized_axes(psi)
    mass = psi.sum(dim=(-2, -1)).clamp_min(eps)  # (B, K)
    marginal_x, marginal_y = psi.sum(dim=-2), psi.sum(dim=-1)  # (B, K, W), (B, K, H)
    mean_x = (marginal_x * xs).sum(-1) / mass
    mean_y = (marginal_y * ys).sum(-1) / mass
    variance_x = (marginal_x * (xs - mean_x[..., None]).pow(2)).sum(-1) / mass
    variance_y = (marginal_y * (ys - mean_y[..., None]).pow(2)).sum(-1) / mass
    return (variance_x + variance_y).sum(dim=1).mean()


def separation_loss(points: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. (9): ``sum_k sum_{k' != k} max(0, c - ||psi_hat^k - psi_hat^k'||^2)``, averaged over the batch.

    The double sum runs over *ordered* pairs, so K coincident landmarks give ``K (K - 1) c``.

    Args:
        points: ``(B, K, 2)`` landmark coordinates (normalised units, see the module docstring).
        margin: ``c``.
    """
    squared = (points[:, :, None, :] - points[:, None, :, :]).pow(2).sum(dim=-1)  # (B, K, K)
    hinge = (margin - squared).clamp_min(0.0)
    off_diagonal = ~torch.eye(points.shape[1], dtype=torch.bool, device=points.device)
    return (hinge * off_diagonal).sum(dim=(1, 2)).mean()


def detection_loss(psi: torch.Tensor, points: torch.Tensor, margin: float, concentration_weight: float = 1.0,
                   separation_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """``L_D = lambda_con L_con (eq. 8) + lambda_sep L_sep (eq. 9)``; returns ``{"detection", "concentration",
    "separation"}``."""
    concentration = concentration_loss(psi)
    separation = separation_loss(points, margin)
    return {"detection": concentration_weight * concentration + separation_weight * separation,
            "concentration": concentration, "separation": separation}


def equivariance_loss(points_s: torch.Tensor, points_t: torch.Tensor, mapping_t_to_s: torch.Tensor) -> torch.Tensor:
    """Eq. (2): ``sum_m ||phi_m(x^t) - T o phi_m(x^s)||^2`` for a known dense correspondence ``T``.

    Written with the target-to-source mapping the synthetic warps give: the landmarks detected in the target, carried
    into the source by the mapping, must coincide with those detected in the source,
    ``sum_m ||T^{-1}(phi_m(x^t)) - phi_m(x^s)||^2`` (the same constraint, measured on the source side).

    Args:
        points_s, points_t: ``(B, K, 2)`` normalised ``[-1, 1]`` coordinates (both images have the same size).
        mapping_t_to_s: ``(B, h, w, 2)`` on the target (any resolution), values normalised source coordinates.

    Returns:
        squared distance summed over landmarks, averaged over the batch.
    """
    grid = points_t[:, None]  # (B, 1, K, 2): grid_sample reads the mapping at the target landmarks
    carried = F.grid_sample(mapping_t_to_s.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[:, :, 0].transpose(1, 2)  # (B, K, 2)
    return (carried - points_s).pow(2).sum(dim=-1).sum(dim=1).mean()


# --- joint ----------------------------------------------------------------------------------------------------------


def tau_on_heatmap_grid(tau: torch.Tensor, heatmap_hw: tuple[int, int]) -> torch.Tensor:
    """``tau`` on the feature grid (values in target feature cells) -> on a finer heatmap grid (values in target
    heatmap cells), cell-centre aligned (``ops.resize_mapping``)."""
    grid_hw = tuple(tau.shape[1:3])
    return resize_mapping(tau, heatmap_hw, grid_hw, heatmap_hw, extrapolate=True)


def joint_loss(psi_s: torch.Tensor, psi_t: torch.Tensor, tau: torch.Tensor, log_sigma: torch.Tensor | None,
               normalize_maps: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Eq. (10): ``sum_k sum_i (1 / sigma_i) ||psi^k_i(x^s) - [tau o psi^k(x^t)]_i||^2``, averaged over the batch.

    The target maps are warped onto the source grid with ``tau`` (resampled to the heatmap resolution) and compared
    with the source maps; ``sigma`` (upsampled bilinearly) discounts unreliable matches. Gradients reach the detector
    (both maps), the alignment (``tau``) and the uncertainty (``log_sigma``).

    Measured degenerate case (docs/JLAD.md): on the raw eq. (4) maps, the detector can make this loss vanish by moving
    all probability to the background channel (tiny landmark maps differ by tiny amounts), while eq. (5) coordinates,
    normalised by the map's mass, survive. ``normalize_maps=True`` (our fix, not in the paper) compares the maps
    divided by their spatial sums, ``psi^k / sum_i psi^k_i``, which that escape does not reduce.

    Args:
        psi_s, psi_t: ``(B, K, H, W)`` probability maps (eq. 4).
        tau: ``(B, h, w, 2)`` feature-grid field (target feature cells).
        log_sigma: ``(B, 1, h, w)`` or None (sigma = 1).
        normalize_maps: divide each map by its spatial sum first.
    """
    if normalize_maps:
        psi_s = psi_s / psi_s.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)
        psi_t = psi_t / psi_t.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)
    heatmap_hw = tuple(psi_s.shape[-2:])
    field = tau_on_heatmap_grid(tau, heatmap_hw)
    warped, _ = warp_backward(psi_t, field, mode="bilinear", padding_mode="zeros")
    squared = (psi_s - warped).pow(2)  # (B, K, H, W)
    if log_sigma is not None:
        inverse_sigma = torch.exp(-F.interpolate(log_sigma, size=heatmap_hw, mode="bilinear", align_corners=False))
        squared = squared * inverse_sigma
    return squared.sum(dim=(1, 2, 3)).mean()


def total_loss(detection: torch.Tensor, alignment: torch.Tensor, joint: torch.Tensor,
               weights: tuple[float, float, float]) -> torch.Tensor:
    """Eq. (11): ``L_JDA = lambda_D L_D + lambda_A L_A + lambda_J L_J`` with ``weights = (lambda_D, lambda_A,
    lambda_J)`` (paper: (1, 10, 10) for the alignment stage, (10, 1, 100) for the detection stage)."""
    lambda_d, lambda_a, lambda_j = weights
    return lambda_d * detection + lambda_a * alignment + lambda_j * joint


def normalized_mapping(mapping: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """A mapping's values (pixels of a ``source_hw`` map) -> normalised ``[-1, 1]`` coordinates."""
    return pixel_to_normalized(mapping, source_hw)
