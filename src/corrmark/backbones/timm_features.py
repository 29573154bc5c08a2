"""Any timm model as a multi-scale Backbone through ``features_only=True`` (``timm:<model_name>``).

Layers are timm ``out_indices`` (feature levels: for ResNets 0 = stem (stride 2), 1..4 = layer1..layer4 (strides
4..32)); the output keys are ``stage{index}``. Weights come from a local checkpoint, loaded strictly (the classifier
head may be present or not), or from timm's hub when ``CORRMARK_ALLOW_DOWNLOAD=1``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import CheckpointError, CorrmarkError, UnknownNameError
from ..registry import register_backbone
from ._weights import StateDict, check_state_dict, one_line, read_state_dict, require_download_allowed
from .base import Backbone, FeatureSpec, check_layers

DEFAULT_LAYERS = (2, 3)  # strides 8 and 16 on most CNNs: the resolutions correspondence work matches at


class TimmFeatureBackbone(Backbone):
    """Wraps a timm ``features_only`` model; one output map ``stage{i}`` per out index ``i``."""

    def __init__(self, model: nn.Module, layers: Sequence[int], name: str,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        info = model.feature_info
        specs = {f"stage{layer}": FeatureSpec(channels, stride)
                 for layer, channels, stride in zip(layers, info.channels(), info.reduction())}
        super().__init__(name, specs, mean, std, size_multiple=1)
        self.model = model

    def extract(self, normalised: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.feature_specs, self.model(normalised)))


@register_backbone("timm:", prefix=True)
def build_timm_backbone(model_name: str, layers: Sequence[int] | None = None, weights: str | None = None,
                        name: str | None = None, state: StateDict | None = None) -> TimmFeatureBackbone:
    """``timm:<model_name>`` with weights from ``state`` (already read), the file ``weights``, or timm's hub."""
    name = name or f"timm:{model_name}"
    check_model_name(model_name)
    layers = check_layers(name, DEFAULT_LAYERS if layers is None else layers)
    if state is None and weights is not None:
        state = read_state_dict(weights)
    if state is None:
        require_download_allowed(name)
        model = _create_features(name, model_name, layers, pretrained=True)
    else:
        state = checked_headless_state(model_name, state, str(weights or name))
        overlay = {"state_dict": state}  # timm's way to load given tensors before wrapping the model for features
        model = _create_features(name, model_name, layers, pretrained=True, pretrained_cfg_overlay=overlay)
        # timm keeps the overlay in pretrained_cfg; drop it so the model does not hold a second copy of its weights
        model.pretrained_cfg.pop("state_dict", None)
    config = model.pretrained_cfg
    return TimmFeatureBackbone(model, layers, name, config.get("mean", (0.5,) * 3), config.get("std", (0.5,) * 3))


def check_model_name(model_name: str) -> None:
    """UnknownNameError unless timm knows ``model_name`` (a pretrained tag like ``resnet50.a1_in1k`` is allowed)."""
    import timm  # ~8 s to import: only when a network is built or a name checked

    if not timm.is_model(model_name):
        raise UnknownNameError(f"unknown timm model {model_name!r} (see timm.list_models())")


def create_timm_model(model_name: str, **kwargs) -> nn.Module:
    """``timm.create_model``, an unknown name raising UnknownNameError."""
    import timm  # ~8 s to import: only when a network is built or a name checked

    check_model_name(model_name)
    return timm.create_model(model_name, **kwargs)


def checked_headless_state(model_name: str, state: StateDict, source: str) -> StateDict:
    """``state`` without its classifier, after a strict key/shape check against the headless timm model."""
    model = create_timm_model(model_name, pretrained=False, num_classes=0)
    head = model.pretrained_cfg.get("classifier") or ()
    head_names = (head,) if isinstance(head, str) else tuple(head)
    headless = {key: value for key, value in state.items()
                if not any(key in (f"{part}.weight", f"{part}.bias") for part in head_names)}
    check_state_dict(headless, model.state_dict(), source)
    return headless


def _create_features(name: str, model_name: str, layers: list[int], **kwargs) -> nn.Module:
    try:
        with _quiet_timm_loader():
            return create_timm_model(model_name, features_only=True, out_indices=tuple(layers), **kwargs)
    except CorrmarkError:
        raise
    except (AssertionError, IndexError) as error:  # timm's reaction to out_indices beyond the model's levels
        raise CorrmarkError(f"backbone {name} has no feature levels {layers}: {one_line(error)}") from error
    except Exception as error:  # downloads: network, missing hub weights
        raise CheckpointError(f"cannot create backbone {name} with pretrained weights: {one_line(error)}") from error


@contextmanager
def _quiet_timm_loader():
    # timm warns about the head tensors a features-only model does not use; the checkpoint was checked strictly
    # beforehand, so the warning would only be noise.
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
