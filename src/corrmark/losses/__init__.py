"""Training losses, one module per method (``sfnet``, ``scorrsan``, ``jlad``, ``c3``), with the papers' equation numbers."""

from .scorrsan import (dilate_mask, keypoint_mask, mask_positions, pseudo_label_loss, select_small_losses,
                       selection_ratio, sparse_flow_loss)

from .sfnet import (DEFAULT_WEIGHTS, estimate_mask, flow_consistency_loss, flow_field, mask_consistency_loss, sfnet_loss,
                    smoothness_loss)
from .jlad import (concentration_loss, default_margin, detection_loss, equivariance_loss, joint_loss,
                   probabilistic_alignment_loss, separation_loss, synthetic_alignment_loss, total_loss)

__all__ = ["DEFAULT_WEIGHTS", "estimate_mask", "flow_consistency_loss", "flow_field", "mask_consistency_loss",
           "sfnet_loss", "smoothness_loss", "dilate_mask", "keypoint_mask", "mask_positions", "pseudo_label_loss",
           "select_small_losses", "selection_ratio", "sparse_flow_loss",
           "concentration_loss", "default_margin", "detection_loss", "equivariance_loss", "joint_loss",
           "probabilistic_alignment_loss", "separation_loss", "synthetic_alignment_loss", "total_loss"]
