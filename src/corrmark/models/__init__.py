"""Models: one file per method, all behind the ``Matcher`` / ``LandmarkModel`` interfaces of ``base``."""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import LandmarkModel, Matcher, read_mapping_at


def _build_nn(checkpoint=None, device="cpu", **options):
    from .zero_shot import NearestNeighbourMatcher

    if checkpoint is not None:
        raise UnknownNameError("the 'nn' matcher has no trained weights; drop --checkpoint or pick a trained matcher")
    return NearestNeighbourMatcher(device=device, **options)


def _build_sfnet(checkpoint=None, device="cpu", **options):
    from ..errors import CheckpointError
    from .sfnet import load_sfnet

    if checkpoint is None:
        raise CheckpointError("the 'sfnet' matcher needs trained weights: pass --checkpoint <final.pt from corrmark train>")
    return load_sfnet(checkpoint, device=device, **options)


def _build_scorrsan(checkpoint=None, device="cpu", **options):
    from ..errors import CheckpointError
    from .scorrsan import load_scorrsan

    if checkpoint is None:
        raise CheckpointError("the 'scorrsan' matcher needs trained weights: pass --checkpoint <final.pt or selected.pt>")
    return load_scorrsan(checkpoint, device=device, **options)


MATCHERS = {"nn": _build_nn, "sfnet": _build_sfnet, "scorrsan": _build_scorrsan}


def available_matchers() -> list[str]:
    return sorted(MATCHERS)


def load_matcher(name: str, checkpoint=None, device="cpu", **options) -> Matcher:
    """Build a matcher by name (``available_matchers()``); options are the method's config fields.

    >>> matcher = load_matcher("nn", backbone="dinov2_vits14", layers=[8], image_size=224)  # doctest: +SKIP
    """
    try:
        builder = MATCHERS[name]
    except KeyError:
        raise UnknownNameError(f"unknown matcher '{name}'; available: {', '.join(available_matchers())}") from None
    options = {key: value for key, value in options.items() if value is not None}
    return builder(checkpoint=checkpoint, device=device, **options)


__all__ = ["LandmarkModel", "Matcher", "available_matchers", "load_matcher", "read_mapping_at"]
