"""Evaluation experiments as data: a YAML file (or dict) naming the dataset, the protocol and the matcher.

    dataset: pf-willow
    root: ../shared/data/pf-willow      # optional; the command line's --root wins
    split: all
    protocol: {direction: t2s, threshold: kp-bbox, averaging: pair, alphas: [0.05, 0.1, 0.15], resolution: original}
    matcher: {name: nn, options: {backbone: dinov2_vits14, layers: [8], image_size: 224}}
    dataset_options: {breeds: [weimaraner]}  # optional: options of the dataset's loader (open_dataset)
    every: 5                            # optional: score every 5th pair only (a stratified subset)
    eyes: [0, 1]                        # optional (faces): also the inter-ocular PCK, eyes = these keypoints

Command-line values override the file; every result records the merged experiment and the file it came from.
"""

from __future__ import annotations

import copy

from ..errors import CorrmarkError
from .pck import PCKProtocol

PROTOCOL_DEFAULTS = {"direction": "t2s", "threshold": "kp-bbox", "averaging": "pair",
                     "alphas": [0.05, 0.1, 0.15], "resolution": "original"}
KNOWN_KEYS = {"dataset", "root", "split", "protocol", "matcher", "description", "name", "config_file",
              "dataset_options", "every", "eyes"}


def resolve_eval_experiment(config: dict | None, overrides: dict) -> dict:
    """Merge a config with command-line overrides (None = not given) into a complete experiment."""
    config = copy.deepcopy(config or {})
    unknown = set(config) - KNOWN_KEYS
    if unknown:
        raise CorrmarkError(f"unknown config keys: {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}")
    matcher = config.get("matcher") or {}
    experiment = {
        "dataset": overrides.get("dataset") or config.get("dataset"),
        "root": overrides.get("root") or config.get("root"),
        "split": overrides.get("split") or config.get("split"),
        "protocol": {**PROTOCOL_DEFAULTS, **(config.get("protocol") or {}),
                     **_given(overrides.get("protocol", {}))},
        "matcher": {
            "name": overrides.get("matcher") or matcher.get("name", "nn"),
            "checkpoint": overrides.get("checkpoint") or matcher.get("checkpoint"),
            "options": {**(matcher.get("options") or {}), **_given(overrides.get("matcher_options", {}))},
        },
        "dataset_options": {**(config.get("dataset_options") or {}), **_given(overrides.get("dataset_options", {}))},
        "every": overrides.get("every") or config.get("every"),
        "eyes": overrides.get("eyes") or config.get("eyes"),
    }
    for key in ("dataset", "root"):
        if not experiment[key]:
            raise CorrmarkError(f"no {key} given: pass it on the command line or in the config")
    return experiment


def protocol_of(experiment: dict) -> PCKProtocol:
    values = dict(experiment["protocol"])
    values["alphas"] = tuple(values["alphas"])
    return PCKProtocol(**values)


def _given(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}
