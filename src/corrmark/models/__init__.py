"""Models: one file per method, all behind the ``Matcher`` / ``LandmarkModel`` interfaces of ``base``."""

from __future__ import annotations

import importlib
import inspect

from ..errors import CheckpointError, UnknownNameError
from .base import LandmarkModel, Matcher, read_mapping_at


def _build_nn(checkpoint=None, device="cpu", **options):
    from .zero_shot import NearestNeighbourMatcher

    if checkpoint is not None:
        raise UnknownNameError("the 'nn' matcher has no trained weights; drop --checkpoint or pick a trained matcher")
    return NearestNeighbourMatcher(device=device, **options)


def _trained(module: str, loader: str, what: str, checkpoint_hint: str = "final.pt from corrmark train"):
    """A builder for a trained model: it needs a checkpoint, and imports its module only when used."""

    def build(checkpoint=None, device="cpu", **options):
        if checkpoint is None:
            raise CheckpointError(f"the {what} needs trained weights: pass --checkpoint <{checkpoint_hint}>")
        load = getattr(importlib.import_module(module, __package__), loader)
        accepted = _keyword_names(load)
        unknown = sorted(set(options) - accepted) if accepted is not None else []
        if unknown:  # a loader without **options would raise a TypeError traceback instead of this line
            raise UnknownNameError(f"unknown {what} option(s) {', '.join(unknown)}; "
                                   f"options: {', '.join(sorted(accepted)) or 'none'}")
        return load(checkpoint, device=device, **options)

    return build


def _keyword_names(function) -> set[str] | None:
    """The options a loader takes besides checkpoint and device; None when it takes ``**options`` (checked there)."""
    parameters = inspect.signature(function).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)} - {"checkpoint", "device"}


_build_sfnet = _trained(".sfnet", "load_sfnet", "'sfnet' matcher")
_build_scorrsan = _trained(".scorrsan", "load_scorrsan", "'scorrsan' matcher", "final.pt or selected.pt")
_build_jlad = _trained(".jlad", "load_jlad_matcher", "'jlad' matcher")
_build_jlad_landmarks = _trained(".jlad", "load_jlad_landmarks", "'jlad' landmark model")
_build_c3_landmarks = _trained(".c3", "load_c3_landmarks", "'c3' landmark model")


MATCHERS = {"nn": _build_nn, "sfnet": _build_sfnet, "scorrsan": _build_scorrsan, "jlad": _build_jlad}
LANDMARK_MODELS = {"jlad": _build_jlad_landmarks, "c3": _build_c3_landmarks}


def available_matchers() -> list[str]:
    return sorted(MATCHERS)


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


def _build(registry: dict, kind: str, name: str, checkpoint, device, options: dict):
    """Look ``name`` up in a registry and build it; options left as None mean "the model's default"."""
    try:
        builder = registry[name]
    except KeyError:
        raise UnknownNameError(f"unknown {kind} '{name}'; available: {', '.join(sorted(registry))}") from None
    options = {key: value for key, value in options.items() if value is not None}
    return builder(checkpoint=checkpoint, device=device, **options)


__all__ = ["LANDMARK_MODELS", "LandmarkModel", "Matcher", "available_matchers", "load_landmark_model", "load_matcher",
           "read_mapping_at"]
