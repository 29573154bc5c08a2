"""Weights-only export of a training checkpoint, for sharing and for the model zoo (``zoo/``).

A training checkpoint carries what resuming needs (optimizer moments, scheduler, RNG states: about two thirds of an
SFNet ``final.pt``). The export keeps what *using* the model needs, in the same checkpoint format, so every loader
(``load_matcher("sfnet" | "scorrsan" | "jlad", checkpoint=...)``, ``load_landmark_model("jlad", ...)``) reads it
unchanged, with ``torch.load(weights_only=True)``::

    {"format": "corrmark-checkpoint", "version": 1, "model": state_dict, "config": dict, "metrics": dict,
     "step": int, "epoch": int, "export": {"source": str, "weights_only": True, "dropped": [names]}}

Resuming training from an export fails with a clear CheckpointError (it holds no optimizer state).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoint import FORMAT, VERSION, read_checkpoint, save_checkpoint

# Entries a loader may read besides "model": the experiment config (method, model settings, SCorrSAN's model_info),
# the metrics (SCorrSAN MT's selected_head), the training position, and SFNet's legacy "sfnet_config".
KEPT_ENTRIES = ("config", "metrics", "step", "epoch", "sfnet_config")


def weights_only_payload(payload: dict, source: str) -> dict:
    """The exported dict of a checkpoint dict (see the module docstring)."""
    if payload.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"{source} is a {payload.get('format')!r} file, not a {FORMAT}")
    exported = {"format": FORMAT, "version": VERSION, "model": _compact_state(payload["model"], source)}
    exported.update({key: payload[key] for key in KEPT_ENTRIES if payload.get(key) is not None})
    exported.setdefault("config", {})
    exported.setdefault("metrics", {})
    dropped = sorted(set(payload) - set(exported) - {"format", "version"})  # optimizer, scheduler, rng, ...
    exported["export"] = {"source": source, "weights_only": True, "dropped": dropped}
    return exported


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the weights-only export of ``checkpoint`` to ``out`` (atomically) and read it back as a check."""
    payload = read_checkpoint(checkpoint)
    written = save_checkpoint(out, weights_only_payload(payload, str(checkpoint)))
    reread = read_checkpoint(written)  # weights_only=True: what every user of the file will do
    if set(reread["model"]) != set(payload["model"]):
        raise CheckpointError(f"export {written} does not hold the same model entries as {checkpoint}")
    return written


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _compact_state(state: dict, source: str) -> dict:
    """CPU tensors with their own storage: a view into a larger buffer would otherwise save the whole buffer."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source} holds no model weights")
    compact = OrderedDict((key, value.detach().to("cpu").clone() if isinstance(value, torch.Tensor) else value)
                          for key, value in state.items())
    if hasattr(state, "_metadata"):  # module versions, read by e.g. BatchNorm's state-dict loading
        compact._metadata = state._metadata
    return compact
