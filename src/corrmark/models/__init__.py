"""Models: one file per method, all behind the ``Matcher`` / ``LandmarkModel`` interfaces of ``base``.

Each method's file registers its loaders (``@register_matcher`` / ``@register_landmark_model`` of
``corrmark.registry``) beside them; ``MATCHERS`` and ``LANDMARK_MODELS`` are those registries (name -> loader).
"""

from __future__ import annotations

import inspect

from ..errors import CheckpointError, UnknownNameError
from ..registry import LANDMARK_MODELS, MATCHERS, Registry
from .base import LandmarkModel, Matcher, read_mapping_at


def available_matchers() -> list[str]:
    return MATCHERS.names()


def load_matcher(name: str, checkpoint=None, device="cpu", **options) -> Matcher:
    """Build a matcher by name (``available_matchers()``); options are the method's config fields.

    >>> matcher = load_matcher("nn", backbone="dinov2_vits14", layers=[8], image_size=224)  # doctest: +SKIP
    """
    return _build(MATCHERS, "matcher", name, checkpoint, device, options)


def load_landmark_model(name: str, checkpoint=None, device="cpu", **options) -> LandmarkModel:
    """Build a landmark model by name (``LANDMARK_MODELS``) from a training checkpoint.

    >>> model = load_landmark_model("jlad", "runs/jlad_mtfl_k10/final.pt")  # doctest: +SKIP
    >>> heatmaps, points = model.detect(images)  # doctest: +SKIP
    """
    return _build(LANDMARK_MODELS, "landmark model", name, checkpoint, device, options)


def _build(registry: Registry, kind: str, name: str, checkpoint, device, options: dict):
    """Look ``name`` up in a registry and call its loader; options left as None mean "the model's default".

    A trained model needs a checkpoint (``load(checkpoint, device=..., **options)``); a model without weights must
    not get one (``load(device=..., **options)``). Options the loader does not take are named in one line."""
    entry = registry.entry(name)
    what = f"'{entry.name}' {kind}"
    options = {key: value for key, value in options.items() if value is not None}
    if not entry.info["trained"]:
        if checkpoint is not None:
            raise UnknownNameError(f"the {what} has no trained weights; drop --checkpoint or pick a trained {kind}")
        return entry.target(device=device, **options)
    if checkpoint is None:
        raise CheckpointError(f"the {what} needs trained weights: pass --checkpoint <{entry.info['checkpoint_hint']}>")
    accepted = _keyword_names(entry.target)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:  # a loader without **options would raise a TypeError traceback instead of this line
        raise UnknownNameError(f"unknown {what} option(s) {', '.join(unknown)}; "
                               f"options: {', '.join(sorted(accepted)) or 'none'}")
    return entry.target(checkpoint, device=device, **options)


def _keyword_names(function) -> set[str] | None:
    """The options a loader takes besides checkpoint and device; None when it takes ``**options`` (checked there)."""
    parameters = inspect.signature(function).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)} - {"checkpoint", "device"}


__all__ = ["LANDMARK_MODELS", "MATCHERS", "LandmarkModel", "Matcher", "available_matchers", "load_landmark_model",
           "load_matcher", "read_mapping_at"]
