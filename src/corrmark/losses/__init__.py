"""Training losses, one module per method (``sfnet`` so far)."""

from .sfnet import (DEFAULT_WEIGHTS, estimate_mask, flow_consistency_loss, flow_field, mask_consistency_loss, sfnet_loss,
                    smoothness_loss)

__all__ = ["DEFAULT_WEIGHTS", "estimate_mask", "flow_consistency_loss", "flow_field", "mask_consistency_loss",
           "sfnet_loss", "smoothness_loss"]
